"""Capacity-search benchmark: its estimate and interval against queueing theory, with and without dynamic
batching, and on EfficientNet-Lite0. Every search runs through ``costbench run``, as a user's would.

    python benchmarks/capacity.py OUT --part md1 [--runs 4] [--processes 5] [--budget 120]
    python benchmarks/capacity.py OUT --part batched [--processes 3] [--budget 120]
    python benchmarks/capacity.py OUT --part lite0 [--budget 150]
    python benchmarks/capacity.py OUT --summary        # OUT/capacity.json and capacity.md from what ran

Parts (each appends runs to OUT/<part>/results, so a part can be run in several sittings):

- ``md1``: a backend plugin (tests/plugins/linear_service_backend.py) that spins exactly 1 ms per call is an
  M/D/1 queue; Erlang's formula gives its capacity at p99 ≤ 5 ms exactly (about 560 queries/s). Each run is
  one case of ``--processes`` processes, each process its own search (``min_count = 3000``,
  ``min_duration_s = 4``); per process: the estimate's error, whether its interval holds the exact answer,
  and its time against the budget; per run: the processes' combined interval.
- ``batched``: 1 ms + 0.1 ms per query of the batch, unbatched and with ``max_batch = 8``,
  ``max_queue_delay_ms = 1``: the batched estimate against the unbatched one, and against the queue model
  (:mod:`costbench.harness.measure.queue_model`) simulated on the service times the search probed, with
  200,000 arrivals; and the load generator's ceiling.
- ``lite0``: EfficientNet-Lite0 int8 on ONNX Runtime and OpenVINO at p99 ≤ 20 ms, with and without
  batching (``max_batch = 4``, ``max_queue_delay_ms = 2``): the capacity estimates with intervals, and the
  cost per million inferences at the estimate and at the guaranteed rate (``costbench report --guarantee``).

Numbers are printed and written, never asserted. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"
SLO_MS = 5.0

MD1_SUITE = """name = "capacity-md1"
description = "1 ms per call (an M/D/1 queue): capacity at p99 <= 5 ms, one search per process"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{{ name = "linear-service", a_ms = 1.0 }}]
batch_sizes = [1]
accuracy = false
processes = {processes}
timeout_s = 600

[[scenarios]]
kind = "server"
name = "md1"
search = true
slo_ms = 5.0
min_count = 3000
min_duration_s = 4
search_budget_s = {budget}
"""

BATCHED_SUITE = """name = "capacity-batched"
description = "1 ms + 0.1 ms per query of the batch: capacity at p99 <= 5 ms, unbatched and batched"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{{ name = "linear-service", a_ms = 1.0, b_ms = 0.1 }}]
batch_sizes = [1]
accuracy = false
processes = {processes}
timeout_s = 600

[[scenarios]]
kind = "server"
name = "unbatched"
search = true
slo_ms = 5.0
min_count = 3000
min_duration_s = 4
search_budget_s = {budget}

[[scenarios]]
kind = "server"
name = "batched"
search = true
slo_ms = 5.0
min_count = 3000
min_duration_s = 4
max_batch = 8
max_queue_delay_ms = 1.0
search_budget_s = {budget}
"""

LITE0_SUITE = """name = "capacity-lite0"
description = "EfficientNet-Lite0 int8 on ONNX Runtime and OpenVINO: capacity at p99 <= 20 ms, unbatched and batched"
models = ["efficientnet-lite0"]
variants = ["int8", "int8-nncf"]
backends = [{{ name = "onnxruntime" }}, {{ name = "openvino", hint = "latency" }}]
exclude = [{{ variant = "int8-nncf", backend = "onnxruntime" }}, {{ variant = "int8", backend = "openvino" }}]
batch_sizes = [1]
accuracy = false
processes = 1
timeout_s = 1800

[[scenarios]]
kind = "server"
name = "server"
search = true
slo_ms = 20.0
min_count = 2000
min_duration_s = 2
search_budget_s = {budget}

