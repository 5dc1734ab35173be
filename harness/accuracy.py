"""Accuracy of a variant against the fp32 reference on the same inputs, and against labels where they exist."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costbench.backends.base import Session
from costbench.harness.zoo.base import SampleSet


@dataclass(frozen=True)
class AccuracyMetric:
    name: str
    value: float
    unit: str
    description: str


def collect_outputs(session: Session, data: SampleSet, batch_size: int) -> np.ndarray:
    """The first output of the model for every sample of ``data``, run at ``batch_size``."""
    parts = []
    for batch, real in data.batches(batch_size):
        out = session.run(batch)[0]
        session.synchronize()
        parts.append(np.asarray(out, dtype=np.float64)[:real])
    return np.concatenate(parts, axis=0)


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None, task: str) -> list[AccuracyMetric]:
    """Parity with the reference (cosine, max abs error, top-1 agreement) and task accuracy if labelled."""
    if outputs.shape != reference.shape:
        raise ValueError(f"output shape {outputs.shape} differs from the fp32 reference {reference.shape}")
    n = len(outputs)
    a = outputs.reshape(n, -1)
    r = reference.reshape(n, -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(denom > 0, np.sum(a * r, axis=1) / np.where(denom > 0, denom, 1), 1.0)
    metrics = [
        AccuracyMetric("cosine_similarity_mean", float(cos.mean()), "ratio", "mean cosine similarity to fp32 outputs"),
        AccuracyMetric("cosine_similarity_min", float(cos.min()), "ratio", "worst-sample cosine similarity to fp32"),
        AccuracyMetric("max_abs_error", float(np.abs(a - r).max()), "abs", "largest absolute difference to fp32"),
    ]
    if task == "classification":
        agree = float(np.mean(a.argmax(axis=1) == r.argmax(axis=1)))
        metrics.append(AccuracyMetric("top1_agreement", agree, "ratio", "fraction of samples whose top-1 class matches fp32"))
        if labels is not None:
            acc = float(np.mean(a.argmax(axis=1) == labels))
            ref_acc = float(np.mean(r.argmax(axis=1) == labels))
            metrics += [
                AccuracyMetric("task_accuracy", acc, "ratio", "top-1 accuracy on the labelled evaluation split"),
                AccuracyMetric("task_accuracy_delta", acc - ref_acc, "ratio", "task accuracy minus fp32's"),
            ]
    return metrics
