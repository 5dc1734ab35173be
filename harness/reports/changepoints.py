"""Change points in a series' history: binary segmentation on per-run summaries, each split tested at the right level.

Within one environment (results from different env_ids are not comparable, docs/architecture.md), the runs
of a series are split where the CUSUM of their log medians is largest, the split is tested, and each
side is searched again while splits are accepted. A split is accepted when p < alpha and the ratio is
beyond the practical threshold; afterwards Benjamini–Hochberg runs over every test made in every series,
and only splits with q < alpha are reported. Nothing is random, so the same history always gives the same
change points.

The test judges per-run summaries with their real spread, against the series' own run-to-run variation:
each run is the mean log of its per-process medians (its processes are its replicates), with variance
s²/k from its k processes; what the runs vary beyond that (tau², estimated from the runs' scatter within
each side of the split) is added to every run. The two sides' mean summaries are then compared with a t
test (df from the runs when tau² > 0, else from the processes). History whose runs each used a single
process (runs from before replication) has no process spread: its splits fall back to Mann–Whitney U on
the pooled raw samples either side, which cannot see the variation between process launches.

A run whose spread is far above the others' in its environment (between processes when it has several,
else IQR / median of its samples) is marked unstable and left out of the search, so a run whose processes
disagree is never reported as a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from costbench.harness.reports.compare import UNSTABLE_SPREAD_FACTOR, relative_spread
from costbench.core.stats import (
    SIGNIFICANCE_ALPHA, benjamini_hochberg, mann_whitney_p, percentile, ratio_of_medians_ci,
)

RUN_LEVEL = "runs"  # the split was tested on per-run summaries (processes as replicates, run-to-run variance)
POOLED_SAMPLES = "samples"  # single-process history: Mann-Whitney U on the pooled raw samples

MAX_SAMPLES_PER_RUN = 2000  # pooled tests take evenly spaced samples beyond this, to bound the cost
MAX_POOLED_FOR_CI = 5000


@dataclass
class Point:
    """One run's measurement of a series."""

    index: int  # position of the run in the history (all runs, oldest first)
    run_id: str
    created: str
    commit: str | None
    env_id: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    samples: np.ndarray | None = None
    valid: bool = True
    spread: float | None = None
    unstable: bool = False
    note: str = ""
    reproduce: str = ""
    process_values: np.ndarray | None = None  # each process's median (>= 2 processes), else None

    @property
    def replicated(self) -> bool:
        return self.process_values is not None and self.process_values.size >= 2 and bool(np.all(self.process_values > 0))


@dataclass
class ChangePoint:
    """A step between ``last_good`` and ``first_bad`` (points of the same environment)."""

    last_good: Point
    first_bad: Point
    ratio: float  # median after / median before (pooled over the segments either side)
    ci_low: float
    ci_high: float
    p_value: float
    q_value: float = 1.0
    verdict: str = ""  # regressed | improved
    still_present: bool = False
    method: str = RUN_LEVEL  # how the split was tested: RUN_LEVEL or POOLED_SAMPLES


@dataclass
class _Test:
    series: int
    points: list[Point]
    split: int
    ratio: float
    p_value: float
    accepted: bool
    ci: tuple[float, float] = (math.nan, math.nan)
    q_value: float = 1.0
    children: list[Any] = field(default_factory=list)
    method: str = RUN_LEVEL


