"""Parity of a variant with the fp32 reference on the same inputs, and task accuracy against labels where they exist.

Every row says which it is (``details["kind"]``: "parity" or "task_accuracy") and its description starts
with the same word; parity is never an accuracy drop (DESIGN.md, "Accuracy and parity")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costbench.harness.results.accuracy_budget import paired_difference_interval, wilson_interval
from costbench.harness.build.zoo.base import SampleSet


@dataclass(frozen=True)
class AccuracyMetric:
    """One accuracy row: task accuracy (needs labels) or parity with fp32 (``details["kind"]`` says which)."""

    name: str
    value: float
    unit: str
    description: str
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


# fp32 is "confident" on a sample when its top-1 softmax probability is at least this.
CONFIDENCE_THRESHOLD = 0.5
TOP_K = 5


def _parity(name: str, value: float, unit: str, description: str, **kw: Any) -> AccuracyMetric:
    details = kw.pop("details", {})
    return AccuracyMetric(name, value, unit, f"parity: {description}", details={"kind": "parity", **details}, **kw)


def _task(name: str, value: float, unit: str, description: str, **kw: Any) -> AccuracyMetric:
    details = kw.pop("details", {})
    return AccuracyMetric(name, value, unit, f"task accuracy: {description}",
                          details={"kind": "task_accuracy", **details}, **kw)


def _proportion(name: str, hits: np.ndarray, description: str, make=None, **details: Any) -> AccuracyMetric:
    """A fraction of samples with its Wilson 95% interval and the sample count."""
    k, n = int(np.sum(hits)), int(len(hits))
    lo, hi = wilson_interval(k, n)
    return (make or _parity)(name, k / n, "ratio", description, ci_low=lo, ci_high=hi,
                             details={"samples": n, "hits": k, "interval": "Wilson 95%", **details})


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None, task: str) -> list[AccuracyMetric]:
    """Parity with the fp32 reference and, where labelled, task accuracy; each row says which it is.

    Parity (every task): cosine similarity, max abs error. ``task`` "classification" adds top-1
    agreement, agreement on the samples where fp32 is confident, top-5 retention and the mean KL
    divergence of the output distributions (:func:`classification_parity`); "embedding" adds
    nearest-neighbour agreement (:func:`embedding_metrics`). With labels: task accuracy with its
    Wilson interval and the paired difference to fp32's (:func:`task_accuracy_metrics`).
    """
    if outputs.shape != reference.shape:
        raise ValueError(f"output shape {outputs.shape} differs from the fp32 reference {reference.shape}")
    n = len(outputs)
    a = outputs.reshape(n, -1)
    r = reference.reshape(n, -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(denom > 0, np.sum(a * r, axis=1) / np.where(denom > 0, denom, 1), 1.0)
    metrics = [
        _parity("cosine_similarity_mean", float(cos.mean()), "ratio", "mean cosine similarity to fp32 outputs"),
        _parity("cosine_similarity_min", float(cos.min()), "ratio", "worst-sample cosine similarity to fp32"),
        _parity("max_abs_error", float(np.abs(a - r).max()), "abs", "largest absolute difference to fp32"),
    ]
    if task == "classification":
        metrics += classification_parity(a, r)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            metrics += task_accuracy_metrics(a.argmax(axis=1) == labels, r.argmax(axis=1) == labels,
                                             "top-1 accuracy on the labelled evaluation split")
    elif task == "embedding":
        metrics += embedding_metrics(a, r, labels)
    elif task == "causal_lm":  # the outputs are next-token logits: agreement on the next token, KL of the distributions
        metrics += classification_parity(a, r)
    return metrics


def greedy_prefix_agreement(generated: np.ndarray, reference: np.ndarray) -> AccuracyMetric:
    """How much of fp32's greedy continuation a variant reproduces before its first different token, averaged
    over prompts (1.0: every continuation identical). Once one token differs the texts diverge, so later
    positions say nothing more; with random weights this is parity, never quality."""
    if generated.shape != reference.shape:
        raise ValueError(f"generated tokens {generated.shape} differ in shape from fp32's {reference.shape}")
    same = generated == reference
    prefix = np.where(same.all(axis=1), same.shape[1], np.argmin(same, axis=1))
    share = prefix / same.shape[1]
    return _parity("greedy_prefix_agreement", float(share.mean()), "ratio",
                   f"share of fp32's greedy continuation ({same.shape[1]} tokens) reproduced before the first "
                   "different token, mean over prompts",
                   details={"prompts": int(len(share)), "identical": int(same.all(axis=1).sum()),
                            "prefix_tokens": prefix.tolist()})


def _is_distribution(x: np.ndarray) -> bool:
    """Rows that are already probabilities (non-negative, summing to 1), so no softmax belongs on them."""
    return bool(np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_parity(outputs: np.ndarray, reference: np.ndarray,
                          threshold: float = CONFIDENCE_THRESHOLD) -> list[AccuracyMetric]:
    """Parity of a classifier's outputs (logits, or probabilities) with fp32's, in ways noise does not dominate.

    - ``top1_agreement``: top-1 agreement with fp32 on every sample; a flip where fp32 itself is unsure
      says little, so this is only a loose upper bound on an accuracy drop;
    - ``top1_agreement_confident``: the same on the samples where fp32's top-1 probability is at least
      ``threshold`` (the threshold and the count are in the details; no row when no sample qualifies);
    - ``top5_retention``: fraction of samples whose fp32 top-1 class is in the variant's top 5;
    - ``kl_divergence_mean``: mean KL(p_fp32 ‖ p_variant) in nats, on softmax of the logits.
    """
    n, classes = outputs.shape
    logits = not _is_distribution(reference)
    p_ref = _softmax(reference) if logits else np.clip(reference, 0.0, None)
    p_var = _softmax(outputs) if logits else np.clip(outputs, 0.0, None)
    how = "softmax of the logits" if logits else "the outputs (already probabilities)"
    ref_top1, var_top1 = reference.argmax(axis=1), outputs.argmax(axis=1)
    agree = var_top1 == ref_top1
    confidence = p_ref[np.arange(n), ref_top1]
    confident = confidence >= threshold
    metrics = [_proportion("top1_agreement", agree,
                           "top-1 agreement with fp32 on every sample (not an accuracy drop: flips where fp32 "
                           "is unsure count too)")]
    if confident.any():
        metrics.append(_proportion(
            "top1_agreement_confident", agree[confident],
            f"top-1 agreement with fp32 on the samples where fp32's top-1 probability is ≥ {threshold:g}",
            threshold=threshold, total_samples=int(n), probabilities=how))
    if classes > TOP_K:  # with five classes or fewer every top-1 class is in the top 5
        top_k = np.argpartition(-outputs, TOP_K - 1, axis=1)[:, :TOP_K]
        metrics.append(_proportion(f"top{TOP_K}_retention", np.any(top_k == ref_top1[:, None], axis=1),
                                   f"fraction of samples whose fp32 top-1 class is in the variant's top {TOP_K}"))
    eps = 1e-12
    kl = np.sum(p_ref * (np.log(np.maximum(p_ref, eps)) - np.log(np.maximum(p_var, eps))), axis=1)
    kl = np.maximum(kl, 0.0)
    metrics.append(_parity("kl_divergence_mean", float(kl.mean()), "nats",
                           f"mean KL(p_fp32 ‖ p_variant) over the samples, on {how}",
                           details={"samples": int(n), "max": float(kl.max()), "probabilities": how}))
    return metrics


def task_accuracy_metrics(correct: np.ndarray, ref_correct: np.ndarray, what: str) -> list[AccuracyMetric]:
    """Task accuracy with its Wilson 95% interval, and the paired difference to fp32's on the same samples.

    The difference's interval is Newcombe's for paired proportions (method 10): the samples both get
    right or both get wrong do not move it, the discordant ones do; their counts are in the details.
    """
    correct, ref_correct = np.asarray(correct, bool), np.asarray(ref_correct, bool)
    n = int(len(correct))
    acc, ref_acc = float(correct.mean()), float(ref_correct.mean())
    both = int(np.sum(correct & ref_correct))
    only_variant = int(np.sum(correct & ~ref_correct))
    only_fp32 = int(np.sum(~correct & ref_correct))
    neither = n - both - only_variant - only_fp32
    lo, hi = wilson_interval(int(correct.sum()), n)
    dlo, dhi = paired_difference_interval(both, only_variant, only_fp32, neither)
    return [
        _task("task_accuracy", acc, "ratio", what, ci_low=lo, ci_high=hi,
              details={"samples": n, "correct": int(correct.sum()), "interval": "Wilson 95%"}),
        _task("task_accuracy_delta", (only_variant - only_fp32) / n + 0.0, "ratio",
              "task accuracy minus fp32's on the same samples", ci_low=dlo, ci_high=dhi,
              details={"samples": n, "fp32_accuracy": ref_acc, "only_variant_correct": only_variant,
                       "only_fp32_correct": only_fp32, "interval": "Newcombe paired 95% (method 10)"}),
        _retained(acc, ref_acc),
    ]


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
        _proportion("top1_agreement", got[:, 0] == ref[:, 0],
                    "fraction of samples whose nearest neighbour (cosine, among the evaluation samples) matches fp32's"),
        _parity(f"neighbour_top{k}_overlap", float(overlap), "ratio",
                f"mean overlap of each sample's {k} nearest neighbours with fp32's"),
    ]
    if labels is not None:
        labels = np.asarray(labels)
        metrics += task_accuracy_metrics(labels[got[:, 0]] == labels, labels[ref[:, 0]] == labels,
                                         "retrieval accuracy: the nearest other sample has the same label")
    return metrics


def _retained(acc: float, ref_acc: float) -> AccuracyMetric:
    return _task("accuracy_retained", acc / ref_acc if ref_acc else float("nan"), "ratio",
                 "task accuracy as a fraction of fp32's")
