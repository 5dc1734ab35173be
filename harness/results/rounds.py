"""Whether a case is done or gets another process: to replace one measured under contention, or to reach a
declared precision. The runner asks it before each round; a store asks it before pushing a case of a run
still going, so that it never pushes a case whose rows another process will still change.

A suite's ``precision`` is the relative half-width of the 95% interval across processes it asks of each
case's headline metric (single stream: the p50 latency; offline: the throughput; per the metric
catalogue). After every case has its first ``processes`` (at least 3: an interval with one degree of
freedom decides nothing), the runner measures another round of one process for each case that has not
reached it, interleaved as the first rounds were, until it has or ``max_processes`` is spent. A case
without a headline across processes (the server scenario's capacity search, a case that failed) is not
extended.

A process measured while others took more than a tenth of the machine's CPU (``cpu_contention``) is left
out of the case's result (:func:`~costbench.harness.results.replicates.merge_records`) and replaced by
another, within the same budget: ``max_processes`` with a precision, else twice ``processes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from costbench.core.metrics import CAPACITY_QPS, CPU_CONTENTION, PRECISION_TARGET, catalogue
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
    values = [m["value"] for r in usable(records) for m in r.get("metrics") or []
              if m["metric"] == name and m.get("value") and m["value"] > 0]
    if name is None or len(values) < 2:
        return None
    a = across_processes(values)
    return a.ci_high / a.center - 1.0


def contended(record: dict[str, Any]) -> bool:
    """Whether a process record says others took enough of the CPU while it measured to distrust it."""
    return any(m["metric"] == CPU_CONTENTION and (m.get("details") or {}).get("contended")
               for m in record.get("metrics") or [])


def clean(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The processes that measured without contention."""
    return [r for r in records if r.get("status") == "ok" and not contended(r)]


def usable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The processes a case's result is made of: the clean ones while at least two remain (or the one clean
    process of a case measured once), else every process that measured."""
    measured = [r for r in records if r.get("status") == "ok"]
    ok = clean(measured)
    return ok if len(ok) >= min(2, len(measured)) else measured


def needs_more(records: list[dict[str, Any]], precision: Precision | None, processes: int,
               remeasure: bool = True) -> bool:
    """Whether a case should get another process: it measured, and within its budget either contention left
    it fewer than ``processes`` clean ones (with ``remeasure``), or it is short of the precision asked."""
    budget = precision.max_processes if precision is not None else 2 * processes
    if len(records) >= budget or not any(r.get("status") == "ok" for r in records):
        return False
    # Only contention is replaced: a process that failed is not measured again here (see execute/failures.py).
    failed = sum(r.get("status") != "ok" for r in records)
    if remeasure and any(contended(r) for r in records) and len(clean(records)) < processes - failed:
        return True
    if precision is None:
        return False
    width = relative_half_width(records)
    return width is not None and (math.isnan(width) or width > precision.target)


def rounds_of(spec: dict[str, Any] | None) -> tuple[Precision | None, bool]:
    """The precision and re-measuring a suite asks, from the suite as data (a run header's ``suite.spec``)."""
    spec = spec or {}
    target, processes = spec.get("precision"), int(spec.get("processes") or 1)
    precision = None if target is None else Precision(float(target), int(spec.get("max_processes") or 2 * processes))
    return precision, bool(spec.get("remeasure_contended", False))
