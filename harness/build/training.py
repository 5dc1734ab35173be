"""Training the zoo and the recipes share: Hinton distillation, the fine-tune after pruning, threads for small models.

The distillation loss is docs/architecture.md's, exactly:
``L = alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(y, z_s)``, with the
teacher in eval mode under ``no_grad`` and the KL averaged over the batch (``reduction="batchmean"``).

Which data and loss a fine-tune uses depends on what the model comes with
(:func:`fine_tune_objective`): labelled training data -> cross-entropy on the labels; a classifier
without its training set -> distillation from the unpruned fp32 model on the calibration samples;
an embedding (or any other) model -> cosine distance to the fp32 model's outputs. Every choice is
returned as provenance.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from costbench.harness.build.zoo.base import ModelBundle, SampleSet


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """Hinton knowledge distillation: alpha * T^2 * KL(p_teacher || p_student) at temperature T, plus (1 - alpha) * CE."""
    import torch.nn.functional as F

    soft_teacher = F.softmax(teacher_logits / temperature, dim=1)
    log_soft_student = F.log_softmax(student_logits / temperature, dim=1)
    # kl_div(input=log q, target=p) = sum p * (log p - log q) = KL(p || q): teacher distribution first.
    kl = F.kl_div(log_soft_student, soft_teacher, reduction="batchmean")
    if alpha == 1.0:  # soft targets only: the CE term has weight 0, and data without labels can use it
        return temperature ** 2 * kl
    ce = F.cross_entropy(student_logits, labels)
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * ce


def cosine_distance_loss(student_out, teacher_out, labels=None):
    """Mean (1 - cosine similarity) between student and teacher outputs, per sample."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(student_out.flatten(1), teacher_out.flatten(1), dim=1)).mean()


@dataclass
class Objective:
    """What a fine-tune trains on and against: data, loss, whether it needs the teacher, and a description."""

    data: SampleSet
    loss: Callable[..., Any]  # loss(student_out, teacher_out or None, labels or None)
    needs_teacher: bool
    description: dict[str, Any]


def fine_tune_objective(bundle: ModelBundle, temperature: float = 2.0) -> Objective:
    """The data and loss for fine-tuning a compressed copy of ``bundle``'s model (see the module docstring)."""
    import torch.nn.functional as F

    if bundle.task == "classification" and bundle.training is not None and bundle.training.labels is not None:
        return Objective(
            bundle.training, lambda s, t, y: F.cross_entropy(s, y), False,
            {"loss": "cross-entropy on labels", "data": bundle.training.description,
             "samples": len(bundle.training), "teacher": None},
        )
    if bundle.task == "classification":
        return Objective(
            bundle.calibration, lambda s, t, y: distillation_loss(s, t, None, temperature, 1.0), True,
            {"loss": f"Hinton distillation from the fp32 model (alpha=1: soft targets only, T={temperature:g}); "
                     "the model ships without its training set",
             "data": bundle.calibration.description, "samples": len(bundle.calibration),
             "teacher": f"{bundle.name} fp32"},
        )
    return Objective(
        bundle.calibration, cosine_distance_loss, True,
        {"loss": "1 - cosine similarity to the fp32 model's outputs (feature distillation)",
         "data": bundle.calibration.description, "samples": len(bundle.calibration),
         "teacher": f"{bundle.name} fp32"},
    )


def _tensors(data: SampleSet, bundle: ModelBundle, idx=None) -> list:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(data.inputs[i.name] if idx is None else data.inputs[i.name][idx]))
            for i in bundle.inputs]


def _freeze_batchnorm(module) -> None:
    """Keep BatchNorm running statistics fixed: a few hundred samples would only make them worse."""
    from torch import nn

    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


SMALL_MODEL_PARAMETERS = 2_000_000  # below this, intra-op threads cost more than they save


@contextlib.contextmanager
def threads_for(*modules) -> Iterator[int]:
    """Run small models single-threaded: their tensors are too small to split, and on a busy machine a second
    thread that is not scheduled stalls every op. Single-threaded training is also bitwise reproducible on any
    number of cores. Larger models keep torch's setting."""
    import torch

    before = torch.get_num_threads()
    small = sum(p.numel() for m in modules if m is not None for p in m.parameters()) < SMALL_MODEL_PARAMETERS
    if small:
        torch.set_num_threads(1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def train(student, bundle: ModelBundle, objective: Objective, *, epochs: int, lr: float, batch_size: int,
          seed: int, teacher=None) -> dict[str, Any]:
    """Train ``student`` in place on ``objective``; see :func:`_train`. Small models train on one thread."""
    with threads_for(student, teacher) as threads:
        return {**_train(student, bundle, objective, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                         teacher=teacher), "threads": threads}


def _train(student, bundle: ModelBundle, objective: Objective, *, epochs: int, lr: float, batch_size: int,
           seed: int, teacher=None) -> dict[str, Any]:
    """Train ``student`` in place on ``objective`` (Adam, seeded shuffling); returns what was done.

    The teacher, when the objective needs one, runs in eval mode under ``no_grad``; its outputs are
    computed once per batch and never receive gradients.
    """
    import torch

    if objective.needs_teacher and teacher is None:
        raise ValueError("this objective distils from a teacher; pass teacher=")
    loss_fn = objective.loss
    data = objective.data
    labels = None if data.labels is None else torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    if teacher is not None:
        teacher.eval()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    losses = []
    for _ in range(epochs):
        student.train()
        _freeze_batchnorm(student)
        total, count = 0.0, 0
        for idx in torch.randperm(len(data), generator=generator).split(batch_size):
            args = _tensors(data, bundle, idx.numpy())
            target = None
            if objective.needs_teacher:
                with torch.no_grad():
                    target = teacher(*args)
            y = None if labels is None else labels[idx]
            optimizer.zero_grad()
            loss = loss_fn(student(*args), target, y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
    student.eval()
    return {"epochs": epochs, "optimizer": "Adam", "lr": lr, "batch_size": batch_size, "seed": seed,
            "loss_per_epoch": [round(x, 6) for x in losses]}


def predict(module, bundle: ModelBundle, data: SampleSet, batch_size: int = 64) -> np.ndarray:
    """Outputs of ``module`` on every sample of ``data`` (eval mode, no grad), as float64 numpy."""
    import torch

    module.eval()
    parts = []
    with torch.no_grad(), threads_for(module):
        for batch, real in data.batches(batch_size):
            out = module(*(torch.from_numpy(batch[i.name]) for i in bundle.inputs))
            parts.append(out.double().numpy()[:real])
    return np.concatenate(parts)


def task_score(outputs: np.ndarray, reference: np.ndarray, bundle: ModelBundle, data: SampleSet) -> dict[str, Any]:
    """One number that says how good ``outputs`` are, with its name: labelled task accuracy when the data has
    labels, else agreement with the fp32 ``reference`` (top-1 for classifiers, mean cosine otherwise)."""
    from costbench.harness.build.accuracy import compare

    metrics = {m.name: m.value for m in compare(outputs, reference, data.labels, bundle.task)}
    for name in ("task_accuracy", "top1_agreement", "cosine_similarity_mean"):
        if name in metrics:
            return {"metric": name, "value": metrics[name]}
    raise ValueError(f"no accuracy metric for task {bundle.task!r}")