[[scenarios]]
kind = "server"
name = "server-batched"
search = true
slo_ms = 20.0
min_count = 2000
min_duration_s = 2
max_batch = 4
max_queue_delay_ms = 2.0
search_budget_s = {budget}
"""


def run_suite(text: str, folder: Path, plugin: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suite = folder / "suite.toml"
    suite.write_text(text)
    env = dict(os.environ, COLUMNS="200")
    if plugin:  # the test-only backend of known service time, registered as a third-party plugin would be
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
        env["COSTBENCH_EXTRA_BACKENDS"] = "linear-service=linear_service_backend:LinearServiceBackend"
    subprocess.run([sys.executable, "-m", "costbench.commands.cli", "run", str(suite), "--out",
                    str(folder / "results")], check=True, env=env)


def process_records(folder: Path) -> list[dict[str, Any]]:
    """Every process's case record of every run in ``folder/results``, with its run id."""
    from costbench.harness.results.runfile import run_files

    out = []
    for rf in run_files(folder / "results"):
        header, cases = rf.read()
        out += [{**c, "run_id": header["run_id"]} for c in cases if c.get("status") == "ok"]
    return out


def scalars(record: dict[str, Any]) -> dict[str, Any]:
    return {m["metric"]: m for m in record.get("metrics", [])}


def search_of(record: dict[str, Any]) -> dict[str, Any]:
    """One process's search: its scalars and summary."""
    m = scalars(record)
    summary = (m["slo_met"].get("details") or {}).get("search_summary", {})
    value = lambda k: m[k]["value"] if k in m else None  # noqa: E731
    return {"run_id": record["run_id"], "process": record.get("process", 0), "scenario": record["case"]["scenario"],
            "estimate": value("capacity_qps"), "low": value("capacity_ci_low"), "high": value("capacity_ci_high"),
            "shown_to_meet": value("max_qps_within_slo"), "model": value("capacity_model_qps"),
            "ceiling": value("generator_ceiling_qps"), "elapsed_s": summary.get("elapsed_s"),
            "probe_s": summary.get("probe_s"), "budget_s": summary.get("budget_s"),
            "stopped_by": summary.get("stopped_by"), "trials": len((m["slo_met"].get("details") or {}).get("search", [])),
            "service_ms_by_batch": summary.get("service_ms_by_batch"), "valid": m["slo_met"].get("valid"),
            "contention": value("cpu_contention"),
            "notes": (m["slo_met"].get("details") or {}).get("notes", [])}


def md1_summary(folder: Path) -> dict[str, Any]:
    from costbench.core.stats import combine_capacities
    from costbench.harness.machine.contention import CONTENDED_SHARE
    from costbench.harness.measure.queue_model import md1_capacity

    exact = md1_capacity(SLO_MS / 1e3, 99, 1e-3)
    # A process measured while something else took over 10% of the machine is left out, as the runner does.
    every = [search_of(r) for r in process_records(folder)]
    searches = [s for s in every if (s["contention"] or 0.0) <= CONTENDED_SHARE]
    for s in searches:
        s["error"] = None if s["estimate"] is None else s["estimate"] / exact - 1
        s["within_5pct"] = s["error"] is not None and abs(s["error"]) <= 0.05
        s["holds"] = (s["low"] or 0.0) <= exact <= (s["high"] or math.inf)
        s["within_budget"] = s["elapsed_s"] is not None and s["elapsed_s"] <= s["budget_s"]  # both after the probe
    runs = []
    for run_id in dict.fromkeys(s["run_id"] for s in searches):
        group = [s for s in searches if s["run_id"] == run_id and s["estimate"] and s["low"] and s["high"]]
        if len(group) >= 2:
            c, lo, hi = combine_capacities([s["estimate"] for s in group], [s["low"] for s in group],
                                          [s["high"] for s in group])
            runs.append({"run_id": run_id, "processes": len(group), "estimate": c, "low": lo, "high": hi,
                         "error": c / exact - 1, "holds": lo <= exact <= hi})
    return {"exact_qps": exact, "searches": searches, "runs": runs, "contended_left_out": len(every) - len(searches),
            "within_5pct": sum(s["within_5pct"] for s in searches), "holds": sum(s["holds"] for s in searches),
            "within_budget": sum(s["within_budget"] for s in searches)}


