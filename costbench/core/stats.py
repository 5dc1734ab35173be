"""Statistics with one declared definition each, so every backend's numbers mean the same thing.

Percentiles are nearest-rank on the sorted samples: the p-th percentile of n samples is the
value at 1-based rank ceil(p/100 * n). It is always an observed sample (no interpolation), and
the median is therefore the lower middle for even n. A percentile's confidence interval is the
percentile bootstrap's, computed exactly (see :func:`bootstrap_ci`), so the same samples always give
the same interval; so is the interval of a ratio of two medians.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PERCENTILE_DEFINITION = "nearest-rank: value at rank ceil(p/100*n) of the sorted samples"


def percentile(samples: Sequence[float] | np.ndarray, p: float) -> float:
    """Nearest-rank percentile, 0 < p <= 100 (p=0 gives the minimum)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p must be within [0, 100], got {p}")
    rank = max(1, math.ceil(p / 100.0 * x.size))
    return float(x[rank - 1])


def order_statistic_bootstrap(samples: Sequence[float] | np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact bootstrap distribution of the nearest-rank p-th percentile: (distinct values, CDF at each).

    No resampling: with the samples sorted, k = ceil(p/100 * n) and m(v) = #{samples <= v}, the k-th
    smallest of n draws with replacement is <= v exactly when at least k draws are <= v, so
    P(T* <= v) = P(Binomial(n, m(v)/n) >= k) = I_{m(v)/n}(k, n - k + 1), the regularized incomplete
    beta. This is what a Monte Carlo bootstrap converges to with infinitely many resamples.
    """
    from scipy.special import betainc  # scipy.special only: scipy.stats costs a second to import

    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("bootstrap of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile p must be within [0, 100], got {p}")
    n = x.size
    k = max(1, math.ceil(p / 100.0 * n))
    values = np.unique(x)
    m = np.searchsorted(x, values, side="right")  # samples <= each distinct value
    cdf = betainc(k, n - k + 1, m / n)
    cdf[-1] = 1.0  # m = n: every draw is <= the maximum
    return values, np.maximum.accumulate(cdf)


def bootstrap_ci(
    samples: Sequence[float] | np.ndarray,
    p: float = 50.0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the nearest-rank p-th percentile, computed exactly.

    The ends are the smallest samples where the exact bootstrap CDF (:func:`order_statistic_bootstrap`)
    reaches (1 - confidence)/2 and (1 + confidence)/2: O(n log n), deterministic (no seed), and
    without the resampling noise of a finite bootstrap.
    """
    values, cdf = order_statistic_bootstrap(samples, p)
    alpha = (1.0 - confidence) / 2.0
    lo = values[min(int(np.searchsorted(cdf, alpha, side="left")), values.size - 1)]
    hi = values[min(int(np.searchsorted(cdf, 1.0 - alpha, side="left")), values.size - 1)]
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary:
    """The summary of one sample of timings (same unit as the samples)."""

    count: int
    mean: float
    std: float
    cv: float  # coefficient of variation, std / mean
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    p50_ci_low: float
    p50_ci_high: float
    p99_ci_low: float
    p99_ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """Nearest-rank percentiles, bootstrap intervals for the median and p99, and spread."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot summarize an empty sample")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo50, hi50 = bootstrap_ci(x, 50, confidence)
    lo99, hi99 = bootstrap_ci(x, 99, confidence)
    return Summary(
        count=int(x.size), mean=mean, std=std, cv=std / mean if mean else float("nan"),
        min=float(x.min()), p50=percentile(x, 50), p90=percentile(x, 90), p99=percentile(x, 99),
        max=float(x.max()), p50_ci_low=lo50, p50_ci_high=hi50, p99_ci_low=lo99, p99_ci_high=hi99,
    )


# --- Comparison of two samples (used by `costbench compare` and the dashboard) -------------------

SIGNIFICANCE_ALPHA = 0.002  # docs/architecture.md: claim a change only below this p-value (after correction)


@dataclass(frozen=True)
class Comparison:
    """NEW against BASE for one series: ratio of medians with a bootstrap interval and a two-sided p-value."""

    base_median: float
    new_median: float
    ratio: float  # new / base: > 1 means NEW is larger (slower, for a latency)
    ratio_ci_low: float
    ratio_ci_high: float
    p_value: float  # Mann-Whitney U, two-sided
    n_base: int
    n_new: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def ratio_of_medians_ci(
    base: Sequence[float] | np.ndarray,
    new: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(new) / median(base), each side resampled independently, exactly.

    With the exact bootstrap distributions of both medians (:func:`order_statistic_bootstrap`),
    P(R* <= r) = sum_i P(M*_base = b_i) · P(M*_new <= r · b_i); each end is the smallest r where that
    reaches its level, found by bisection (to 1e-12 relative) instead of by resampling.
    """
    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    if b.size == 0 or n.size == 0:
        raise ValueError("ratio of medians needs two non-empty samples")
    bv, bcdf = order_statistic_bootstrap(b, 50)
    nv, ncdf = order_statistic_bootstrap(n, 50)
    bpmf = np.diff(bcdf, prepend=0.0)
    keep = bpmf > 1e-16  # the median's distribution sits on a few hundred values; the rest cannot move a quantile
    bv, bpmf = bv[keep], bpmf[keep]

    def cdf(r: float) -> float:
        idx = np.searchsorted(nv, r * bv, side="right") - 1  # the new-median CDF is a step function
        return float(np.sum(bpmf * np.where(idx >= 0, ncdf[np.maximum(idx, 0)], 0.0)))

    def quantile(level: float) -> float:
        lo, hi = nv[0] / bv[-1], nv[-1] / bv[0]  # the whole support of the ratio
        if cdf(lo) >= level:
            return float(lo)
        for _ in range(200):  # cdf(lo) < level <= cdf(hi)
            mid = 0.5 * (lo + hi)
            if cdf(mid) >= level:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-12 * hi:
                break
        return float(hi)

    alpha = (1.0 - confidence) / 2.0
    return quantile(alpha), quantile(1.0 - alpha)


def paired_median_ratio(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of the per-pair ratios new_i / base_i, with the exact percentile-bootstrap interval of that median.

    For samples taken in pairs within one round of an interleaved run (pair i: both measured minutes or less
    apart), so that a slow spell both shared cancels in the ratio instead of widening both sides' spread.
    """
    b, n = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if b.size != n.size or b.size == 0:
        raise ValueError(f"paired samples need as many values a side, at least 1: got {b.size} and {n.size}")
    r = n / b
    lo, hi = bootstrap_ci(r, 50.0, confidence)
    return percentile(r, 50.0), lo, hi


def mann_whitney_p(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples without ties, else asymptotic)."""
    from scipy.stats import mannwhitneyu

    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    if b.size == 0 or n.size == 0:
        raise ValueError("Mann-Whitney U needs two non-empty samples")
    if np.all(b == b[0]) and np.all(n == n[0]) and b[0] == n[0]:
        return 1.0  # identical constants: scipy would return nan
    return float(mannwhitneyu(n, b, alternative="two-sided", method="auto").pvalue)


def compare_samples(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray,
                    confidence: float = 0.95) -> Comparison:
    """Everything needed to judge one series: medians, their ratio with an interval, and the U-test p-value."""
    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    mb, mn = percentile(b, 50), percentile(n, 50)
    lo, hi = ratio_of_medians_ci(b, n, confidence)
    return Comparison(mb, mn, mn / mb, lo, hi, mann_whitney_p(b, n), int(b.size), int(n.size))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order.

    Compare each with the significance level to control the false discovery rate across many series.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    # Enforce monotonicity from the largest p down, then cap at 1.
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# --- Processes as replicates -----------------------------------------------------------------------
#
# A process launch draws a state (memory layout, thread placement, core, the neighbour on a VM) that
# holds for its whole life and moves its median by several percent, sometimes by 2x. Thousands of
# samples inside one process say nothing about that, so across processes the unit of replication is the
# process: each contributes one summary (its median, its p99, its throughput), and intervals and tests
# are over those. Per-process summaries of a timing are positive and multiplicative, so they are taken
# on the log scale: the centre is the geometric mean of the per-process values, and its interval is a
# Student t interval on their logs (df = processes - 1). With few processes a t interval is the only
# choice that keeps its coverage: a bootstrap over 5 values, or an order-statistic interval (min..max
# covers 93.75% with 5), cannot reach 95%. A process median is close to normal on the log scale (a
# median of many samples, times a process effect); bimodal process states make the interval wider, as
# they should, and the t test conservative.


@dataclass(frozen=True)
class AcrossProcesses:
    """One metric over processes: geometric mean of the per-process values with a t interval (same unit)."""

    center: float
    ci_low: float
    ci_high: float
    log_sd: float  # standard deviation of log per-process values: the relative spread between processes
    processes: int


def across_processes(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> AcrossProcesses:
    """Geometric mean of per-process values (all > 0) with a t interval on their logs (needs >= 2 values)."""
    from scipy.special import stdtrit

    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError(f"an interval across processes needs at least 2 processes, got {v.size}")
    if np.any(~(v > 0)):
        raise ValueError(f"per-process values must be positive and finite, got {v.tolist()}")
    logs = np.log(v)
    mean, sd = float(logs.mean()), float(logs.std(ddof=1))
    half = float(stdtrit(v.size - 1, 0.5 + confidence / 2.0)) * sd / math.sqrt(v.size)
    return AcrossProcesses(math.exp(mean), math.exp(mean - half), math.exp(mean + half), sd, int(v.size))


def combine_capacities(estimates: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """One capacity from several processes' searches: (centre, low, high).

    The centre is the geometric mean of the estimates, its interval a t interval on their logs (the
    process is the unit of replication: a process's own interval cannot see how far another launch
    lands), never narrower than the processes' own intervals combined as independent errors of the mean.
    """
    from scipy.special import stdtrit

    est = np.log(np.asarray(estimates, dtype=np.float64))
    n = est.size
    if n < 2:
        raise ValueError(f"combining capacity searches needs at least 2 processes, got {n}")
    centre = float(est.mean())
    t_half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * float(est.std(ddof=1)) / math.sqrt(n)
    own = (np.log(np.asarray(highs, dtype=np.float64)) - np.log(np.asarray(lows, dtype=np.float64))) / 2
    within = float(np.sqrt(np.sum(own ** 2))) / n
    half = max(t_half, within)
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def between_process_share(per_process: Sequence[Sequence[float] | np.ndarray]) -> float:
    """Share of the variance of log samples that lies between processes, in [0, 1] (a robust one-way ANOVA).

    Between: the variance of the per-process log medians, less what the medians' own sampling noise
    explains (Var(median) ~ pi/2 * sigma^2 / n). Within: the pooled robust variance of log samples inside
    a process (MAD * 1.4826, squared), so the rare slow sample that dominates a plain variance does not
    hide a process that is 10% slower as a whole. NaN with fewer than 2 processes.
    """
    groups = [np.log(np.asarray(g, dtype=np.float64)) for g in per_process if len(g) > 0]
    if len(groups) < 2:
        return float("nan")
    medians = np.array([np.median(g) for g in groups])
    within = float(np.mean([(1.4826 * np.median(np.abs(g - np.median(g)))) ** 2 for g in groups]))
    n = float(np.mean([g.size for g in groups]))
    between = max(0.0, float(medians.var(ddof=1)) - math.pi / 2 * within / n)
    total = between + within
    return between / total if total > 0 else 0.0


def compare_processes(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray,
                      confidence: float = 0.95) -> Comparison:
    """NEW against BASE with processes as replicates: Welch's t test on the log per-process values.

    ``base``/``new``: one value per process (e.g. each process's median), at least 2 each. The ratio is
    that of the geometric means, with the Welch interval; the p-value is two-sided.
    """
    from scipy.special import stdtr, stdtrit

    b = np.log(np.asarray(base, dtype=np.float64))
    n = np.log(np.asarray(new, dtype=np.float64))
    if b.size < 2 or n.size < 2:
        raise ValueError(f"a test across processes needs at least 2 processes a side, got {b.size} and {n.size}")
    diff = float(n.mean() - b.mean())
    vb, vn = float(b.var(ddof=1)) / b.size, float(n.var(ddof=1)) / n.size
    se = math.sqrt(vb + vn)
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        lo = hi = diff
    else:
        df = (vb + vn) ** 2 / ((vb**2 / (b.size - 1) if vb else 0.0) + (vn**2 / (n.size - 1) if vn else 0.0))
        p = float(2.0 * stdtr(df, -abs(diff) / se))
        half = float(stdtrit(df, 0.5 + confidence / 2.0)) * se
        lo, hi = diff - half, diff + half
    return Comparison(math.exp(float(b.mean())), math.exp(float(n.mean())), math.exp(diff), math.exp(lo),
                      math.exp(hi), p, int(b.size), int(n.size))


def paired_ratio(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """NEW / BASE from paired per-process values (process k of each measured in the same round, so the drift
    both share cancels): the geometric mean of the ratios with a t interval on their logs (df = pairs - 1)."""
    from scipy.special import stdtrit

    b, n = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if b.size != n.size or b.size < 2:
        raise ValueError(f"a paired ratio needs as many values a side, at least 2: got {b.size} and {n.size}")
    d = np.log(n) - np.log(b)
    mean = float(d.mean())
    half = float(stdtrit(d.size - 1, 0.5 + confidence / 2.0)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def variance_ratio_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided F test p-value that two samples (>= 2 values each) have different variances."""
    from scipy.special import fdtr

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    vx, vy = float(x.var(ddof=1)), float(y.var(ddof=1))
    if vx == vy:
        return 1.0
    if vx == 0.0 or vy == 0.0:
        return 0.0
    f = vx / vy
    lower = float(fdtr(x.size - 1, y.size - 1, f))
    return min(1.0, 2.0 * min(lower, 1.0 - lower))