def _thin(x: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` evenly spaced samples (deterministic)."""
    if x.size <= cap:
        return x
    return x[np.linspace(0, x.size - 1, cap).round().astype(int)]


def mark_unstable(points: Sequence[Point], threshold: float) -> None:
    """Flag points whose spread is far above the median spread of the other points in their environment.

    The spread of a run measured in several processes is the standard deviation of its log per-process
    medians (how much its processes disagree); of a single-process run, IQR / median of its samples. Runs
    are judged against others with the same kind of spread.
    """
    by_env: dict[tuple[str, bool], list[Point]] = {}
    for p in points:
        if p.replicated:
            p.spread = float(np.log(p.process_values).std(ddof=1))
            by_env.setdefault((p.env_id, True), []).append(p)
        elif p.samples is not None and p.samples.size > 1:
            p.spread = relative_spread(p.samples)
            by_env.setdefault((p.env_id, False), []).append(p)
    for group in by_env.values():
        for p in group:
            others = [o.spread for o in group if o is not p and o.spread is not None and not math.isnan(o.spread)]
            if p.unstable or not others or p.spread is None or math.isnan(p.spread):
                continue  # already judged (by the runner, against this case's history), or nothing to judge by
            typical = float(np.median(others))
            if p.spread > threshold and p.spread > UNSTABLE_SPREAD_FACTOR * typical:
                p.unstable = True
                what = "processes disagree (sd of log medians" if p.replicated else "spread (IQR/median"
                p.note = (f"unstable: {what} {p.spread:.1%}) is "
                          f"{p.spread / typical if typical else math.inf:.1f}× its environment's typical {typical:.1%}")
        for p in group:
            if not p.valid and not p.unstable:
                p.note = "invalid: stopped at max_duration_s before min_count"


def _beyond(ratio: float, threshold: float) -> bool:
    return ratio >= 1 + threshold or ratio <= 1 - threshold


def _segment(pts: list[Point], lo: int, hi: int, series: int, threshold: float, alpha: float, tests: list[_Test]) -> None:
    n = hi - lo
    if n < 2:
        return
    meds = np.array([p.value for p in pts[lo:hi]], dtype=float)
    y = np.log(meds) if np.all(meds > 0) else meds
    best_k, best_s = 1, -1.0
    for k in range(1, n):  # CUSUM statistic of a single mean shift at k; the first maximum wins ties
        s = abs(y[:k].mean() - y[k:].mean()) * math.sqrt(k * (n - k) / n)
        if s > best_s + 1e-12:
            best_k, best_s = k, s
    split = lo + best_k
    if all(p.replicated for p in pts[lo:hi]):
        ratio, p, ci = run_level_test(pts[lo:split], pts[split:hi])
        accepted = p < alpha and _beyond(ratio, threshold)
        t = _Test(series, pts, split, ratio, p, accepted, ci=ci, method=RUN_LEVEL)
    else:
        left = np.concatenate([_thin(p.samples, MAX_SAMPLES_PER_RUN) for p in pts[lo:split]])
        right = np.concatenate([_thin(p.samples, MAX_SAMPLES_PER_RUN) for p in pts[split:hi]])
        ratio = percentile(right, 50) / percentile(left, 50)
        p = mann_whitney_p(left, right)
        accepted = p < alpha and _beyond(ratio, threshold)
        t = _Test(series, pts, split, ratio, p, accepted, method=POOLED_SAMPLES)
        if accepted:
            t.ci = ratio_of_medians_ci(_thin(left, MAX_POOLED_FOR_CI), _thin(right, MAX_POOLED_FOR_CI))
    tests.append(t)
    if accepted:
        _segment(pts, lo, split, series, threshold, alpha, tests)
        _segment(pts, split, hi, series, threshold, alpha, tests)


def run_level_test(left: Sequence[Point], right: Sequence[Point],
                   confidence: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """(ratio, two-sided p, ratio interval) of the mean log summary after a split over the one before.

    Each run r (replicated points only) is y_r, the mean log of its per-process medians, with variance
    v_r = s_r²/k_r from its processes. tau², what runs vary beyond their processes, is estimated from the
    runs' scatter about their own side's mean: max(0, pooled residual variance - mean v_r), when there is
    a residual (3 runs or more). Var(difference) = sum_L (v_r + tau²)/n_L² + sum_R (v_r + tau²)/n_R²; df is
    n_runs - 2 when tau² > 0 (the run-to-run variance is then what limits us), else the processes' sum(k_r - 1).
    """
    from scipy.special import stdtr, stdtrit

    def summary(pts: Sequence[Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logs = [np.log(p.process_values) for p in pts]
        return (np.array([x.mean() for x in logs]), np.array([x.var(ddof=1) / x.size for x in logs]),
                np.array([x.size for x in logs]))

    yl, vl, kl = summary(left)
    yr, vr, kr = summary(right)
    n = yl.size + yr.size
    tau2 = 0.0
    if n >= 3:
        resid = float(((yl - yl.mean()) ** 2).sum() + ((yr - yr.mean()) ** 2).sum()) / (n - 2)
        tau2 = max(0.0, resid - float(np.concatenate([vl, vr]).mean()))
    diff = float(yr.mean() - yl.mean())
    var = float((vl + tau2).sum()) / yl.size**2 + float((vr + tau2).sum()) / yr.size**2
    df = float(n - 2) if tau2 > 0 else float((kl - 1).sum() + (kr - 1).sum())
    if var <= 0:
        return math.exp(diff), (1.0 if diff == 0 else 0.0), (math.exp(diff), math.exp(diff))
    se = math.sqrt(var)
    p = float(2.0 * stdtr(df, -abs(diff) / se))
    half = float(stdtrit(df, 0.5 + confidence / 2.0)) * se
    return math.exp(diff), p, (math.exp(diff - half), math.exp(diff + half))


def detect(series_points: Sequence[Sequence[Point]], threshold: float = 0.05, alpha: float = SIGNIFICANCE_ALPHA,
           higher_is_better: Sequence[bool] | None = None) -> list[list[ChangePoint]]:
    """Change points of each series (same order), with BH correction across every test in every series."""
    tests: list[_Test] = []
    for i, points in enumerate(series_points):
        mark_unstable(points, threshold)
        for env in dict.fromkeys(p.env_id for p in points):
            usable = [p for p in points if p.env_id == env and p.samples is not None and p.samples.size > 1
                      and p.valid and not p.unstable]
            _segment(usable, 0, len(usable), i, threshold, alpha, tests)
    qs = benjamini_hochberg([t.p_value for t in tests]) if tests else []
    out: list[list[ChangePoint]] = [[] for _ in series_points]
    for t, q in zip(tests, qs):
        t.q_value = float(q)
        if not t.accepted or q >= alpha:
            continue
        hib = bool(higher_is_better[t.series]) if higher_is_better else False
        worse = t.ratio < 1 if hib else t.ratio > 1
        last_good, first_bad = t.points[t.split - 1], t.points[t.split]
        latest = t.points[-1]
        now = latest.value / last_good.value if last_good.value else math.nan
        still = _beyond(now, threshold) and ((now > 1) == (t.ratio > 1))
        out[t.series].append(ChangePoint(last_good, first_bad, t.ratio, t.ci[0], t.ci[1], t.p_value, t.q_value,
                                         "regressed" if worse else "improved", still, t.method))
    for cps in out:
        cps.sort(key=lambda c: c.first_bad.index)
    return out
