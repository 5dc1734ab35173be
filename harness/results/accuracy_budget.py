"""Intervals for task accuracy and parity, and whether a variant meets an accuracy or a parity budget.

Two different things, never called by each other's name (DESIGN.md, "Accuracy and parity"):

- **task accuracy** needs labels. A variant's loss is fp32's accuracy minus its own on the same
  samples, with a paired 95% interval (both models scored on the same samples, so only the
  discordant samples move the difference);
- **parity** compares a variant with the fp32 reference. For a classifier the budget is on the
  samples where fp32 is confident (top-1 softmax probability >= a stated threshold): the loss is the
  fraction of those samples whose top-1 class changed, with a Wilson 95% interval. Top-1 agreement
  on every sample is only a loose upper bound on an accuracy drop (flips where fp32 is unsure say
  nothing about accuracy), so it is the basis only for results stored before the confident measure
  existed, and is then named for what it is.

A budget is met when the point estimate is within it; when the interval straddles the budget the
verdict says that the data cannot decide it. Pure arithmetic (``math`` and ``json``), so the reports
use it without importing the worker, the zoo or a backend.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from costbench.core.metrics import COSINE_MEAN, TASK_ACCURACY_DELTA, TOP1_AGREEMENT, TOP1_AGREEMENT_CONFIDENT

Z95 = 1.959963984540054  # two-sided 95% normal quantile

TASK = "task accuracy"
PARITY = "parity"

# The basis of a judgement: which metric row it reads, and how the loss is named.
TASK_METRIC = TASK_ACCURACY_DELTA
CONFIDENT_METRIC = TOP1_AGREEMENT_CONFIDENT
PARITY_FALLBACKS = (TOP1_AGREEMENT, COSINE_MEAN)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` successes in ``n`` trials (nan, nan when n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; rounding would leave 1e-17 or 0.9999999999999999.
    return (0.0 if k <= 0 else max(0.0, centre - half)), (1.0 if k >= n else min(1.0, centre + half))


def paired_difference_interval(both: int, only_a: int, only_b: int, neither: int,
                               z: float = Z95) -> tuple[float, float]:
    """Interval for p_a − p_b when a and b are scored on the same samples (Newcombe 1998, method 10).

    The 2×2 table of per-sample outcomes: ``both`` right, ``only_a`` right, ``only_b`` right,
    ``neither``. The point estimate is (only_a − only_b) / n; Wilson intervals for each proportion
    are combined with the correlation ``phi`` between a's and b's outcomes, so agreement on most
    samples narrows the interval (unlike two independent intervals).
    """
    n = both + only_a + only_b + neither
    if n <= 0:
        return math.nan, math.nan
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    dl2 = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    du2 = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return max(-1.0, d - math.sqrt(max(dl2, 0.0))), min(1.0, d + math.sqrt(max(du2, 0.0)))


# --- Judging a budget ----------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _details(row: Mapping[str, Any]) -> dict[str, Any]:
    d = row.get("details")
    if isinstance(d, str):
        try:
            d = json.loads(d)
        except ValueError:
            d = None
    return d if isinstance(d, dict) else {}


def _pt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(100 * v + 0.0, spec)


@dataclass(frozen=True)
class Judgement:
    """A variant's loss against fp32 on one basis, with its interval, sample count and the budget's verdict.

    Losses are fractions (0.01 = one point), positive when the variant is worse than fp32.
    """

    basis: str  # TASK or PARITY
    measure: str  # what the loss is, e.g. "task accuracy: drop vs fp32", "parity loss: top-1 disagreement …"
    metric: str  # the result row it comes from
    loss: float | None
    low: float | None = None
    high: float | None = None
    samples: int | None = None
    budget: float | None = None
    budget_flag: str = ""  # the option that sets this budget, for messages

    @property
    def measured(self) -> bool:
        return self.loss is not None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def verdict(self) -> str:
        """"within", "over", "undecided" (the interval straddles the budget), "unmeasured" or "no budget"."""
        if self.loss is None:
            return "unmeasured"
        if self.budget is None:
            return "no budget"
        tol = 1e-12
        if self.has_interval:
            if self.high <= self.budget + tol:
                return "within"
            if self.low > self.budget + tol:
                return "over"
            return "undecided"
        return "within" if self.loss <= self.budget + tol else "over"

    @property
    def passes(self) -> bool:
        """Within the budget on the point estimate (an undecided one passes when its estimate is within)."""
        return self.loss is not None and (self.budget is None or self.loss <= self.budget + 1e-12)

    def describe(self) -> str:
        """E.g. 'task accuracy: drop vs fp32 0.28 pt (95% CI -0.55 to 1.10 pt, 360 samples)'."""
        if self.loss is None:
            return f"{self.measure}: not measured"
        parts = []
        if self.has_interval:
            parts.append(f"95% CI {_pt(self.low)} to {_pt(self.high)} pt")
        if self.samples is not None:
            parts.append(f"{self.samples} samples")
        extra = f" ({', '.join(parts)})" if parts else " (no interval stored)"
        return f"{self.measure} {_pt(self.loss)} pt{extra}"

    def budget_text(self) -> str:
        """'1 pt' (the budget in points)."""
        return "-" if self.budget is None else f"{100 * self.budget:g} pt"

    def verdict_text(self) -> str:
        """What the evidence says about the budget: 'within the task-accuracy budget of 1 pt', 'over …', or
        'undecided: the data cannot decide a budget of 1 pt (…)'."""
        v = self.verdict
        if v in ("unmeasured", "no budget"):
            return f"no {self.basis} budget" if v == "no budget" else "not measured"
        b = self.budget_text()
        if v == "undecided":
            side = "within" if self.passes else "over"
            return (f"undecided: the data cannot decide a budget of {b} (the estimate is {side} it; the 95% "
                    "interval straddles it)")
        return f"{v} the {self.basis} budget of {b}"

    def describe_verdict(self) -> str:
        """The loss, its interval and sample count, and what they say about the budget."""
        if self.loss is None or self.budget is None:
            return self.describe()
        return f"{self.describe()}; {self.verdict_text()}"


def judge(rows: Mapping[str, Mapping[str, Any]], max_drop: float | None, max_parity_loss: float | None,
          drop_flag: str = "--max-drop", parity_flag: str = "--max-parity-loss") -> Judgement | None:
    """The basis and loss for one variant from its accuracy rows (metric name -> row with value, ci_low,
    ci_high, details): task accuracy where labelled (budget ``max_drop``), else parity (``max_parity_loss``),
    preferring agreement on the samples where fp32 is confident. None when no accuracy row exists.
    """
    task = rows.get(TASK_METRIC)
    if task is not None and _num(task.get("value")) is not None:
        d = _details(task)
        lo, hi = _num(task.get("ci_low")), _num(task.get("ci_high"))
        delta = float(task["value"])
        return Judgement(TASK, "task accuracy: drop vs fp32", TASK_METRIC, -delta + 0.0,
                         None if hi is None else -hi + 0.0, None if lo is None else -lo + 0.0,
                         d.get("samples"), max_drop, drop_flag)
    conf = rows.get(CONFIDENT_METRIC)
    if conf is not None and _num(conf.get("value")) is not None:
        d = _details(conf)
        lo, hi = _num(conf.get("ci_low")), _num(conf.get("ci_high"))
        thr = d.get("threshold")
        measure = ("parity loss: top-1 disagreement with fp32 where fp32 is confident"
                   + (f" (top-1 probability ≥ {thr:g})" if isinstance(thr, (int, float)) else ""))
        return Judgement(PARITY, measure, CONFIDENT_METRIC, 1.0 - float(conf["value"]) + 0.0,
                         None if hi is None else 1.0 - hi + 0.0, None if lo is None else 1.0 - lo + 0.0,
                         d.get("samples"), max_parity_loss, parity_flag)
    for name in PARITY_FALLBACKS:
        row = rows.get(name)
        if row is None or _num(row.get("value")) is None:
            continue
        d = _details(row)
        lo, hi = _num(row.get("ci_low")), _num(row.get("ci_high"))
        measure = {"top1_agreement": "parity loss: top-1 disagreement with fp32 on all samples (a loose bound, "
                                     "not an accuracy drop)",
                   "cosine_similarity_mean": "parity loss: 1 − mean cosine similarity to fp32"}[name]
        return Judgement(PARITY, measure, name, 1.0 - float(row["value"]) + 0.0,
                         None if hi is None else 1.0 - hi + 0.0, None if lo is None else 1.0 - lo + 0.0,
                         d.get("samples"), max_parity_loss, parity_flag)
    return None
