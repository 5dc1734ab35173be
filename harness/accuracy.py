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
    """Parity with the reference (cosine, max abs error, top-1 agreement) and task accuracy if labelled.

    ``task`` "classification": top-1 class agreement; "embedding": nearest-neighbour agreement and,
    with group labels, retrieval accuracy (:func:`embedding_metrics`).
    """
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
                _retained(acc, ref_acc),
            ]
    elif task == "embedding":
        metrics += embedding_metrics(a, r, labels)
    return metrics


NEIGHBOURS_K = 5


def _neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Indices of each sample's k most cosine-similar other samples, most similar first (ties: lower index)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)  # a sample is not its own neighbour
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def embedding_metrics(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> list[AccuracyMetric]:
    """Nearest-neighbour ranking agreement with fp32 among the evaluation samples, and, when samples are
    labelled with groups (paraphrase pairs), retrieval accuracy: is a sample's nearest neighbour in its group?"""
    n = len(outputs)
    if n < 2:
        return []
    k = min(NEIGHBOURS_K, n - 1)
    got, ref = _neighbours(outputs, k), _neighbours(reference, k)
    overlap = np.mean([len(set(g) & set(r)) / k for g, r in zip(got, ref)])
    metrics = [
        AccuracyMetric("top1_agreement", float(np.mean(got[:, 0] == ref[:, 0])), "ratio",
                       "fraction of samples whose nearest neighbour (cosine, among the evaluation samples) matches fp32's"),
        AccuracyMetric(f"neighbour_top{k}_overlap", float(overlap), "ratio",
                       f"mean overlap of each sample's {k} nearest neighbours with fp32's"),
    ]
    if labels is not None:
        acc = float(np.mean(labels[got[:, 0]] == labels))
        ref_acc = float(np.mean(labels[ref[:, 0]] == labels))
        metrics += [
            AccuracyMetric("task_accuracy", acc, "ratio", "retrieval accuracy: the nearest other sample has the same label"),
            AccuracyMetric("task_accuracy_delta", acc - ref_acc, "ratio", "task accuracy minus fp32's"),
            _retained(acc, ref_acc),
        ]
    return metrics


def _retained(acc: float, ref_acc: float) -> AccuracyMetric:
    return AccuracyMetric("accuracy_retained", acc / ref_acc if ref_acc else float("nan"), "ratio",
                          "task accuracy as a fraction of fp32's")
