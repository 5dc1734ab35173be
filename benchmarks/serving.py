"""Serving benchmark (issue 18): the capacity search against queueing theory, dynamic batching on a real
model, and the load generator's issue rate. Writes serving.json and serving.md to OUT.

    python benchmarks/serving.py OUT [--quick] [--repeats 5] [--min-count 5000] [--skip PART ...]

Parts (each can be skipped with --skip):

- ``md1``: a session that busy-waits 1 ms per query is an M/D/1 queue. Its model (Erlang's waiting-time
  distribution with the measured service time D) gives the mean and p99 latency at 500 queries/s and
  the capacity at p99 ≤ 5 ms (about 560 queries/s). Measured: one fixed-rate run at 500 queries/s,
  ``--repeats`` searches (seeds 0..), each capacity estimate and interval against the model (goal:
  within 3%, 5 of 5), and searches with min_count 200 and the issue's min_count 3000 / min_duration_s 4,
  plus a fixed 20 queries/s run with that count (never 0, never "overloaded").
- ``models``: EfficientNet-Lite0 int8 on ONNX Runtime (``int8``, QDQ ONNX) and OpenVINO (``int8-nncf``,
  IR) through ``costbench run``: the sustained rate within p99 ≤ 20 ms with and without dynamic
  batching, and the cost per million inferences each implies (the report's machine inference and
  price table).
- ``issue``: the load generator at 5,000 (and 1,000) queries/s against a no-op session: scheduler
  lateness p99 (goal < 100 µs at 5,000) and the achieved rate.

Numbers are printed and written, never asserted. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from costbench.core.stats import percentile
from costbench.harness.measure.queue_model import md1_capacity, md1_latency_quantile
from costbench.harness.measure.scenarios.registry import make_scenario
from costbench.harness.build.zoo.base import SampleSet

DATA = SampleSet({"x": np.zeros((64, 4), dtype=np.float32)})
SLO_MS, SLO_P = 5.0, 99.0
MODEL_SLO_MS = 20.0

# The two sessions of known cost (a no-op, an exact busy-wait) are the overhead benchmark's.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import BusyWait, Noop  # noqa: E402


# --- M/D/1 -------------------------------------------------------------------------------------

def md1_part(args) -> dict:
    session = BusyWait(1e-3)
    ss = make_scenario({"kind": "single_stream", "warmup_count": 100, "min_count": 3000, "min_duration_s": 1}).run(
        session, DATA, 1)
    d = percentile(ss.samples_ns, 50) / 1e9
    model_cap = md1_capacity(SLO_MS / 1e3, SLO_P, d)
    out: dict = {"service_time_ms": d * 1e3, "model_capacity_qps": model_cap, "slo": f"p{SLO_P:g} <= {SLO_MS} ms"}
    print(f"M/D/1: measured service time D = {d * 1e3:.4f} ms; model capacity at p99 <= 5 ms: {model_cap:.1f} q/s")

    count = 5000 if args.quick else 30000
    fixed = make_scenario({"kind": "server", "target_qps": 500, "slo_ms": SLO_MS, "min_count": count,
                           "min_duration_s": 0, "seed": 1}).run(session, DATA, 1)
    lat = np.asarray(fixed.samples_ns) / 1e6
    rho = 500 * d
    model_mean = (d + rho * d / (2 * (1 - rho))) * 1e3  # Pollaczek-Khinchine for deterministic service
    out["fixed_500"] = {"queries": fixed.queries, "mean_ms": float(lat.mean()), "p99_ms": percentile(lat, 99),
                        "model_mean_ms": model_mean, "model_p99_ms": md1_latency_quantile(99, 500, d) * 1e3,
                        "lateness_p99_us": percentile(fixed.series_ns["scheduler_lateness"], 99) / 1e3}
    f = out["fixed_500"]
    print(f"  500 q/s, {f['queries']} queries: mean {f['mean_ms']:.3f} ms (model {f['model_mean_ms']:.3f}), "
          f"p99 {f['p99_ms']:.3f} ms (model {f['model_p99_ms']:.3f})")

    searches = []
    for seed in range(args.repeats):
        t0 = time.perf_counter()
        r = make_scenario({"kind": "server", "search": True, "slo_ms": SLO_MS, "min_count": args.min_count,
                           "min_duration_s": 0, "seed": seed * 1000}).run(session, DATA, 1)
        summary = r.details["search_summary"]
        low, high = summary["interval"]
        est = summary.get("estimate_qps")
        row = {"seed": seed * 1000, "max_qps_within_slo": summary["max_qps"], "estimate_qps": est,
               "interval": [low, high], "trials": len(r.details["search"]), "seconds": time.perf_counter() - t0,
               "error": None if est is None else est / model_cap - 1,
               "interval_contains_model": high is not None and low <= model_cap <= high, "valid": r.valid,
               "notes": r.notes}
        row["within_3pct"] = row["error"] is not None and abs(row["error"]) <= 0.03
        searches.append(row)
        err = "-" if est is None else format(row["error"], "+.2%")
        print(f"  search seed {row['seed']}: capacity {est if est is None else round(est, 1)} q/s "
              f"[{low:.1f}, {high if high is None else round(high, 1)}], error {err}, {row['trials']} trials, "
              f"{row['seconds']:.0f} s")
    out["searches"] = searches
    out["searches_within_3pct"] = sum(s["within_3pct"] for s in searches)
    out["searches_containing_model"] = sum(s["interval_contains_model"] for s in searches)

    never_zero = []
    cases = [(200, 2.0, 10.0 if args.quick else 60.0), (3000, 4.0, 10.0 if args.quick else 60.0)]
    for min_count, min_dur, max_dur in cases:
        r = make_scenario({"kind": "server", "search": True, "slo_ms": SLO_MS, "min_count": min_count,
                           "min_duration_s": min_dur, "max_duration_s": max_dur, "seed": 7}).run(session, DATA, 1)
        never_zero.append({"min_count": min_count, "min_duration_s": min_dur, "max_duration_s": max_dur, "search": True,
                           "max_qps_within_slo": r.scalars["max_qps_within_slo"][0],
                           "interval": r.details["search_summary"]["interval"]})
        print(f"  search min_count={min_count} min_duration_s={min_dur}: max within SLO "
              f"{never_zero[-1]['max_qps_within_slo']:.1f} q/s")
    low_max = 5.0 if args.quick else 60.0
    r = make_scenario({"kind": "server", "target_qps": 20, "slo_ms": SLO_MS, "min_count": 3000,
                       "min_duration_s": 4, "max_duration_s": low_max, "seed": 7}).run(session, DATA, 1)
    never_zero.append({"min_count": 3000, "min_duration_s": 4, "max_duration_s": low_max, "target_qps": 20,
                       "queries": r.queries, "slo_met": bool(r.scalars["slo_met"][0]),
                       "p99_ms": r.scalars["slo_latency"][0], "notes": r.notes})
    print(f"  20 q/s, min_count 3000, max_duration_s {low_max:g}: {r.queries} queries, p99 "
          f"{r.scalars['slo_latency'][0]:.3f} ms, SLO met: {bool(r.scalars['slo_met'][0])}")
    out["never_zero"] = never_zero
    return out


# --- EfficientNet-Lite0 ------------------------------------------------------------------------

SUITE = """name = "serving-lite0"
description = "EfficientNet-Lite0 int8 on ONNX Runtime and OpenVINO: sustained rate within p99 <= {slo} ms, with and without dynamic batching"
batch_sizes = [1]
timeout_s = 3600
processes = 1  # a search is itself a dozen trials; one process per case keeps its trials and its answer together
models = ["efficientnet-lite0"]
variants = ["int8", "int8-nncf"]
backends = [{{ name = "onnxruntime" }}, {{ name = "openvino", hint = "latency" }}]
exclude = [{{ variant = "int8-nncf", backend = "onnxruntime" }}, {{ variant = "int8", backend = "openvino" }}]

