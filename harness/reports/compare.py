"""Compare two runs series by series: a ratio with an interval, a p-value, BH across series, a verdict.

The processes are the replicates: a series measured in several processes in both runs is tested with
Welch's t test on the log per-process medians, and its ratio is that of their geometric means with the
Welch interval (:func:`costbench.core.stats.compare_processes`). Thousands of samples within one process
cannot see the variation between process launches, so a test on them calls changes that are not there.
When either run measured the series in one process only (runs from before replication, or
``processes = 1``), the comparison falls back to the raw samples (Mann–Whitney U, exact bootstrap
interval of the ratio of medians) and its ``method`` and reason say so.

A change is claimed only when it is significant after Benjamini–Hochberg correction (q below
``SIGNIFICANCE_ALPHA``, docs/architecture.md) AND the ratio is beyond a practical threshold. Two runs
measured side by side (``costbench ab``, :mod:`costbench.harness.execute.paired`) are tested the same way
at the level their pairing recorded (alpha over its two looks). A series whose
spread (between processes; or within the one process) is far above the other run's is called unstable, not
regressed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from costbench.core.metrics import catalogue
from costbench.harness.results.replicates import process_values
from costbench.harness.reports.data import (
    SERIES_KEYS, Selection, env_differences, row_details, runner_flags, samples_of, series_label,
)
from costbench.core.stats import (
    SIGNIFICANCE_ALPHA, benjamini_hochberg, compare_processes, compare_samples, percentile, variance_ratio_p,
)

DEFAULT_THRESHOLD = 0.05  # 5%: smaller shifts are within what a re-run on the same machine moves
UNSTABLE_SPREAD_FACTOR = 3.0  # spread this many times the other run's (and above the threshold): unstable
INVALID_NOTE = "stopped at max_duration_s before min_count (result marked invalid)"
VERDICTS = ("regressed", "improved", "unstable", "unchanged")
METHOD_PROCESSES = "processes"  # Welch t on log per-process medians
METHOD_SAMPLES = "samples"  # single-process fallback: Mann-Whitney U on raw samples
FALLBACK_NOTE = ("single process in {which}: tested on raw samples within one process, which cannot see the "
                 "variation between process launches (measure with processes >= 2)")


def relative_spread(samples: np.ndarray) -> float:
    """Interquartile range over the median (nearest-rank): a spread measure that outliers do not dominate."""
    med = percentile(samples, 50)
    return (percentile(samples, 75) - percentile(samples, 25)) / med if med else float("nan")


@dataclass
class SeriesResult:
    """One series compared: the numbers and the verdict with its reason."""

    model: str
    variant: str
    backend: str
    device: str
    scenario: str
    batch_size: int
    metric: str
    unit: str
    base_median: float
    new_median: float
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    p_value: float
    q_value: float
    n_base: int
    n_new: int
    base_spread: float
    new_spread: float
    verdict: str
    reason: str
    method: str = METHOD_PROCESSES  # what the replicates were: processes, or (fallback) one process's samples

    @property
    def label(self) -> str:
        return series_label(asdict(self))


@dataclass
class CompareResult:
    """BASE against NEW: every shared series, what was left out, and whether the environments match."""

    base: dict[str, Any]
    new: dict[str, Any]
    threshold: float
    alpha: float
    series: list[SeriesResult]
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    env_warning: str = ""
    env_diffs: list[str] = field(default_factory=list)
    paired: dict[str, Any] | None = None  # the pairing both runs recorded (costbench ab), else None

    def counts(self) -> dict[str, int]:
        return {v: sum(s.verdict == v for s in self.series) for v in VERDICTS}

    def as_dict(self) -> dict[str, Any]:
        keep = ("run_id", "created", "commit", "env_id", "suite")
        return {"base": {k: self.base.get(k) for k in keep}, "new": {k: self.new.get(k) for k in keep},
                "threshold": self.threshold, "alpha": self.alpha, "paired": self.paired, "counts": self.counts(),
                "env_warning": self.env_warning, "env_differences": self.env_diffs,
                "only_in_base": self.only_base, "only_in_new": self.only_new,
                "series": [asdict(s) | {"label": s.label} for s in self.series]}


def _is_valid(flag: Any) -> bool:
    """Only an explicit False marks a result invalid; a missing flag (imported data) does not."""
    return flag is None or bool(pd.isna(flag)) or bool(flag)


def _sample_series(df: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Series with raw samples (ok cases only), keyed by SERIES_KEYS."""
    ok = df[(df["status"] == "ok") & df["samples"].map(lambda s: (a := samples_of(s)) is not None and a.size > 1)]
    return {tuple(r[k] for k in SERIES_KEYS): r for _, r in ok.iterrows()}


