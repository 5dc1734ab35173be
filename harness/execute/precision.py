"""Measure to a declared precision: add processes to a case until its headline's interval is narrow enough.

A suite's ``precision`` is the relative half-width of the 95% interval across processes it asks of each
case's headline metric (single stream: the p50 latency; offline: the throughput; per the metric
catalogue). After every case has its first ``processes`` (at least 3: an interval with one degree of
freedom decides nothing), the runner measures another round of one process for each case that has not
reached it, interleaved as the first rounds were, until it has or ``max_processes`` is spent. A case
without a headline across processes (the server scenario's capacity search, a case that failed) is not
extended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from costbench.core.metrics import CAPACITY_QPS, PRECISION_TARGET, catalogue
from costbench.core.stats import across_processes
from costbench.harness.suite.case import scenario_kind_of


@dataclass(frozen=True)
class Precision:
    """What a run asks: the relative half-width ``target`` of each case's headline, within ``max_processes``."""

    target: float
    max_processes: int

    def row(self) -> dict[str, Any]:
        """The metric row each measured process carries, so tables can say whether the case reached it."""
        return {"metric": PRECISION_TARGET, "value": self.target, "unit": "ratio"}


def headline(case: dict[str, Any]) -> str | None:
    """The metric whose interval the precision is asked of, for a case as data (None: the scenario has none
    measured per process, e.g. the server scenario's capacity)."""
    kind = scenario_kind_of(case)
    try:
        name = catalogue().for_scenario(kind).headline
    except KeyError:
        return None
    return None if name == CAPACITY_QPS else name


def relative_half_width(records: list[dict[str, Any]]) -> float | None:
    """The headline's 95% interval half-width across the ok processes, relative to its centre (upper side, as
    the interval is symmetric in logs); None with fewer than 2 values."""
    if not records:
        return None
    name = headline(records[0]["case"])
    values = [m["value"] for r in records if r.get("status") == "ok" for m in r.get("metrics") or []
              if m["metric"] == name and m.get("value") and m["value"] > 0]
    if name is None or len(values) < 2:
        return None
    a = across_processes(values)
    return a.ci_high / a.center - 1.0


def needs_more(records: list[dict[str, Any]], precision: Precision) -> bool:
    """Whether a case should get another process: measured, short of the target, and within its budget."""
    if len(records) >= precision.max_processes or not any(r.get("status") == "ok" for r in records):
        return False
    width = relative_half_width(records)
    return width is not None and (math.isnan(width) or width > precision.target)
