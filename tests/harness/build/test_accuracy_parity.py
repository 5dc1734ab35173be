"""Parity and task accuracy on constructed cases whose right answer is known: confident-sample agreement,
top-5 retention, KL divergence, Wilson and paired intervals, and the budget verdicts (issue 13)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binomtest

from costbench.harness.build.accuracy import compare
from costbench.harness.results.accuracy_budget import (PARITY, TASK, Z95, judge, paired_difference_interval,
                                               wilson_interval)
from costbench.harness.measure.worker import accuracy_metrics
from costbench.harness.build.zoo.base import SampleSet


def flipped_on_unsure(rng, n_confident=60, n_unsure=60, classes=10):
    """fp32 logits: confident samples (top-1 p ≈ 0.99) and unsure ones (top two within 0.05, p < 0.3);
    the variant swaps the top two classes on every unsure sample and nowhere else."""
    # Noise clipped to ±0.2: an unsure row's two raised logits (≥ 0.35 and ≥ 0.3) then stay above every other, so
    # swapping them always flips its top-1 (unclipped, a third class won now and then: seed 2911327168).
    ref = np.clip(rng.normal(0.0, 0.1, (n_confident + n_unsure, classes)), -0.2, 0.2)
    top = rng.integers(0, classes, n_confident + n_unsure)
    second = (top + 1 + rng.integers(0, classes - 1, len(top))) % classes
    rows = np.arange(len(top))
    ref[rows[:n_confident], top[:n_confident]] += 8.0
    ref[rows[n_confident:], top[n_confident:]] += 0.55
    ref[rows[n_confident:], second[n_confident:]] += 0.5
    out = ref.copy()
    u = rows[n_confident:]
    out[u, top[u]], out[u, second[u]] = ref[u, second[u]], ref[u, top[u]]
    return ref, out, n_confident, n_unsure


def by_name(metrics):
    return {m.name: m for m in metrics}


def test_flips_only_where_fp32_is_unsure_leave_confident_agreement_whole(rng):
    ref, out, n_conf, n_unsure = flipped_on_unsure(rng)
    m = by_name(compare(out, ref, None, "classification"))
    assert m["top1_agreement"].value == pytest.approx(n_conf / (n_conf + n_unsure))  # half the samples flipped
    conf = m["top1_agreement_confident"]
    assert conf.value == 1.0 and conf.details["samples"] == n_conf and conf.details["threshold"] == 0.5
    assert conf.details["total_samples"] == n_conf + n_unsure
    assert conf.details["probabilities"] == "softmax of the logits"
    assert conf.ci_high == 1.0 and conf.ci_low == pytest.approx(wilson_interval(n_conf, n_conf)[0])
    assert m["top5_retention"].value == 1.0  # the fp32 class is second now, still in the top 5
    kl = m["kl_divergence_mean"]
    assert kl.unit == "nats" and 0 < kl.value < 0.01  # swapping two near-equal logits barely moves p
    for metric in m.values():  # every row says it is parity, none calls itself accuracy
        assert metric.details["kind"] == "parity" and metric.description.startswith("parity: ")
    assert "not an accuracy drop" in m["top1_agreement"].description

    # The budget judges the confident samples: within a 1-pt parity budget, though half the samples flipped.
    rows = {k: {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "details": v.details}
            for k, v in m.items()}
    j = judge(rows, max_drop=0.01, max_parity_loss=0.01)
    assert j.basis == PARITY and j.metric == "top1_agreement_confident" and j.loss == 0.0 and j.passes
    assert j.samples == n_conf and "where fp32 is confident (top-1 probability ≥ 0.5)" in j.describe()


def test_a_flip_on_a_confident_sample_counts():
    ref = np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.2, 0.1, 0.0]])
    out = np.array([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.1, 0.2, 0.0]])
    m = by_name(compare(out, ref, None, "classification"))
    assert m["top1_agreement"].value == pytest.approx(1 / 3)
    assert m["top1_agreement_confident"].value == 0.5 and m["top1_agreement_confident"].details["samples"] == 2
    assert "top5_retention" not in m  # three classes: every class is in the top 5


def test_probabilities_are_not_softmaxed_again():
    ref = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
    m = by_name(compare(ref.copy(), ref, None, "classification"))
    conf = m["top1_agreement_confident"]
    assert conf.details["samples"] == 1 and conf.details["probabilities"] == "the outputs (already probabilities)"
    assert m["kl_divergence_mean"].value == pytest.approx(0.0, abs=1e-12)


def test_no_confident_sample_means_no_confident_row():
    ref = np.zeros((4, 10)) + np.arange(10) * 0.01  # near uniform: top-1 p ≈ 0.1
    assert "top1_agreement_confident" not in by_name(compare(ref, ref, None, "classification"))


# --- Intervals ---------------------------------------------------------------------------------------

def test_wilson_against_known_values():
    # x = 0: the upper bound is z²/(n + z²) in closed form; 0/10 gives 0.2775.
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z95 ** 2 / (10 + Z95 ** 2)) and hi == pytest.approx(0.2775, abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((1 - hi, 1.0))
    for k, n in ((1, 10), (37, 50), (349, 360), (81, 263)):
        want = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-9)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_paired_interval_known_cases():
    # Uncorrelated outcomes (ad = bc, so phi = 0): Newcombe's interval is the square-and-add of the two Wilson
    # half-widths, computable by hand.
    lo, hi = paired_difference_interval(25, 25, 25, 25)
    wl, wu = wilson_interval(50, 100)
    assert (lo, hi) == pytest.approx((-math.hypot(0.5 - wl, wu - 0.5), math.hypot(wu - 0.5, 0.5 - wl)))
    # Swapping the models negates the interval.
    a = paired_difference_interval(300, 2, 9, 49)
    b = paired_difference_interval(300, 9, 2, 49)
    assert a == pytest.approx((-b[1], -b[0]))
    assert a[0] < (2 - 9) / 360 < a[1] < 0.005
    # Agreement on every sample: the difference is 0, and the interval contains it.
    lo, hi = paired_difference_interval(350, 0, 0, 10)
    assert lo < 0 < hi and hi < 0.02
    # Correlated outcomes make the paired interval narrower than two independent Wilson intervals would.
    (l1, u1), (l2, u2) = wilson_interval(302, 360), wilson_interval(309, 360)
    assert a[1] - a[0] < math.hypot(302 / 360 - l1, u2 - 309 / 360) + math.hypot(u1 - 302 / 360, 309 / 360 - l2)


def test_paired_interval_covers_the_true_difference(rng):
    """Coverage by simulation: a correlated pair of classifiers on 300 samples, 2000 draws."""
    n, draws, p_both, p_only_a, p_only_b = 300, 2000, 0.85, 0.02, 0.04
    truth = p_only_a - p_only_b
    cells = rng.multinomial(n, [p_both, p_only_a, p_only_b, 1 - p_both - p_only_a - p_only_b], size=draws)
    covered = sum(lo <= truth <= hi for lo, hi in (paired_difference_interval(*c) for c in cells))
    assert 0.93 <= covered / draws <= 0.98


# --- Task accuracy and the budget ----------------------------------------------------------------------

def labelled_case(lost: int, gained: int = 0, n: int = 360, ref_wrong: int = 10, classes: int = 10):
    """One-hot logits for n labelled samples: fp32 wrong on ``ref_wrong``; the variant also wrong on ``lost``
    samples fp32 gets right, and right on ``gained`` that fp32 gets wrong."""
    labels = np.arange(n) % classes
    ref_pred, var_pred = labels.copy(), labels.copy()
    ref_pred[:ref_wrong] = (labels[:ref_wrong] + 1) % classes
    var_pred[:ref_wrong] = ref_pred[:ref_wrong]
    var_pred[:gained] = labels[:gained]
    var_pred[ref_wrong:ref_wrong + lost] = (labels[ref_wrong:ref_wrong + lost] + 1) % classes
    return np.eye(classes)[var_pred] * 5, np.eye(classes)[ref_pred] * 5, labels


def rows_of(metrics):
    return {m.name: {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "details": m.details}
            for m in metrics}


def test_task_accuracy_with_intervals_and_an_undecided_budget():
    out, ref, labels = labelled_case(lost=3)  # 3 of 360 samples: 0.83 pt, under a 1-pt budget
    m = by_name(compare(out, ref, labels, "classification"))
    acc, delta = m["task_accuracy"], m["task_accuracy_delta"]
    assert acc.value == pytest.approx(347 / 360) and (acc.ci_low, acc.ci_high) == pytest.approx(wilson_interval(347, 360))
    assert acc.details["kind"] == "task_accuracy" and acc.description.startswith("task accuracy: ")
    assert delta.value == pytest.approx(-3 / 360) and delta.details["samples"] == 360
    assert delta.details["only_fp32_correct"] == 3 and delta.details["only_variant_correct"] == 0
    assert (delta.ci_low, delta.ci_high) == pytest.approx(paired_difference_interval(347, 0, 3, 10))
    assert m["accuracy_retained"].details["kind"] == "task_accuracy"
    j = judge(rows_of(m.values()), max_drop=0.01, max_parity_loss=0.01)
    assert j.basis == TASK and j.loss == pytest.approx(3 / 360) and j.samples == 360
    assert j.low < 0.01 < j.high  # one image is 0.28 pt: the interval straddles the budget
    assert j.verdict == "undecided" and j.passes
    assert "undecided: the data cannot decide a budget of 1 pt" in j.describe_verdict()

    far = judge(rows_of(compare(*labelled_case(lost=40), "classification")), 0.01, 0.01)
    assert far.verdict == "over" and not far.passes and "over the task accuracy budget of 1 pt" in far.describe_verdict()
    same = judge(rows_of(compare(*labelled_case(lost=0), "classification")), 0.05, 0.01)
    assert same.verdict == "within" and same.loss == 0.0


def test_judge_falls_back_to_named_parity_measures():
    top1 = judge({"top1_agreement": {"value": 0.8}}, 0.01, 0.05)
    assert top1.basis == PARITY and top1.budget == 0.05 and "loose bound, not an accuracy drop" in top1.measure
    assert not top1.passes and top1.verdict == "over" and "no interval stored" in top1.describe()
    cos = judge({"cosine_similarity_mean": {"value": 0.999}}, 0.01, 0.01)
    assert cos.loss == pytest.approx(0.001) and cos.passes
    assert judge({"model_size": {"value": 1.0}}, 0.01, 0.01) is None
    assert judge({"top1_agreement": {"value": 0.5}}, 0.01, None).verdict == "no budget"


def test_worker_rows_carry_the_interval_and_the_kind():
    out, ref, labels = labelled_case(lost=3)

    class Session:
        def run(self, feed):
            return [out[feed["i"][:, 0]]]

        def synchronize(self):
            pass

    data = SampleSet({"i": np.arange(len(labels))[:, None]}, labels)
    rows = {r["metric"]: r for r in accuracy_metrics(Session(), SimpleNamespace(evaluation=data, task="classification"),
                                                     ref, 16)}
    delta = rows["task_accuracy_delta"]
    assert delta["value"] == pytest.approx(-3 / 360) and delta["ci_low"] < 0 < delta["ci_high"]
    assert delta["details"]["samples"] == 360 and delta["details"]["kind"] == "task_accuracy"
    assert rows["top1_agreement"]["details"]["description"].startswith("parity: top-1 agreement with fp32")
    assert "ci_low" not in rows["max_abs_error"]