def verdict(ratio: float, lo: float, hi: float, q: float, base_spread: float, new_spread: float,
            base_valid: bool, new_valid: bool, threshold: float, alpha: float,
            higher_is_better: bool = False, flagged: str = "",
            spread_name: str = "spread (IQR/median)", spread_p: float | None = None) -> tuple[str, str]:
    """(verdict, reason) for one series; see the module docstring for the rule.

    ``flagged`` is the runner's own instability verdict for either run's case (empty when none).
    ``spread_p``: with processes as replicates, the F test's p-value that the two runs' between-process
    variances differ; a few processes' spread is itself noisy, so a larger spread alone is not "unstable".
    """
    if not base_valid or not new_valid:
        which = " and ".join(n for n, v in (("BASE", base_valid), ("NEW", new_valid)) if not v)
        return "unstable", f"{which} {INVALID_NOTE}"
    if flagged:
        return "unstable", flagged
    for name, mine, other in (("NEW", new_spread, base_spread), ("BASE", base_spread, new_spread)):
        if mine > threshold and mine > UNSTABLE_SPREAD_FACTOR * other and (spread_p is None or spread_p < alpha):
            times = mine / other if other else float("inf")
            return "unstable", f"{name}'s {spread_name} {mine:.1%} is {times:.1f}× the other run's ({other:.1%})"
    worse = ratio >= 1 + threshold if not higher_is_better else ratio <= 1 - threshold
    better = ratio <= 1 - threshold if not higher_is_better else ratio >= 1 + threshold
    if q < alpha and (worse or better):
        return ("regressed" if worse else "improved"), (
            f"ratio {ratio:.3f} (95% CI {lo:.3f}–{hi:.3f}) beyond ±{threshold:.0%}, q={q:.2g} < {alpha:g}")
    if q >= alpha:
        return "unchanged", f"not significant (q={q:.2g} ≥ {alpha:g})"
    return "unchanged", f"significant (q={q:.2g}) but within ±{threshold:.0%} (ratio {ratio:.3f})"


def pairing(sel: Selection, base_id: str, new_id: str) -> dict[str, Any] | None:
    """The pairing BASE's cases recorded when BASE and NEW were measured side by side with each other, else None."""
    for _, row in sel.cases[sel.cases["run_id"] == base_id].iterrows():
        tag = (row["info"] or {}).get("paired") if isinstance(row["info"], dict) else None
        if tag and tag.get("with") == new_id:
            return tag
    return None


def paired_note(tag: dict[str, Any]) -> str:
    return (f"BASE and NEW were measured side by side in one window (costbench ab), so the drift between windows "
            f"cancels; a change is claimed at q < {tag['alpha']:g}, alpha over the pairing's {tag['looks']} looks")


