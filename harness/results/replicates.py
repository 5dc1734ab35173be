"""A case measured in several processes: their records become one case record, their metric rows one row each.

The run file holds one ``case`` record per process (``"process": k``), written as each process ends, so
an interrupted run keeps every process it finished and ``--resume`` measures only the missing ones. Rows
for the store are built per case, from all its processes (:func:`merge_records`):

- a metric every process measured becomes one row: for timings and rates (ms, samples/s) the geometric
  mean of the per-process values with a t interval across processes (:func:`costbench.core.stats.across_processes`),
  for other quantities (memory, sizes, counts) the median of the per-process values;
- a row with raw samples (a latency series' ``_p50``) keeps every sample, in process order, and
  ``details["processes"]["sizes"]`` says how many came from each process, so per-process samples stay
  recoverable; its ``values`` are the per-process medians that compare and the dashboard test;
- each latency series gains ``<series>_process_share`` (the share of its variance that lies between
  processes) and ``<series>_process_spread`` (the standard deviation of log per-process medians);
- a metric only one process measured (accuracy, measured once per case; the build time; the runner's
  ``unstable`` flag) is kept as it is.

A single-process case (``processes = 1``, and every run from before replication) keeps its rows unchanged:
its interval is the within-process bootstrap, and its details say so.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from costbench.core.metrics import CAPACITY_QPS, CONTENDED_PROCESSES, Series, catalogue
from costbench.harness.results.rounds import contended, needs_more, rounds_of, usable
from costbench.core.stats import across_processes, between_process_share, combine_capacities, percentile

# Units whose per-process values are positive and multiplicative: summarised by a geometric mean and t interval.
RATIO_SCALE_UNITS = ("ms", "samples/s", "s")
INTERVAL_ACROSS = "t interval on log per-process values (df = processes - 1): the process is the unit of replication"
INTERVAL_WITHIN = ("within one process (exact bootstrap of the median): does not include the variation between "
                   "process launches")


def process_of(record: dict[str, Any]) -> int:
    """The process index of a case record (0 for records written before replication)."""
    return int(record.get("process") or 0)


def planned_processes(record: dict[str, Any]) -> int:
    """How many processes the record's case was planned with (1 for a skipped case and for old records)."""
    if record.get("status") == "skipped":
        return 1
    return int(record["case"].get("processes") or 1)


