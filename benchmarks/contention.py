"""Contention benchmark: a CPU hog on every core for part of a run, against the same suite on a quiet machine.

    python benchmarks/contention.py OUT [--hog-s 6] [--gap-s 12] [--processes 5] [--max-processes 10]

Two runs of one suite (EfficientNet-Lite0 fp32 on ONNX Runtime and OpenVINO, one thread each, so a hog on
every core takes the measured thread's core as well as the spare one): first quiet, then with a hog that
starts one busy-looping process per core for ``--hog-s`` seconds every ``--gap-s`` seconds from a few seconds
into the run until it ends. The hog's intervals are kept on CLOCK_MONOTONIC, the clock each process's
contention window is read on (system-wide on Linux), so every measured window is set against them:

- detection: of the processes whose measured window the hog covered for at least a fifth, the share flagged
  contended (the harness's cpu_contention, others' CPU time over the window > 10% of the machine); and the
  false alarms among the windows it never touched;
- re-measurement: each case's result from its clean processes (the geometric mean of their p50s, as the run
  reports it) against the quiet run's, and how many processes each run spent.

Numbers are printed and written (OUT/contention.json, OUT/contention.md), never asserted. Run it on a machine
with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from costbench.core.metrics import CPU_CONTENTION, LATENCY
from costbench.harness.results.rounds import contended
from costbench.harness.results.runfile import RunFile

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
name = "contention-{which}"
description = "EfficientNet-Lite0 fp32, 1 thread, on onnxruntime and openvino: {which}"
models = ["efficientnet-lite0"]
variants = ["fp32"]
backends = [{{ name = "onnxruntime", threads = 1 }}, {{ name = "openvino", threads = 1 }}]
batch_sizes = [1]
accuracy = false
processes = {processes}
max_processes = {max_processes}
remeasure_contended = true

[[scenarios]]
kind = "single_stream"
warmup_count = 10
min_count = 100
min_duration_s = 2.0
"""
COVERED = 0.2  # a window the hog covered for at least this share of its length counts as overlapped


def _spin(stop: Any) -> None:
    """Burn one core until told to stop: the load a noisy neighbour puts on it."""
    while not stop.is_set():
        continue


class Hog:
    """One busy-looping process per core, on for ``on_s`` every ``every_s`` seconds, from ``delay_s`` until stopped."""

    def __init__(self, on_s: float, every_s: float, delay_s: float):
        self.on_s, self.every_s, self.delay_s = on_s, every_s, delay_s
        self.intervals: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        if self._done.wait(self.delay_s):
            return
        while not self._done.is_set():
            stop = mp.Event()
            procs = [mp.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count() or 1)]
            for p in procs:
                p.start()
            began = time.monotonic()
            self._done.wait(self.on_s)
            stop.set()
            for p in procs:
                p.join()
            self.intervals.append((began, time.monotonic()))
            self._done.wait(max(self.every_s - self.on_s, 0.0))

    def __enter__(self) -> "Hog":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def covered(self, start: float, end: float) -> float:
        """The share of [start, end] the hog was running."""
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.intervals)
        return overlap / (end - start) if end > start else 0.0