def compare_runs(sel: Selection, base_id: str, new_id: str, threshold: float = DEFAULT_THRESHOLD,
                 alpha: float | None = None) -> CompareResult:
    """Compare every series measured in both runs; ``alpha`` by default ``SIGNIFICANCE_ALPHA``, or the level a
    side-by-side pair of runs recorded."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold {threshold!r}: expected a fraction in [0, 1), e.g. 0.05 for 5%")
    tag = pairing(sel, base_id, new_id) or pairing(sel, new_id, base_id)
    if alpha is None:
        alpha = float(tag["alpha"]) if tag else SIGNIFICANCE_ALPHA
    df = sel.results
    base_s = _sample_series(df[df["run_id"] == base_id])
    new_s = _sample_series(df[df["run_id"] == new_id])
    shared = [k for k in base_s if k in new_s]
    raw = []
    for k in shared:
        b, n = base_s[k], new_s[k]
        bp, np_ = process_values(row_details(b)), process_values(row_details(n))
        if bp is not None and np_ is not None and np.all(bp > 0) and np.all(np_ > 0):
            c, method = compare_processes(bp, np_), METHOD_PROCESSES
        else:
            c, method = compare_samples(samples_of(b["samples"]), samples_of(n["samples"])), METHOD_SAMPLES
        raw.append((k, b, n, c, method, bp, np_))
    qs = benjamini_hochberg([r[3].p_value for r in raw]) if raw else []
    flags = runner_flags(df[df["run_id"].isin([base_id, new_id])])
    series = []
    for (k, b, n, c, method, bp, np_), q in zip(raw, qs):
        if method == METHOD_PROCESSES:  # the spread that matters: between processes (sd of log medians)
            bs, ns = float(np.log(bp).std(ddof=1)), float(np.log(np_).std(ddof=1))
        else:
            bs, ns = relative_spread(samples_of(b["samples"])), relative_spread(samples_of(n["samples"]))
        key = dict(zip(SERIES_KEYS, k))
        flagged = "; ".join(f"{name}: {flags[(rid, *k[:-1])]}" for name, rid in (("BASE", base_id), ("NEW", new_id))
                            if (rid, *k[:-1]) in flags)
        v, why = verdict(c.ratio, c.ratio_ci_low, c.ratio_ci_high, float(q), bs, ns,
                         _is_valid(b["valid"]), _is_valid(n["valid"]),
                         threshold, alpha, catalogue().higher_is_better(key["metric"]), flagged,
                         spread_name="process spread (sd of log medians)" if method == METHOD_PROCESSES else "spread (IQR/median)",
                         spread_p=variance_ratio_p(np.log(bp), np.log(np_)) if method == METHOD_PROCESSES else None)
        if method == METHOD_SAMPLES:
            which = " and ".join(name for name, v in (("BASE", bp), ("NEW", np_)) if v is None) or "BASE or NEW"
            why = f"{why}; {FALLBACK_NOTE.format(which=which)}"
        series.append(SeriesResult(**{**key, "batch_size": int(key["batch_size"])}, unit=str(b["unit"]),
                                   base_median=c.base_median, new_median=c.new_median, ratio=c.ratio,
                                   ratio_ci_low=c.ratio_ci_low, ratio_ci_high=c.ratio_ci_high, p_value=c.p_value,
                                   q_value=float(q), n_base=c.n_base, n_new=c.n_new, base_spread=bs, new_spread=ns,
                                   verdict=v, reason=why, method=method))
    order = {v: i for i, v in enumerate(VERDICTS)}
    series.sort(key=lambda s: (order[s.verdict], -abs(np.log(s.ratio)) if s.ratio > 0 else 0, s.label))
    base, new = sel.run(base_id), sel.run(new_id)
    result = CompareResult(base, new, threshold, alpha, series, paired=tag,
                           only_base=sorted(series_label(dict(zip(SERIES_KEYS, k))) for k in base_s if k not in new_s),
                           only_new=sorted(series_label(dict(zip(SERIES_KEYS, k))) for k in new_s if k not in base_s))
    if base.get("env_id") != new.get("env_id"):
        result.env_diffs = env_differences(base.get("env"), new.get("env"))
        result.env_warning = (f"BASE and NEW ran in different environments (env_id {base.get('env_id')} vs "
                              f"{new.get('env_id')}): differences may come from the machine or libraries, not the code")
    return result


def needs_another_look(series: SeriesResult, threshold: float) -> bool:
    """Whether a side-by-side comparison should measure a series again: not called, and its 95% interval
    reaches past +-threshold (a change that matters is not ruled out); or unstable because a side's processes
    disagree (more pairs settle that: on a shared VM it is mostly a slow phase that met a few of them), but not
    because a result is invalid (more processes would not make it valid)."""
    if series.verdict == "unstable":
        return not series.reason.endswith(INVALID_NOTE)
    if series.verdict != "unchanged":
        return False
    return not (1 - threshold < series.ratio_ci_low and series.ratio_ci_high < 1 + threshold)


def render_markdown(result: CompareResult) -> str:
    """The comparison as Markdown (e.g. for a pull-request comment)."""
    c = result.counts()
    out = [f"# costbench compare: `{result.base['run_id']}` → `{result.new['run_id']}`", "",
           f"**{c['regressed']} regressed, {c['improved']} improved, {c['unstable']} unstable, "
           f"{c['unchanged']} unchanged** (threshold ±{result.threshold:.0%}, BH-corrected q < {result.alpha:g}).", ""]
    if result.paired:
        out += [f"> {paired_note(result.paired)}.", ""]
    if result.env_warning:
        out += [f"> ⚠ {result.env_warning}"] + [f"> - {d}" for d in result.env_diffs] + [""]
    fallback = sum(s.method == METHOD_SAMPLES for s in result.series)
    if fallback:
        out += [f"> {fallback} of {len(result.series)} series were measured in a single process in BASE or NEW: they "
                "are tested on raw samples, which cannot see the variation between process launches; their verdicts "
                "are over-confident. Measure with `processes` ≥ 2 (default 5).", ""]
    out += ["| series | base | new | ratio (95% CI) | p | q | replicates | verdict | why |",
            "|---|---:|---:|---|---:|---:|---|---|---|"]
    for s in result.series:
        reps = f"{s.n_base}+{s.n_new} processes" if s.method == METHOD_PROCESSES else f"{s.n_base}+{s.n_new} samples"
        out.append(f"| {s.label} | {s.base_median:.4g} {s.unit} | {s.new_median:.4g} {s.unit} | {s.ratio:.3f} "
                   f"({s.ratio_ci_low:.3f}–{s.ratio_ci_high:.3f}) | {s.p_value:.2g} | {s.q_value:.2g} | {reps} | "
                   f"**{s.verdict}** | {s.reason} |")
    for title, items in (("Only in BASE", result.only_base), ("Only in NEW", result.only_new)):
        if items:
            out += ["", f"{title} (not compared): " + "; ".join(items)]
    return "\n".join(out) + "\n"
