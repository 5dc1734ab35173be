"""Recipes that change the torch module itself (pruning, distillation): transform once, export from that.

A :class:`TorchVariantRecipe` builds its variant as a pickled torch module (the expensive part:
pruning, training) and derives the ONNX file and OpenVINO IR from that cached module, so a
variant is trained once per config whatever backends run it. Each artifact's provenance carries
the module's facts (:func:`module_facts`): parameters, FLOPs, sparsity, Conv/Linear shapes.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import library_version, samples_hash
from costbench.harness.build.compress.fp32 import FILENAMES
from costbench.harness.build.zoo.base import SOURCE_TORCH, ModelBundle

# Keys of the torch artifact's provenance that the ONNX/IR artifacts derived from it do not inherit.
_OWN_KEYS = {"serialization"}


def weight_layers(module) -> list[tuple[str, Any]]:
    """(name, layer) for every Conv/Linear layer, in module order: the layers pruning acts on."""
    from torch import nn

    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def sparsity(module) -> dict[str, Any]:
    """Exact zeros among the Conv/Linear weights and among all parameters."""
    weights = [m.weight.detach() for _, m in weight_layers(module)]
    w_total = sum(int(w.numel()) for w in weights)
    w_zero = sum(int((w == 0).sum()) for w in weights)
    params = list(module.parameters())
    p_total = sum(int(p.numel()) for p in params)
    p_zero = sum(int((p.detach() == 0).sum()) for p in params)
    return {
        "weight_sparsity": w_zero / w_total if w_total else 0.0,
        "parameter_sparsity": p_zero / p_total if p_total else 0.0,
        "nonzero_parameters": p_total - p_zero,
    }


def layer_shapes(module) -> dict[str, list[int]]:
    """Weight shape of every Conv/Linear layer, by name."""
    return {n: list(m.weight.shape) for n, m in weight_layers(module)}


def module_facts(module, bundle: ModelBundle) -> dict[str, Any]:
    """Parameters, FLOPs (one sample, same counting as the zoo's) and sparsity of a transformed module."""
    from costbench.harness.build.zoo.flops import torch_flops

    counts = torch_flops(module, bundle.evaluation.batch(1), bundle.inputs)
    return {"parameters": counts["parameters"], "flops": counts["flops"], "flops_method": counts["flops_method"],
            **sparsity(module)}


class TorchVariantRecipe(Recipe):
    """A recipe whose work is a new torch module; ONNX and OpenVINO IR are exported from it."""

    _FORMATS = (FORMAT_TORCH, FORMAT_ONNX, FORMAT_OPENVINO)

    @abc.abstractmethod
    def transform(self, bundle: ModelBundle, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """The new eval-mode torch module and the provenance of how it was made."""

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Torch models only (it needs the module); every format the fp32 recipe emits."""
        return self._FORMATS if source_kind == SOURCE_TORCH else ()

    def filename(self, fmt: str) -> str:
        """model.pt, model.onnx or model.xml."""
        return FILENAMES[fmt]

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds torch's version and the data that training sees (training split and calibration samples)."""
        return {
            **super().cache_material(bundle, config),
            "torch": library_version("torch"),
            "onnx": library_version("onnx"),
            "openvino": library_version("openvino"),
            "training_data": None if bundle.training is None else samples_hash(bundle.training),
            "calibration_data": samples_hash(bundle.calibration),
            **self.extra_material(bundle, config),
        }

    def extra_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """More cache-key material (library versions a subclass depends on)."""
        return {}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Torch: transform and pickle. ONNX: export the cached torch variant. IR: convert the cached ONNX."""
        import torch

        path = out_dir / self.filename(fmt)
        if fmt == FORMAT_TORCH:
            module, provenance = self.transform(bundle, config)
            module.eval()
            torch.save(module, path)
            return {**provenance, **module_facts(module, bundle), "layer_shapes": layer_shapes(module),
                    "serialization": "torch.save(module); load with torch.load(weights_only=False)",
                    "torch": torch.__version__}
        base = self.artifact(bundle, config, FORMAT_TORCH, cache)
        inherited = {k: v for k, v in base.provenance.items() if k not in _OWN_KEYS}
        if fmt == FORMAT_ONNX:
            from costbench.harness.build.compress.onnx_export import export_onnx

            module = torch.load(base.path, weights_only=False, map_location="cpu").eval()
            export = export_onnx(module, bundle.inputs, bundle.outputs, bundle.calibration, path)
            return {**inherited, **export, "torch_artifact": base.key}
        import openvino as ov

        onnx_artifact = self.artifact(bundle, config, FORMAT_ONNX, cache)
        ov.save_model(ov.convert_model(str(onnx_artifact.path)), str(path), compress_to_fp16=False)
        return {**inherited, "converter": "openvino.convert_model from this variant's ONNX artifact",
                "openvino": ov.__version__, "onnx_artifact": onnx_artifact.key}


def evaluation_summary(module, teacher, bundle: ModelBundle) -> dict[str, Any]:
    """How the transformed module scores on the evaluation split at build time, and the fp32 model's score."""
    from costbench.harness.build.training import predict, task_score

    reference = predict(teacher, bundle, bundle.evaluation)
    got = predict(module, bundle, bundle.evaluation)
    mine = task_score(got, reference, bundle, bundle.evaluation)
    fp32 = task_score(reference, reference, bundle, bundle.evaluation)
    retained = mine["value"] / fp32["value"] if fp32["value"] else float("nan")
    return {"build_time_evaluation": {"data": bundle.evaluation.description, "samples": len(bundle.evaluation),
                                      "metric": mine["metric"], "value": mine["value"], "fp32_value": fp32["value"],
                                      "accuracy_retained": retained, "engine": "torch eager"}}