def run_suite(which: str, out: Path, processes: int, max_processes: int) -> Path:
    """``costbench run`` of the suite into OUT/<which>; the run file it wrote."""
    folder = out / which
    folder.mkdir(parents=True, exist_ok=True)
    suite = folder / "suite.toml"
    suite.write_text(SUITE.format(which=which, processes=processes, max_processes=max_processes))
    subprocess.run([sys.executable, "-m", "costbench.commands.cli", "run", str(suite), "--out", str(folder / "results")],
                   check=False, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    return max((folder / "results" / "runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def processes_of(run_file: Path) -> list[dict[str, Any]]:
    """Each measured process: case, p50 (ms), contention share, flag and window."""
    out = []
    for rec in RunFile(run_file).cases():
        if rec.get("status") != "ok":
            continue
        m = {x["metric"]: x for x in rec["metrics"]}
        c = m.get(CPU_CONTENTION)
        if c is None or LATENCY.p50 not in m:
            continue
        d = c.get("details") or {}
        start = d.get("window_start_monotonic_s")
        out.append({"case": rec["case"]["backend"], "process": rec["process"], "p50_ms": m[LATENCY.p50]["value"],
                    "share": c["value"], "contended": contended(rec),
                    "window": None if start is None else (start, start + d["window_s"])})
    return out


def case_results(procs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case: the geometric mean of its clean processes' p50s, and how many processes ran and were clean."""
    res: dict[str, dict[str, Any]] = {}
    for case in sorted({p["case"] for p in procs}):
        mine = [p for p in procs if p["case"] == case]
        clean = [p["p50_ms"] for p in mine if not p["contended"]]
        gm = math.exp(sum(math.log(x) for x in clean) / len(clean)) if clean else math.nan
        res[case] = {"p50_ms": gm, "processes": len(mine), "clean": len(clean)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--hog-s", type=float, default=6.0, help="seconds the hog runs each time")
    ap.add_argument("--gap-s", type=float, default=12.0, help="seconds from one hog start to the next")
    ap.add_argument("--delay-s", type=float, default=8.0, help="seconds after the run starts before the first hog")
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--max-processes", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    quiet = processes_of(run_suite("quiet", args.out, args.processes, args.max_processes))
    with Hog(args.hog_s, args.gap_s, args.delay_s) as hog:
        hogged = processes_of(run_suite("hogged", args.out, args.processes, args.max_processes))
    for p in hogged:
        p["covered"] = hog.covered(*p["window"]) if p["window"] else None
    overlapped = [p for p in hogged if p["covered"] is not None and p["covered"] >= COVERED]
    untouched = [p for p in hogged if p["covered"] == 0.0]
    q, h = case_results(quiet), case_results(hogged)
    res = {
        "hog": {"on_s": args.hog_s, "every_s": args.gap_s, "intervals": len(hog.intervals), "cores": os.cpu_count()},
        "detected": sum(p["contended"] for p in overlapped), "overlapped": len(overlapped),
        "false_alarms": sum(p["contended"] for p in untouched), "untouched": len(untouched),
        "quiet_false_alarms": sum(p["contended"] for p in quiet), "quiet_processes": len(quiet),
        "cases": {c: {"quiet": q.get(c), "hogged": h[c],
                      "ratio": h[c]["p50_ms"] / q[c]["p50_ms"] if c in q else None} for c in h},
        "processes": hogged,
    }
    lines = [f"hog: {len(hog.intervals)} times {args.hog_s:g} s on {os.cpu_count()} cores, every {args.gap_s:g} s",
             f"detected: {res['detected']} of {res['overlapped']} processes whose window the hog covered >= "
             f"{COVERED:.0%}; false alarms: {res['false_alarms']} of {res['untouched']} windows it never touched, "
             f"{res['quiet_false_alarms']} of {res['quiet_processes']} in the quiet run",
             "", "| case | quiet p50 ms (clean/processes) | hogged p50 ms (clean/processes) | hogged / quiet |",
             "| --- | --- | --- | --- |"]
    for c, v in res["cases"].items():
        qq, hh = v["quiet"] or {}, v["hogged"]
        lines.append(f"| {c} | {qq.get('p50_ms', math.nan):.3f} ({qq.get('clean')}/{qq.get('processes')}) | "
                     f"{hh['p50_ms']:.3f} ({hh['clean']}/{hh['processes']}) | "
                     f"{v['ratio']:.3f} |" if v["ratio"] else f"| {c} | - | - | - |")
    lines += ["", "| case | process | covered | share | flagged | p50 ms |", "| --- | ---: | ---: | ---: | --- | ---: |"]
    for p in hogged:
        cov = "-" if p["covered"] is None else f"{p['covered']:.0%}"
        lines.append(f"| {p['case']} | {p['process']} | {cov} | {p['share']:.1%} | {p['contended']} | {p['p50_ms']:.3f} |")
    (args.out / "contention.json").write_text(json.dumps(res, indent=2))
    (args.out / "contention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
