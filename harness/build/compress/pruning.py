"""Pruning recipes, each followed by a short fine-tune (:mod:`costbench.harness.build.training`).

``prune-unstructured``: global magnitude pruning (``torch.nn.utils.prune.global_unstructured``
with L1 magnitude) over every Conv/Linear weight, fine-tuned with the masks in place, then made
permanent (``prune.remove``). The tensors keep their dense shapes, so dense kernels do the same
work: sparsity, size and latency are reported as separate facts, and no speed-up is claimed.

``prune-structured``: channel pruning with torch-pruning (L2 magnitude importance over coupled
groups), which physically removes output channels and the inputs that consume them, so the
network really gets smaller and cheaper. Which channels are candidates:

- transformer encoders (layers named ``*.intermediate.dense``, as in BERT/MiniLM): only the
  feed-forward hidden neurons. The hidden size runs through every residual connection and is the
  embedding the model returns, and attention heads are left whole.
- any other network: every Conv/Linear except the output layer, so the outputs keep their meaning.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import Field

from costbench.harness.build.compress.base import RecipeConfig
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.compress.torch_variant import (TorchVariantRecipe, evaluation_summary, layer_shapes,
                                                      module_facts, weight_layers)
from costbench.harness.build.training import fine_tune_objective, train
from costbench.harness.build.zoo.base import ModelBundle

LR_OWN_DATA = 1e-3  # a model costbench trained itself, fine-tuned on its own labelled training data
LR_PRETRAINED = 1e-5  # a pre-trained network, fine-tuned by distillation on a few hundred samples
NO_SPEEDUP_NOTE = ("unstructured sparsity: tensors keep their dense shapes, so dense kernels do the same work; "
                   "expect the same latency and, uncompressed, the same file size as fp32")


class FineTuneConfig(RecipeConfig):
    """The short fine-tune that follows pruning."""

    finetune_epochs: int = Field(2, ge=0, description="Epochs of fine-tuning after pruning (0: none).")
    lr: float | None = Field(None, gt=0, description=f"Adam learning rate; None: {LR_OWN_DATA:g} for a model with its "
                             f"own labelled training data, {LR_PRETRAINED:g} for a pre-trained one.")
    batch_size: int = Field(32, ge=1, description="Fine-tuning batch size.")
    seed: int = Field(0, description="Seed for shuffling and any randomness in training.")


class UnstructuredPruneConfig(FineTuneConfig):
    """Global magnitude pruning."""

    amount: float = Field(0.5, gt=0, lt=1, description="Fraction of all Conv/Linear weights set to zero, "
                          "chosen globally by magnitude.")


class StructuredPruneConfig(FineTuneConfig):
    """Channel pruning with torch-pruning."""

    ratio: float = Field(0.3, gt=0, lt=1, description="Fraction of channels removed from each candidate layer.")
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this (e.g. 8 for SIMD "
                                 "widths); None: exactly the ratio.")


def _learning_rate(bundle: ModelBundle, config: FineTuneConfig) -> float:
    if config.lr is not None:
        return config.lr
    own_labels = bundle.training is not None and bundle.training.labels is not None
    return LR_OWN_DATA if own_labels else LR_PRETRAINED


def _fine_tune(module, teacher, bundle: ModelBundle, config: FineTuneConfig) -> dict[str, Any]:
    if config.finetune_epochs == 0:
        return {"fine_tune": None}
    objective = fine_tune_objective(bundle)
    done = train(module, bundle, objective, epochs=config.finetune_epochs, lr=_learning_rate(bundle, config),
                 batch_size=config.batch_size, seed=config.seed, teacher=teacher if objective.needs_teacher else None)
    return {"fine_tune": {**objective.description, **done}, "teacher": objective.description.get("teacher")}


def execution_order(module, bundle: ModelBundle) -> list[str]:
    """Names of the Conv/Linear layers in the order one forward pass runs them."""
    import torch

    order: list[str] = []
    handles = [m.register_forward_hook(lambda *_a, n=n: order.append(n)) for n, m in weight_layers(module)]
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(bundle.evaluation.batch(1)[i.name]) for i in bundle.inputs))
    finally:
        for h in handles:
            h.remove()
    return order


class UnstructuredPruneRecipe(TorchVariantRecipe):
    """Global L1-magnitude unstructured pruning, fine-tuned, made permanent."""

    name = "prune-unstructured"
    version = 1
    precision = "fp32"
    Config = UnstructuredPruneConfig
    description = "global magnitude (unstructured) pruning of Conv/Linear weights + short fine-tune; dense shapes"

    def transform(self, bundle: ModelBundle, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """Prune a copy of the model globally, fine-tune it with the masks applied, then remove the masks."""
        import torch
        from torch.nn.utils import prune

        cfg: UnstructuredPruneConfig = self.own_config(config)
        teacher = bundle.torch_module().eval()
        module = copy.deepcopy(teacher)
        layers = weight_layers(module)
        torch.manual_seed(cfg.seed)
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  amount=cfg.amount)
        # The masks stay in the forward pass while fine-tuning, so pruned weights stay zero and get no updates.
        tuned = _fine_tune(module, teacher, bundle, cfg)
        for _, m in layers:
            prune.remove(m, "weight")
        return module, {
            "method": "global unstructured magnitude pruning (torch.nn.utils.prune.global_unstructured, L1)",
            "bits": 32,
            "amount": cfg.amount,
            "pruned_layers": len(layers),
            "note": NO_SPEEDUP_NOTE,
            "fp32_parameters": bundle.details.get("parameters"),
            "fp32_flops": bundle.details.get("flops"),
            **tuned,
            **evaluation_summary(module, teacher, bundle),
        }


class StructuredPruneRecipe(TorchVariantRecipe):
    """Channel pruning with torch-pruning that removes channels, then a short fine-tune."""

    name = "prune-structured"
    version = 1
    precision = "fp32"
    Config = StructuredPruneConfig
    description = "structured channel pruning (torch-pruning, L2 magnitude) + short fine-tune; channels removed"

    def extra_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """torch-pruning's version decides which channels go."""
        return {"torch_pruning": library_version("torch-pruning")}

    def transform(self, bundle: ModelBundle, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """Remove the lowest-magnitude channel groups from a copy of the model, then fine-tune it."""
        import torch
        import torch_pruning as tp

        cfg: StructuredPruneConfig = self.own_config(config)
        teacher = bundle.torch_module().eval()
        module = copy.deepcopy(teacher)
        before = layer_shapes(module)
        candidates, scope = self._candidates(module, bundle)
        ignored = [m for n, m in weight_layers(module) if n not in candidates]
        example = tuple(torch.from_numpy(bundle.calibration.batch(2)[i.name]) for i in bundle.inputs)
        pruner = tp.pruner.MetaPruner(module, example_inputs=example,
                                      importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=cfg.ratio, ignored_layers=ignored, round_to=cfg.round_to)
        pruner.step()
        after = layer_shapes(module)
        changed = {n: {"before": before[n], "after": after[n]} for n in before if before[n] != after[n]}
        tuned = _fine_tune(module, teacher, bundle, cfg)
        facts = module_facts(module, bundle)
        fp32_params, fp32_flops = bundle.details.get("parameters"), bundle.details.get("flops")
        return module, {
            "method": "structured channel pruning (torch-pruning MetaPruner, GroupMagnitudeImportance p=2)",
            "bits": 32,
            "ratio": cfg.ratio,
            "round_to": cfg.round_to,
            "scope": scope,
            "changed_layers": changed,
            "fp32_parameters": fp32_params,
            "fp32_flops": fp32_flops,
            "parameters_removed": None if fp32_params is None else fp32_params - facts["parameters"],
            "flops_ratio": None if not fp32_flops else facts["flops"] / fp32_flops,
            "torch_pruning": library_version("torch-pruning"),
            **tuned,
            **evaluation_summary(module, teacher, bundle),
        }

    @staticmethod
    def _candidates(module, bundle: ModelBundle) -> tuple[set[str], str]:
        names = [n for n, _ in weight_layers(module)]
        ffn = {n for n in names if n.endswith("intermediate.dense")}
        if ffn:
            return ffn, ("transformer feed-forward hidden neurons only (intermediate.dense outputs and the "
                         "matching output.dense inputs); hidden size and attention heads kept")
        output_layer = execution_order(module, bundle)[-1]
        return set(names) - {output_layer}, f"every Conv/Linear layer except the output layer {output_layer!r}"