[[scenarios]]
kind = "single_stream"
min_count = 200
min_duration_s = 1.0

[[scenarios]]
kind = "server"
name = "server"
search = true
slo_ms = {slo}
min_count = {count}
min_duration_s = {dur}

[[scenarios]]
kind = "server"
name = "server-batched"
search = true
slo_ms = {slo}
min_count = {count}
min_duration_s = {dur}
max_batch = {max_batch}
max_queue_delay_ms = {delay}
"""


def models_part(args, out_dir: Path) -> dict:
    from costbench.harness.reports.prices import cost_per_million
    from costbench.harness.results.store import load_results

    suite = out_dir / "serving-lite0.toml"
    count, dur = (300, 0.5) if args.quick else (2000, 2.0)
    suite.write_text(SUITE.format(slo=MODEL_SLO_MS, count=count, dur=dur, max_batch=args.max_batch,
                                  delay=args.max_queue_delay_ms))
    results = out_dir / "results"
    subprocess.run(["costbench", "run", str(suite), "--out", str(results)], check=True)
    report = out_dir / "report"
    subprocess.run(["costbench", "report", "last", "--results", str(results), "--out", str(report)], check=True)
    import pandas as pd

    configs = pd.read_csv(report / "report.csv")
    df = load_results(results)
    df = df[df["run_id"] == df["run_id"].iloc[-1]]
    rows = []
    for (backend, variant), g in df.groupby(["backend", "variant"]):
        hourly = configs[(configs["backend"] == backend) & (configs["variant"] == variant)]["hourly"]
        hourly = None if hourly.empty or pd.isna(hourly.iloc[0]) else float(hourly.iloc[0])
        row = {"backend": backend, "variant": variant, "hourly": hourly}
        for label in ("server", "server-batched"):
            m = g[(g["scenario"] == label) & (g["metric"] == "max_qps_within_slo")]
            hist = g[(g["scenario"] == label) & (g["metric"] == "mean_batch_size")]
            qps = float(m["value"].iloc[0]) if len(m) else None

            def metric(name: str) -> float | None:
                v = g[(g["scenario"] == label) & (g["metric"] == name)]["value"]
                return float(v.iloc[0]) if len(v) else None

            row[label] = {"max_qps_within_slo": qps, "cost_per_million": cost_per_million(hourly, qps),
                          "capacity_interval": [metric("capacity_ci_low"), metric("capacity_ci_high")],
                          "valid": bool(m["valid"].iloc[0]) if len(m) else None,
                          "mean_batch_size": float(hist["value"].iloc[0]) if len(hist) else None,
                          "status": "ok" if len(m) else "; ".join(sorted(set(g[g["scenario"] == label]["reason"]
                                                                              .dropna().astype(str))))}
        rows.append(row)
        print(f"  {backend} {variant}: " + ", ".join(
            f"{label} {row[label]['max_qps_within_slo']} q/s, {row[label]['cost_per_million']} per M"
            for label in ("server", "server-batched")))
    machine = configs["machine"].dropna().iloc[0] if "machine" in configs and configs["machine"].notna().any() else None
    return {"slo": f"p99 <= {MODEL_SLO_MS} ms", "max_batch": args.max_batch,
            "max_queue_delay_ms": args.max_queue_delay_ms, "machine": machine, "rows": rows,
            "report": str(report / "report.html")}


# --- the load generator's issue rate -----------------------------------------------------------

def issue_part(args) -> dict:
    out = {}
    for qps in (1000, 5000):
        count = int(qps * (2 if args.quick else 10))
        r = make_scenario({"kind": "server", "target_qps": qps, "slo_ms": 1000, "min_count": count,
                           "min_duration_s": 0, "warmup_count": 100, "seed": 3}).run(Noop(), DATA, 1)
        late = np.asarray(r.series_ns["scheduler_lateness"])
        out[str(qps)] = {"queries": r.queries, "achieved_qps": r.scalars["achieved_qps"][0],
                         "lateness_p50_us": percentile(late, 50) / 1e3, "lateness_p99_us": percentile(late, 99) / 1e3,
                         "lateness_max_us": float(late.max()) / 1e3}
        o = out[str(qps)]
        print(f"  no-op at {qps} q/s: achieved {o['achieved_qps']:.0f} q/s, lateness p50 {o['lateness_p50_us']:.1f} µs,"
              f" p99 {o['lateness_p99_us']:.1f} µs (goal < 100 µs)")
    return out


def markdown(res: dict) -> str:
    lines = [f"# Serving benchmark ({res['host']}, {res['when']})", ""]
    if "md1" in res:
        m = res["md1"]
        f = m["fixed_500"]
        lines += ["## 1-ms backend against the M/D/1 model", "",
                  f"Service time D = {m['service_time_ms']:.4f} ms; model capacity at {m['slo']}: "
                  f"{m['model_capacity_qps']:.1f} queries/s.", "",
                  f"At 500 queries/s ({f['queries']} queries): mean {f['mean_ms']:.3f} ms (model {f['model_mean_ms']:.3f}),"
                  f" p99 {f['p99_ms']:.3f} ms (model {f['model_p99_ms']:.3f}).", "",
                  "| seed | capacity estimate | interval | error vs model | within 3% | interval holds model | trials "
                  "| valid |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in m["searches"]:
            low, high = s["interval"]
            est = "-" if s["estimate_qps"] is None else f"{s['estimate_qps']:.1f}"
            err = "-" if s["error"] is None else f"{s['error']:+.2%}"
            hi = "-" if high is None else format(high, ".1f")
            lines.append(f"| {s['seed']} | {est} | [{low:.1f}, {hi}] | {err} | "
                         f"{s['within_3pct']} | {s['interval_contains_model']} | {s['trials']} | {s['valid']} |")
        lines += ["", f"Within 3%: {m['searches_within_3pct']} of {len(m['searches'])}; interval holds the model: "
                  f"{m['searches_containing_model']} of {len(m['searches'])}. (valid = false: the harness found its "
                  "load generator behind schedule, i.e. a busy machine.)", "", "Never 0:", ""]
        for z in m["never_zero"]:
            if z.get("search"):
                lines.append(f"- search, min_count {z['min_count']}, min_duration_s {z['min_duration_s']}: "
                             f"{z['max_qps_within_slo']:.1f} queries/s")
            else:
                lines.append(f"- fixed {z['target_qps']} queries/s, min_count {z['min_count']}, max_duration_s "
                             f"{z['max_duration_s']:g}: {z['queries']} queries, p99 {z['p99_ms']:.3f} ms, "
                             f"SLO met: {z['slo_met']}")
        lines.append("")
    if "models" in res:
        m = res["models"]
        lines += [f"## EfficientNet-Lite0 int8, {m['slo']} (machine: {m['machine'] or 'unpriced'})", "",
                  f"Batched: max_batch {m['max_batch']}, max_queue_delay_ms {m['max_queue_delay_ms']}.", "",
                  "| backend | variant | q/s unbatched | interval | cost/M unbatched | q/s batched | interval | mean batch "
                  "| cost/M batched | valid (unbatched/batched) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

        def f(v, spec):
            return "-" if v is None else format(v, spec)

        def interval(x):
            low, high = x.get("capacity_interval") or (None, None)
            return f"[{f(low, '.1f')}, {f(high, '.1f')}]"

        for r in m["rows"]:
            u, b = r["server"], r["server-batched"]
            lines.append(f"| {r['backend']} | {r['variant']} | {f(u['max_qps_within_slo'], '.1f')} | {interval(u)} | "
                         f"{f(u['cost_per_million'], '.4f')} | {f(b['max_qps_within_slo'], '.1f')} | {interval(b)} | "
                         f"{f(b['mean_batch_size'], '.2f')} | {f(b['cost_per_million'], '.4f')} | "
                         f"{u.get('valid')}/{b.get('valid')} |")
        lines.append("")
    if "issue" in res:
        lines += ["## Load generator issue rate (no-op backend)", "", "| rate | achieved | lateness p50 | p99 | max |",
                  "| --- | --- | --- | --- | --- |"]
        for qps, o in res["issue"].items():
            lines.append(f"| {qps} | {o['achieved_qps']:.0f} | {o['lateness_p50_us']:.1f} µs | "
                         f"{o['lateness_p99_us']:.1f} µs | {o['lateness_max_us']:.1f} µs |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for serving.json, serving.md (and the model run's results)")
    ap.add_argument("--quick", action="store_true", help="short runs, to check the script works (noisy numbers)")
    ap.add_argument("--repeats", type=int, default=5, help="capacity searches of the 1-ms backend")
    ap.add_argument("--min-count", type=int, default=5000, help="queries per search trial of the 1-ms backend")
    ap.add_argument("--max-batch", type=int, default=8, help="dynamic batching of the model runs")
    ap.add_argument("--max-queue-delay-ms", type=float, default=4.0, help="dynamic batching of the model runs")
    ap.add_argument("--skip", nargs="*", default=[], choices=["md1", "models", "issue"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"host": platform.node(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    if "issue" not in args.skip:
        print("issue rate:")
        res["issue"] = issue_part(args)
    if "md1" not in args.skip:
        res["md1"] = md1_part(args)
    if "models" not in args.skip:
        print("EfficientNet-Lite0 int8:")
        res["models"] = models_part(args, args.out)
    (args.out / "serving.json").write_text(json.dumps(res, indent=2, default=str))
    (args.out / "serving.md").write_text(markdown(res))
    print(f"wrote {args.out / 'serving.json'} and {args.out / 'serving.md'}")


if __name__ == "__main__":
    main()
