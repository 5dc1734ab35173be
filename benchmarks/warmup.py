"""Is a fixed warm-up count enough? Steady-state detection on the raw samples that runs already keep.

    python benchmarks/warmup.py OUT RUN.jsonl [RUN.jsonl ...]

Every measured process keeps its single-stream latencies in the order they were taken, after the scenario's
fixed ``warmup_count`` queries. If that count stopped before the process was steady (caches, a JIT, a
thread pool still settling, the CPU's clock still ramping), the first samples run slow, the process's p50
is pulled up by however many of them there are, and launches that settle at different speeds disagree
more than they would once steady. So, for each process of each case:

- the drift of its first tenth: median of the first 10% of samples over the median of the rest;
- MSER-5 (White 1997, the truncation rule used in simulation output analysis): the cut, in batches of 5
  samples and within the first half, that minimises the variance of the kept batch means over the kept
  count squared; the samples it would drop are warm-up the fixed count missed;
- the p50 with that cut over the p50 without.

Per case, the spread between launches (max/min of the processes' p50s, and the ± of the case's 95% t
interval across processes) with and without the cut: what steady-state warm-up would be worth. Reads only;
prints and writes OUT/warmup.json and OUT/warmup.md. Contended processes are left out, as the run leaves them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from costbench.core.metrics import LATENCY
from costbench.harness.results.rounds import contended
from costbench.harness.results.runfile import RunFile

BATCH = 5  # MSER-5


def mser_cut(x: np.ndarray, batch: int = BATCH) -> int:
    """Samples to drop from the start: MSER over batch means, the cut searched within the first half."""
    m = len(x) // batch
    if m < 4:
        return 0
    means = x[: m * batch].reshape(m, batch).mean(axis=1)
    best, cut = math.inf, 0
    for d in range(m // 2 + 1):
        kept = means[d:]
        score = kept.var() / len(kept) ** 2 if len(kept) > 1 else math.inf
        if score < best:
            best, cut = score, d
    return cut * batch


def half_width(p50s: list[float]) -> float:
    """± of the 95% t interval of the geometric mean of the processes' p50s (relative, log scale)."""
    logs = np.log(p50s)
    n = len(logs)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * logs.std(ddof=1) / math.sqrt(n))


def analyse(paths: list[Path]) -> list[dict]:
    cases: dict[str, dict] = {}
    for path in paths:
        for rec in RunFile(path).cases():
            if rec.get("status") != "ok" or contended(rec):
                continue
            c = rec["case"]
            m = next((m for m in rec["metrics"] if m["metric"] == LATENCY.p50 and m.get("samples")), None)
            if m is None or c.get("scenario") not in ("single_stream", None):
                continue
            x = np.asarray(m["samples"], dtype=np.float64)
            cut = mser_cut(x)
            tenth = max(1, len(x) // 10)
            key = f"{path.stem} {c['model']} {c['variant']} {c['backend']}"
            row = cases.setdefault(key, {"run": path.stem, "model": c["model"], "variant": c["variant"],
                                         "backend": c["backend"], "processes": []})
            row["processes"].append({
                "samples": len(x), "first_tenth_drift": float(np.median(x[:tenth]) / np.median(x[tenth:]) - 1),
                "mser_cut": cut, "p50": float(np.median(x)), "p50_cut": float(np.median(x[cut:])),
            })
    out = []
    for row in cases.values():
        ps = row["processes"]
        p50, p50c = [p["p50"] for p in ps], [p["p50_cut"] for p in ps]
        row.update({
            "spread": max(p50) / min(p50), "spread_cut": max(p50c) / min(p50c),
            "half_width": half_width(p50), "half_width_cut": half_width(p50c),
            "median_drift": float(np.median([p["first_tenth_drift"] for p in ps])),
            "share_cut": sum(p["mser_cut"] for p in ps) / sum(p["samples"] for p in ps),
            "p50_change": float(np.median([p["p50_cut"] / p["p50"] - 1 for p in ps])),
        })
        out.append(row)
    return out


def markdown(rows: list[dict], argv: list[str]) -> str:
    lines = ["# Warm-up: is a fixed count enough?", "", f"`python benchmarks/warmup.py {' '.join(argv)}`", "",
             "Per case: processes, the median drift of a process's first tenth of samples against the rest, the "
             "share of samples MSER-5 would drop as warm-up, the median change of a process's p50 with that cut, "
             "and the spread between launches (max/min of the processes' p50s; ± of the 95% t interval) without "
             "and with the cut.", "",
             "| run | case | processes | first-tenth drift | MSER-5 drops | p50 change | max/min | with cut | ± | with cut |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['model']} {r['variant']} {r['backend']} | {len(r['processes'])} | "
                     f"{r['median_drift']:+.1%} | {r['share_cut']:.1%} | {r['p50_change']:+.2%} | "
                     f"{r['spread']:.3f} | {r['spread_cut']:.3f} | {r['half_width']:.1%} | {r['half_width_cut']:.1%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for warmup.json and warmup.md")
    ap.add_argument("runs", type=Path, nargs="+", help="run files (runs/<id>.jsonl) with single-stream cases")
    args = ap.parse_args()
    missing = [str(p) for p in args.runs if not p.is_file()]
    if missing:
        ap.error(f"no such run file: {', '.join(missing)}")
    rows = analyse(args.runs)
    if not rows:
        ap.error("no single-stream case with kept samples in these runs")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "warmup.json").write_text(json.dumps(rows, indent=1))
    md = markdown(rows, sys.argv[1:])
    (args.out / "warmup.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