def batched_summary(folder: Path) -> dict[str, Any]:
    from costbench.harness.measure.queue_model import ServiceTimes, model_capacity

    searches = [search_of(r) for r in process_records(folder)]
    for s in searches:
        by = {int(k): [v * 1e6] for k, v in (s["service_ms_by_batch"] or {}).items()}
        batched = s["scenario"] == "batched"
        s["simulated"] = model_capacity(ServiceTimes(by), SLO_MS * 1e6, 99, max_batch=8 if batched else 1,
                                        delay_ns=1e6 if batched else 0.0, queries=200_000, seed=1) if by else None
        s["error_vs_simulation"] = (None if not s["simulated"] or s["estimate"] is None
                                    else s["estimate"] / s["simulated"] - 1)
        s["holds_simulation"] = s["simulated"] is not None and (s["low"] or 0) <= s["simulated"] <= (s["high"] or math.inf)
    est = {k: [s["estimate"] for s in searches if s["scenario"] == k and s["estimate"]] for k in ("unbatched", "batched")}
    gm = {k: math.exp(sum(map(math.log, v)) / len(v)) if v else None for k, v in est.items()}
    ratio = gm["batched"] / gm["unbatched"] if gm["batched"] and gm["unbatched"] else None
    return {"searches": searches, "geomean": gm, "batched_over_unbatched": ratio}


def lite0_summary(folder: Path) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {"rows": []}
    for mode, flag in (("estimate", []), ("guaranteed", ["--guarantee"])):
        report = folder / f"report-{mode}"
        subprocess.run([sys.executable, "-m", "costbench.commands.cli", "report", "last", "--results",
                        str(folder / "results"), "--out", str(report), *flag], check=True, capture_output=True)
        out[mode] = pd.read_csv(report / "report.csv")[["backend", "variant", "machine", "hourly"]].to_dict("records")
    from costbench.harness.reports.prices import cost_per_million

    hourly = {(r["backend"], r["variant"]): r["hourly"] for r in out["estimate"]}
    for s in (search_of(r) | {"backend": r["case"]["backend"], "variant": r["case"]["variant"]}
              for r in process_records(folder)):
        h = hourly.get((s["backend"], s["variant"]))
        h = None if h is None or (isinstance(h, float) and math.isnan(h)) else float(h)
        s["cost_per_m_estimate"] = cost_per_million(h, s["estimate"])
        s["cost_per_m_guaranteed"] = cost_per_million(h, s["low"]) if s["low"] else None
        out["rows"].append(s)
    out["machine"] = next((r["machine"] for r in out["estimate"] if isinstance(r["machine"], str)), None)
    return out


