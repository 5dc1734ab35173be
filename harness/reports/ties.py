"""Whether the report's pick is cheaper (or faster) than each runner-up by more than the data's noise.

The pick is the configuration with the best point estimate; that alone decides nothing when the
runner-up's interval overlaps it. Each runner-up that meets the same criteria is compared with the pick
on the objective's ratio (runner-up / pick), from the per-process values: paired by process when both
come from one run with the same process count (the runner measured process k of every case in the same
round, so the machine's drift cancels), else Welch's interval on the two sets. The pick stands alone
only when every runner-up's ratio interval lies above 1 + ``MARGIN``; the others form a tied set, and the
report says how many processes would likely separate them, or that they are equal within the margin.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from scipy.special import stdtrit

from costbench.core.stats import compare_processes, paired_ratio

MARGIN = 0.03  # differences smaller than 3% are not worth a decision: an equivalence margin
MAX_PROCESSES = 50  # beyond this many processes a case, "more measurement" is no practical advice


@dataclass
class Versus:
    """A runner-up against the pick on the objective; a tie when the data cannot tell them apart by the margin."""

    row: dict[str, Any]
    ratio: float  # runner-up / pick on the objective (cost or latency): > 1 means the pick is better
    low: float
    high: float
    paired: bool
    processes: int  # per configuration now (the fewer of the two)
    needed: int | None  # processes per configuration that would likely decide it (None: see ``equal``)
    sizes: tuple[int, int] = (0, 0)  # processes of the pick and of the runner-up

    @property
    def decided(self) -> bool:
        """The pick is better by more than the margin: the ratio's whole interval lies above 1 + MARGIN."""
        return self.low > 1.0 + MARGIN

    @property
    def equal(self) -> bool:
        """The whole interval lies within the margin: equal for any decision, and more data changes nothing."""
        return self.high <= 1.0 + MARGIN and self.low >= 1.0 / (1.0 + MARGIN)

    def describe(self, what: str) -> str:
        how = (f"paired over {self.processes} processes" if self.paired
               else f"{self.sizes[0]} and {self.sizes[1]} processes, unpaired")
        text = f"{what} ratio {self.ratio:.3f} (95% CI {self.low:.3f}–{self.high:.3f}, {how})"
        if self.decided:
            return text + f": the pick is better by more than {MARGIN:.0%}"
        if self.equal:
            return text + f": equal within {MARGIN:.0%}"
        if self.needed is None:
            return text + f": more than {MAX_PROCESSES} processes a case would be needed to decide it"
        return text + f": about {self.needed} processes a case would likely decide it"


def process_values(row: dict[str, Any], key: str) -> np.ndarray | None:
    """The per-process values a configuration row carries under ``key`` (a list), or None."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    arr = np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=np.float64)
    return arr if arr.size >= 2 and np.all(arr > 0) else None


def compare_to_pick(pick: dict[str, Any], other: dict[str, Any], key: str, higher_is_better: bool,
                    scale: float = 1.0) -> Versus | None:
    """``other`` against ``pick`` on the per-process values under ``key``.

    ``scale`` multiplies the ratio (e.g. the runner-up's hourly price over the pick's, exact). None when
    either lacks per-process values (measured in one process): nothing to judge the difference by.
    """
    a, b = process_values(pick, key), process_values(other, key)
    if a is None or b is None:
        return None
    if higher_is_better:  # cost ~ 1 / throughput: the ratio of costs is the pick's throughput over the other's
        a, b = 1.0 / a, 1.0 / b
    paired = pick.get("run_id") == other.get("run_id") and a.size == b.size
    if paired:
        ratio, low, high = paired_ratio(a, b)
    else:
        c = compare_processes(a, b)
        ratio, low, high = c.ratio, c.ratio_ci_low, c.ratio_ci_high
    ratio, low, high = ratio * scale, low * scale, high * scale
    n = min(a.size, b.size)
    if low > 1.0 + MARGIN:
        return Versus(other, ratio, low, high, paired, n, None, (a.size, b.size))
    edge, lr = math.log(1.0 + MARGIN), abs(math.log(ratio))
    half = (math.log(high) - math.log(low)) / 2.0
    if high <= 1.0 + MARGIN and low >= 1.0 / (1.0 + MARGIN):
        # Equal within the margin: more data changes nothing.
        return Versus(other, ratio, low, high, paired, n, None, (a.size, b.size))
    # How many processes would put the interval clear of the margin (above it, when the estimate is beyond
    # it; inside it, when the estimate is within), if the estimate and the spread of the log ratio hold (the
    # spread recovered from this interval). Past MAX_PROCESSES, no practical number.
    room = lr - edge if lr > edge else edge - lr
    sd = half / float(stdtrit(_df(n, paired), 0.975)) * math.sqrt(n)
    needed = next((k for k in range(n + 1, MAX_PROCESSES + 1)
                   if float(stdtrit(_df(k, paired), 0.975)) * sd / math.sqrt(k) < room), None)
    return Versus(other, ratio, low, high, paired, n, needed, (a.size, b.size))


def _df(n: int, paired: bool) -> int:
    """Degrees of freedom of the ratio's interval with ``n`` processes a configuration (Welch: about 2n - 2)."""
    return n - 1 if paired else 2 * n - 2
