"""``distill``: Hinton knowledge distillation of the model into the smaller student its zoo entry defines.

The student is trained on the model's labelled training data with docs/architecture.md's loss
(:func:`~costbench.harness.build.training.distillation_loss`), the fp32 model as teacher in eval
mode without gradients. The same student is also trained without distillation (alpha = 0: plain
cross-entropy) from the same initial weights, seed, data order and epochs, so the provenance
shows what distillation itself bought: both students' accuracy on the labelled evaluation split,
next to the teacher's. ``alpha = 0`` as the variant's own option builds that baseline student as
the variant, for a side-by-side row in a suite.

Only models that define a student and ship labelled training data can be distilled (the zoo's
``digits-cnn``); for others the build stops with an error saying so.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pydantic import Field

from costbench.harness.build.compress.base import RecipeConfig, RecipeNotApplicable
from costbench.harness.build.compress.torch_variant import TorchVariantRecipe, module_facts
from costbench.harness.build.training import Objective, distillation_loss, predict, train
from costbench.harness.build.zoo.base import ModelBundle

LOSS_FORMULA = "alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) [batchmean] + (1 - alpha) * CE(y, z_s)"


class DistillConfig(RecipeConfig):
    """Hinton distillation hyper-parameters."""

    temperature: float = Field(4.0, gt=0, description="Softmax temperature T for teacher and student.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation term; 0 trains the student "
                         "on labels alone (the no-distillation baseline).")
    epochs: int = Field(10, ge=1, description="Training epochs over the labelled training split.")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    seed: int = Field(0, description="Seed for the student's initial weights and the data order.")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


def train_student(bundle: ModelBundle, teacher, cfg: DistillConfig, alpha: float):
    """A fresh student (weights from ``cfg.seed``) trained with the Hinton loss at ``alpha``; returns (student, log)."""
    import torch

    torch.manual_seed(cfg.seed)
    student = bundle.student_factory()
    data = bundle.training
    objective = Objective(
        data,
        lambda s, t, y: distillation_loss(s, t, y, cfg.temperature, alpha),
        needs_teacher=alpha > 0,
        description={"loss": LOSS_FORMULA, "temperature": cfg.temperature, "alpha": alpha,
                     "data": data.description, "samples": len(data)},
    )
    if alpha == 0:
        # No teacher term: the loss is cross-entropy alone (the teacher's logits are never computed).
        objective.loss = lambda s, t, y: distillation_loss(s, s.detach(), y, cfg.temperature, 0.0)
    log = train(student, bundle, objective, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                seed=cfg.seed, teacher=teacher if alpha > 0 else None)
    return student, {**objective.description, **log}


class DistillRecipe(TorchVariantRecipe):
    """Knowledge distillation into the zoo's student architecture, compared against training without it."""

    name = "distill"
    version = 1
    precision = "fp32"
    Config = DistillConfig
    description = "Hinton distillation into a smaller student (with/without-distillation accuracies in provenance)"

    def transform(self, bundle: ModelBundle, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """Train the student with distillation (alpha) and without (alpha = 0); return the configured one."""
        cfg: DistillConfig = self.own_config(config)
        if bundle.student_factory is None or bundle.training is None or bundle.training.labels is None:
            raise RecipeNotApplicable(f"recipe 'distill' needs a student architecture and labelled training data; model "
                             f"{bundle.name!r} has {'no student' if bundle.student_factory is None else 'no labelled training data'}"
                             " (the zoo's digits-cnn has both)")
        if bundle.evaluation.labels is None:
            raise RecipeNotApplicable(f"recipe 'distill' reports accuracy on labelled evaluation data; {bundle.name!r} "
                                      "has none")
        teacher = bundle.torch_module().eval()
        labels = bundle.evaluation.labels
        teacher_acc = _accuracy(predict(teacher, bundle, bundle.evaluation), labels)
        with_kd, with_log = train_student(bundle, copy.deepcopy(teacher), cfg, cfg.alpha)
        acc_with = _accuracy(predict(with_kd, bundle, bundle.evaluation), labels)
        if cfg.alpha > 0:
            without_kd, without_log = train_student(bundle, None, cfg, 0.0)
            acc_without = _accuracy(predict(without_kd, bundle, bundle.evaluation), labels)
        else:
            without_log, acc_without = with_log, acc_with
        student_facts = module_facts(with_kd, bundle)
        return with_kd, {
            "method": "knowledge distillation (Hinton)" if cfg.alpha > 0 else "student trained on labels only (alpha=0)",
            "bits": 32,
            "teacher": {"model": bundle.name, "parameters": bundle.details.get("parameters"),
                        "flops": bundle.details.get("flops"), "accuracy": teacher_acc,
                        "mode": "eval, torch.no_grad"},
            "student": {"architecture": bundle.student_description, "parameters": student_facts["parameters"],
                        "flops": student_facts["flops"]},
            "training": with_log,
            "training_without_distillation": without_log,
            "evaluation": {"data": bundle.evaluation.description, "samples": len(bundle.evaluation)},
            "accuracy_with_distillation": acc_with if cfg.alpha > 0 else None,
            "accuracy_without_distillation": acc_without,
            "accuracy_retained": (acc_with if cfg.alpha > 0 else acc_without) / teacher_acc if teacher_acc else None,
            "same_seed_epochs_data": True,
        }