def f(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(res: dict[str, Any]) -> str:
    lines: list[str] = []
    if "md1" in res:
        m = res["md1"]
        n = len(m["searches"])
        lines += ["## 1 ms per call against the exact M/D/1 capacity", "",
                  f"Exact capacity at p99 ≤ {SLO_MS:g} ms: {m['exact_qps']:.1f} queries/s. One search per process, "
                  "`min_count = 3000`, `min_duration_s = 4`.", "",
                  "| run | process | estimate | 95% interval | error | holds exact | trials | time (budget) | stopped by |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in m["searches"]:
            lines.append(f"| {s['run_id'][-6:]} | {s['process']} | {f(s['estimate'], '.1f')} | "
                         f"[{f(s['low'], '.1f')}, {f(s['high'], '.1f')}] | {f(s['error'], '+.1%')} | {s['holds']} | "
                         f"{s['trials']} | {f((s['elapsed_s'] or 0) + (s['probe_s'] or 0), '.0f')} s "
                         f"({f(s['budget_s'] + (s['probe_s'] or 0) if s['budget_s'] else None, '.0f')} s) | "
                         f"{s['stopped_by']} |")
        lines += ["", f"Within 5% of the exact capacity: {m['within_5pct']} of {n}; interval holds it: {m['holds']} of "
                  f"{n}; within budget: {m['within_budget']} of {n}; processes left out as contended (over 10% of "
                  f"the machine taken by others): {m.get('contended_left_out', 0)}.", ""]
        if m["runs"]:
            lines += ["Each run's processes combined (the case's row):", "",
                      "| run | processes | estimate | 95% interval | error | holds exact |", "| --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {r['run_id'][-6:]} | {r['processes']} | {r['estimate']:.1f} | [{r['low']:.1f}, {r['high']:.1f}] | "
                      f"{r['error']:+.1%} | {r['holds']} |" for r in m["runs"]]
            lines.append("")
    if "batched" in res:
        b = res["batched"]
        lines += ["## 1 ms + 0.1 ms per query, unbatched and batched (max_batch 8, delay 1 ms)", "",
                  "| scenario | process | estimate | 95% interval | queue model on the probed service times | error | "
                  "holds model | generator ceiling | time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in b["searches"]:
            lines.append(f"| {s['scenario']} | {s['process']} | {f(s['estimate'], '.1f')} | "
                         f"[{f(s['low'], '.1f')}, {f(s['high'], '.1f')}] | {f(s['simulated'], '.1f')} | "
                         f"{f(s['error_vs_simulation'], '+.1%')} | {s['holds_simulation']} | {f(s['ceiling'], '.3g')} | "
                         f"{f((s['elapsed_s'] or 0) + (s['probe_s'] or 0), '.0f')} s |")
        lines += ["", f"Batched over unbatched (geometric means of the estimates): {f(b['batched_over_unbatched'], '.2f')}×.",
                  ""]
    if "lite0" in res:
        lt = res["lite0"]
        lines += [f"## EfficientNet-Lite0 int8, p99 ≤ 20 ms (machine: {lt['machine'] or 'unpriced'})", "",
                  "| backend | variant | scenario | estimate | 95% interval | shown to meet | cost/M at estimate | "
                  "cost/M guaranteed | stopped by | time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in lt["rows"]:
            lines.append(f"| {s['backend']} | {s['variant']} | {s['scenario']} | {f(s['estimate'], '.1f')} | "
                         f"[{f(s['low'], '.1f')}, {f(s['high'], '.1f')}] | {f(s['shown_to_meet'], '.1f')} | "
                         f"{f(s['cost_per_m_estimate'], '.4f')} | {f(s['cost_per_m_guaranteed'], '.4f')} | "
                         f"{s['stopped_by']} | {f((s['elapsed_s'] or 0) + (s['probe_s'] or 0), '.0f')} s |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--part", choices=["md1", "batched", "lite0"])
    ap.add_argument("--runs", type=int, default=1, help="md1: runs of --processes searches each")
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--budget", type=float, default=120.0, help="search_budget_s of every search")
    ap.add_argument("--summary", action="store_true", help="write capacity.json and capacity.md from what ran")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "md1":
        for _ in range(args.runs):
            run_suite(MD1_SUITE.format(processes=args.processes, budget=args.budget), args.out / "md1", True)
    elif args.part == "batched":
        run_suite(BATCHED_SUITE.format(processes=args.processes, budget=args.budget), args.out / "batched", True)
    elif args.part == "lite0":
        run_suite(LITE0_SUITE.format(budget=args.budget), args.out / "lite0", False)
    if args.summary:
        res: dict[str, Any] = {"host": platform.node(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        for part, fn in (("md1", md1_summary), ("batched", batched_summary), ("lite0", lite0_summary)):
            if (args.out / part / "results").exists():
                res[part] = fn(args.out / part)
        (args.out / "capacity.json").write_text(json.dumps(res, indent=2, default=str))
        (args.out / "capacity.md").write_text(markdown(res))
        print(markdown(res))


if __name__ == "__main__":
    main()