def group_records(records: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Case records grouped by case, in the order each case first appears, each group in process order.

    A case is its case_id on one machine class (a fleet run's records carry their node's env_id); a record
    from before replication (no ``process`` key) is a case of its own.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for i, rec in enumerate(records):
        key = (rec["case"]["case_id"], rec.get("env_id")) if "process" in rec else ("single", i)
        groups.setdefault(key, []).append(rec)
    return [sorted(g, key=process_of) for g in groups.values()]


def is_complete(group: list[dict[str, Any]], suite: dict[str, Any] | None = None) -> bool:
    """Every planned process of the case is recorded (a skipped case: its one record), and the runner will
    add none (:mod:`.rounds`: contention or the precision ``suite``, a run header's suite spec, asks)."""
    if len({process_of(r) for r in group}) < planned_processes(group[0]):
        return False
    precision, remeasure = rounds_of(suite)
    return not needs_more(group, precision, planned_processes(group[0]), remeasure)


def _positive(values: list[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return percentile(finite, 50) if finite else float("nan")


def _merge_one(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One metric's rows from several processes (process order) as one row, plus a series' share and spread rows."""
    first = rows[0]
    values = [float(r["value"]) if r.get("value") is not None else float("nan") for r in rows]
    info: dict[str, Any] = {"count": len(rows), "values": values}
    merged = {k: v for k, v in first.items() if k not in ("value", "ci_low", "ci_high", "samples", "valid", "details")}
    valid = [r.get("valid") for r in rows if r.get("valid") is not None]
    if valid:
        merged["valid"] = all(valid)
    out_extra: list[dict[str, Any]] = []
    if first.get("unit") in RATIO_SCALE_UNITS and _positive(values):
        a = across_processes(values)
        merged.update(value=a.center, ci_low=a.ci_low, ci_high=a.ci_high)
        info.update(summary="geometric mean of the per-process values", interval=INTERVAL_ACROSS, log_sd=a.log_sd)
    else:
        merged["value"] = _median(values)
        info["summary"] = "median of the per-process values"
    samples = [r.get("samples") for r in rows]
    if all(s is not None for s in samples):
        merged["samples"] = [x for s in samples for x in s]
        info["sizes"] = [len(s) for s in samples]
        series = _series_with_p50(name)  # the row of a latency series that carries its raw samples
        if series is not None:
            share = between_process_share(samples)
            spread = info.get("log_sd", float("nan"))
            common = {"valid": merged.get("valid"), "details": {"processes": len(rows), "series": series.name}}
            out_extra = [
                {"metric": series.process_share, "value": share, "unit": "ratio", **common,
                 "details": {**common["details"], "description": (
                     "share of the variance of log samples that lies between processes (robust one-way ANOVA)")}},
                {"metric": series.process_spread, "value": spread, "unit": "ratio", **common,
                 "details": {**common["details"], "description": (
                     "standard deviation of the log per-process medians: the relative spread between processes")}},
            ]
            info["share"] = share
    merged["details"] = {**(first.get("details") or {}), "processes": info}
    return [merged, *out_extra]


def merge_metrics(per_process: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The metric rows of one case's processes (in process order) as the case's rows; see the module docstring."""
    if len(per_process) == 1:
        return list(per_process[0])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for metrics in per_process:
        for m in metrics:
            by_name.setdefault(m["metric"], []).append(m)
    out: list[dict[str, Any]] = []
    for name, rows in by_name.items():
        out += list(rows) if len(rows) == 1 else _merge_one(name, rows)
    _merge_capacity(by_name, out)
    return out


def _merge_capacity(by_name: dict[str, list[dict[str, Any]]], merged: list[dict[str, Any]]) -> None:
    """A searched capacity over processes: the processes' estimates and own intervals combined
    (:func:`~costbench.core.stats.combine_capacities`), not the median of each end."""
    est, lows, highs = (by_name.get(k, []) for k in (CAPACITY_QPS, "capacity_ci_low", "capacity_ci_high"))
    if len(est) < 2 or not (len(est) == len(lows) == len(highs)):
        return  # a process whose search found no upper bound leaves the per-process medians as they are
    values = [[float(r["value"]) for r in rows] for rows in (est, lows, highs)]
    if not all(_positive(v) for v in values):
        return
    centre, low, high = combine_capacities(*values)
    how = {"summary": "geometric mean of the processes' capacity estimates",
           "interval": "t interval on their logs, never narrower than their own intervals combined"}
    for row in merged:
        if row["metric"] in (CAPACITY_QPS, "capacity_ci_low", "capacity_ci_high"):
            row["details"]["processes"].update(how)
        if row["metric"] == CAPACITY_QPS:
            row.update(value=centre, ci_low=low, ci_high=high)
        elif row["metric"] == "capacity_ci_low":
            row["value"] = low
        elif row["metric"] == "capacity_ci_high":
            row["value"] = high


def merge_records(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One case record from the records of its processes (process order); a lone record is returned as it is.

    The case is ok when at least one process is; the processes that failed are counted in its reason and
    listed in ``info["processes"]``; a failed case's reason says how many of its processes were not started
    because the failure repeats. Processes measured under contention are left out of the timings while at
    least two clean ones remain; a ``contended_processes`` row counts them. Info, case and env_id come from the first process (which also
    measured accuracy).
    """
    if len(group) == 1 and planned_processes(group[0]) == 1:
        return group[0]
    measured = [r for r in group if r.get("status") == "ok"]
    # Processes measured under contention are left out (rounds.usable); what only they measured (accuracy:
    # the first process) stays.
    ok = usable(group)
    left_out = [r for r in measured if r not in ok]
    bad = [r for r in group if r.get("status") != "ok"]
    lead = ok[0] if ok else group[0]
    planned = planned_processes(group[0])
    rec = dict(lead)
    rec["info"] = {**(lead.get("info") or {}), "processes": {
        "planned": planned, "recorded": len(group), "ok": len(ok),
        "failed": [{"process": process_of(r), "status": r.get("status"), "reason": r.get("reason", "")} for r in bad]}}
    rec["elapsed_s"] = float(sum(r.get("elapsed_s") or 0.0 for r in group))
    rec["finished"] = max((r.get("finished") or "" for r in group), default="")
    if ok:
        rec["status"] = "ok"
        # The runner's flag goes into the case's last record, which may be a failed process's.
        flags = [m for r in bad for m in r.get("metrics") or [] if m["metric"] == "unstable"]
        rec["metrics"] = merge_metrics([r.get("metrics") or [] for r in ok]) + flags
        present = {m["metric"] for m in rec["metrics"]}
        rec["metrics"] += [m for r in left_out for m in r.get("metrics") or [] if m["metric"] not in present]
        n_contended = sum(contended(r) for r in measured)
        if n_contended:
            rec["metrics"].append({"metric": CONTENDED_PROCESSES, "value": float(n_contended), "unit": "count",
                                   "details": {"left_out": len(left_out), "measured": len(measured)}})
        rec["reason"] = (f"{len(bad)} of {planned} processes failed; first: {bad[0].get('reason', '')}" if bad else "")
    else:
        rec["reason"] = lead.get("reason", "")
        idle = [r for r in bad if (r.get("info") or {}).get("not_started")]
        if idle and idle[0] is not lead:  # say once that the rest were not started, and why
            why = idle[0].get("reason", "").removeprefix("not started: ")
            rec["reason"] += f" ({len(idle)} of {planned} processes not started: {why})"
    rec.pop("process", None)
    return rec


def merged_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every case of a run file once, its processes merged (:func:`merge_records`), in first-appearance order."""
    return [merge_records(g) for g in group_records(records)]


def process_values(details: dict[str, Any] | None) -> np.ndarray | None:
    """The per-process values a merged row's details hold (e.g. each process's median), or None for one process."""
    procs = (details or {}).get("processes")
    if not isinstance(procs, dict) or not procs.get("values") or len(procs["values"]) < 2:
        return None
    return np.asarray(procs["values"], dtype=float)


def _series_with_p50(name: str) -> Series | None:
    """The catalogue series whose median row is ``name``, if any."""
    return next((s for s in catalogue().series.values() if s.p50 == name), None)
