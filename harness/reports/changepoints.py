"""Change points in a series' history: binary segmentation on run medians, each split tested on the raw samples.

Within one environment (results from different env_ids are not comparable, docs/architecture.md), the runs
of a series are split where the CUSUM of their log medians is largest; the split is tested with
Mann–Whitney U on the pooled raw samples either side and kept when p < alpha and the ratio of the
pooled medians is beyond the practical threshold; then each side is searched again. Afterwards
Benjamini–Hochberg runs over every test made in every series, and only splits with q < alpha are
reported. Nothing is random, so the same history always gives the same change points.

A run whose spread (IQR / median) is far above the others' in its environment is marked unstable
and left out of the search, so a noisy run is never reported as a regression.
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


def _thin(x: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` evenly spaced samples (deterministic)."""
    if x.size <= cap:
        return x
    return x[np.linspace(0, x.size - 1, cap).round().astype(int)]


def mark_unstable(points: Sequence[Point], threshold: float) -> None:
    """Flag points whose spread is far above the median spread of the other points in their environment."""
    by_env: dict[str, list[Point]] = {}
    for p in points:
        if p.samples is not None and p.samples.size > 1:
            p.spread = relative_spread(p.samples)
            by_env.setdefault(p.env_id, []).append(p)
    for group in by_env.values():
        for p in group:
            others = [o.spread for o in group if o is not p and o.spread is not None and not math.isnan(o.spread)]
            if p.unstable or not others or p.spread is None or math.isnan(p.spread):
                continue  # already judged (by the runner, against this case's history), or nothing to judge by
            typical = float(np.median(others))
            if p.spread > threshold and p.spread > UNSTABLE_SPREAD_FACTOR * typical:
                p.unstable = True
                p.note = (f"unstable: spread (IQR/median {p.spread:.1%}) is "
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
    left = np.concatenate([_thin(p.samples, MAX_SAMPLES_PER_RUN) for p in pts[lo:split]])
    right = np.concatenate([_thin(p.samples, MAX_SAMPLES_PER_RUN) for p in pts[split:hi]])
    ratio = percentile(right, 50) / percentile(left, 50)
    p = mann_whitney_p(left, right)
    accepted = p < alpha and _beyond(ratio, threshold)
    t = _Test(series, pts, split, ratio, p, accepted)
    if accepted:
        t.ci = ratio_of_medians_ci(_thin(left, MAX_POOLED_FOR_CI), _thin(right, MAX_POOLED_FOR_CI))
    tests.append(t)
    if accepted:
        _segment(pts, lo, split, series, threshold, alpha, tests)
        _segment(pts, split, hi, series, threshold, alpha, tests)


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
                                         "regressed" if worse else "improved", still))
    for cps in out:
        cps.sort(key=lambda c: c.first_bad.index)
    return out
