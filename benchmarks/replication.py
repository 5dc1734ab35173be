"""Does the regression gate hold? A/A false alarms, sensitivity to planted slowdowns, and the smoke suite's wall time.

    python benchmarks/replication.py OUT_DIR [--aa-pairs 10] [--trials 20] [--processes 5] [--parts aa,sensitivity,smoke,real,real-ab]
                                             [--smoke-only KEY=GLOB ...] [--real-trials 20] [--quick] [--work DIR]

Writes ``OUT_DIR/replication.json`` and ``OUT_DIR/replication.md`` (commit them under ``results/reference/``).
Never asserts: it measures and reports, with counts. Issue 17's goals are printed beside each number.

(a) **A/A.** ``--aa-pairs + 1`` runs of a reduced smoke suite (digits-cnn and EfficientNet-Lite0; fp32 and
    int8; ONNX Runtime, OpenVINO, torch; single-stream) on one commit, one machine, with the compare-grade
    default (``processes`` as given, 5 by default). Each consecutive pair goes through ``costbench compare
    --fail-on-regression``: how many pairs exit 0, and the share of series flagged (regressed or improved)
    against the nominal false-discovery rate (Benjamini–Hochberg at q < 0.002). For contrast, the same
    runs are judged the old way too: each case's first process alone, tested on its raw samples.
(b) **Sensitivity.** A test plugin backend with a set latency (``tests/plugins/sleepy_backend.py``: 1 ms a
    query, a per-process factor exp(N(0, 1.5%²)) to mimic launch-to-launch variation) in three series:
    +10%, +5% and +0% planted. Runs alternate unplanted/planted; each consecutive pair is a trial (planted
    after unplanted: "regressed" expected; unplanted after planted: "improved"). Reported: how often +10%
    is called (goal >= 95%), +5%'s ratio and interval in each trial and how often it passes the 5% threshold,
    and false alarms on the +0% series.
(c) **Smoke wall time.** ``suites/smoke.toml`` with its own settings, against the same cases measured as
    before replication (one process, 1 s measuring), both with a warm cache.
    Goal: within 1.5x.
(d) **Power on real cases** (``--parts real``, not in the default). EfficientNet-Lite0 fp32 on ONNX Runtime,
    OpenVINO and LiteRT, one thread each, every session wrapped by ``tests/plugins/slowed_backend.py`` so a run
    can make each call take 1.10 times its own duration. ``--real-trials + 1`` runs alternate unplanted and
    planted: each consecutive pair is a power trial (issue 28's goal: +10% called in >= 90%), and runs two
    apart are identical, so they are A/A pairs in the same window (goal: flags within the nominal FDR).
(e) **The same, side by side** (``--parts real-ab``, not in the default). Each trial is one ``costbench ab``:
    BASE and NEW alternate process by process in one window, with its two looks. ``--real-trials`` power
    trials (NEW planted +10%) are spread evenly among ``--real-aa`` A/A trials (the unplanted suite on both sides).

Duration on a quiet 2-vCPU machine with a warm cache: (a) 10 cases x 5 processes, about 1.5–2 min a run,
so 17–25 min for 10 pairs; (b) 3 cases x 5 processes, about 25 s a run, about 9 min for 20 trials; (c) one
warm-up and two timed runs of each smoke suite, about 10 min. About 40 min in all ((d): 3 cases x 5 processes,
about 1 min a run, 20-25 min for 20 trials); a cold cache adds the
builds (about 5 min, mostly ExecuTorch programs). ``--parts`` runs some; ``--quick`` checks the script in
about a minute (not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from costbench.core.metrics import LATENCY
from costbench.harness.results.store import RunFile

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"
NOMINAL_FDR = 0.002  # compare's BH level (docs/architecture.md)

AA_SUITE = """
name = "aa-smoke"
description = "issue 17 A/A: the smoke models, fp32 and int8, three CPU backends, single-stream"
models = {models}
variants = ["fp32", "int8"]
backends = {backends}
processes = {processes}
timeout_s = 600
[[scenarios]]
kind = "single_stream"
warmup_count = 10
min_count = 100
min_duration_s = {duration}
"""
AA_FULL = {"models": '["digits-cnn", "efficientnet-lite0"]', "duration": 1.0,
           "backends": '[{name = "onnxruntime"}, {name = "openvino", hint = "latency"}, {name = "torch"}]'}
AA_QUICK = {"models": '["digits-cnn"]', "duration": 0.1, "backends": '[{name = "onnxruntime"}]'}

SLEEPY_SUITE = """
name = "sleepy"
description = "issue 17 sensitivity: a backend with a set latency and planted slowdowns"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [
  {{name = "sleepy", label = "plus10", base_ms = 1.0, slowdown = {s10}, process_sd = 0.015}},
  {{name = "sleepy", label = "plus5", base_ms = 1.0, slowdown = {s5}, process_sd = 0.015}},
  {{name = "sleepy", label = "plus0", base_ms = 1.0, slowdown = 0.0, process_sd = 0.015}},
]
processes = {processes}
accuracy = false
timeout_s = 300
[[scenarios]]
kind = "single_stream"
warmup_count = 20
min_count = 200
min_duration_s = {duration}
"""


# (d): the smoke suite's one-thread EfficientNet-Lite0 cases on three real runtimes, each wrapped so a run can plant
# a slowdown of each call's own duration (tests/plugins/slowed_backend.py). Labels keep the series the same across
# planted and unplanted runs; the one-thread setting is the smoke suite's (suites/smoke.toml says why).
REAL_SUITE = """
name = "real-power"
description = "issue 28 power on real cases: EfficientNet-Lite0 on ONNX Runtime, OpenVINO and LiteRT, planted {planted}"
models = ["efficientnet-lite0"]
variants = ["fp32", "tflite-fp32"]
backends = [
  {{name = "slowed-onnxruntime", label = "onnxruntime", threads = 1, slowdown = {s}}},
  {{name = "slowed-openvino", label = "openvino", hint = "latency", threads = 1, slowdown = {s}}},
  {{name = "slowed-litert", label = "litert", threads = 1, slowdown = {s}}},
]
exclude = [{{variant = "tflite-*", backend = "[!l]*"}}, {{variant = "[!t]*", backend = "litert"}}]
processes = {processes}
accuracy = false
timeout_s = 600
[[scenarios]]
kind = "single_stream"
warmup_count = 10
min_count = 100
min_duration_s = {duration}
"""
PLUGIN_BACKENDS = ("sleepy=sleepy_backend:SleepyBackend,slowed-onnxruntime=slowed_backend:SlowedOnnxRuntime,"
                   "slowed-openvino=slowed_backend:SlowedOpenVino,slowed-litert=slowed_backend:SlowedLiteRT")


def env_with_plugins() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), env.get("PYTHONPATH")]))
    env["COSTBENCH_EXTRA_BACKENDS"] = PLUGIN_BACKENDS
    env["COLUMNS"] = "200"
    return env


def costbench(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", *args], capture_output=True, text=True,
                          env=env or env_with_plugins())
    if check and proc.returncode not in (0, 1):
        raise RuntimeError(f"costbench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_suite(suite: Path, out: Path, *extra: str) -> tuple[str, float]:
    """Run a suite with the CLI; (run id, wall seconds)."""
    before = set((out / "runs").glob("*.jsonl")) if (out / "runs").exists() else set()
    t0 = time.perf_counter()
    proc = costbench("run", str(suite), "--out", str(out), *extra)
    wall = time.perf_counter() - t0
    (new,) = set((out / "runs").glob("*.jsonl")) - before
    if proc.returncode != 0:
        print(f"  warning: {suite.name} had failed cases (exit {proc.returncode}); see {new}", flush=True)
    return new.stem, wall


def compare(out: Path, base: str, new: str, work: Path) -> tuple[int, dict]:
    """``costbench compare --fail-on-regression``: (exit code, its JSON)."""
    js = work / f"cmp-{base}-{new}.json"
    proc = costbench("compare", base, new, "-r", str(out), "--fail-on-regression", "--json", str(js))
    return proc.returncode, json.loads(js.read_text())


def single_process_verdicts(out: Path, base: str, new: str) -> dict[str, int]:
    """The old way, for contrast: each case's first process only, Mann–Whitney on its raw samples, BH, ±5%."""
    from costbench.core.stats import SIGNIFICANCE_ALPHA, benjamini_hochberg, compare_samples

    def first_process(run_id: str) -> dict[tuple, np.ndarray]:
        series = {}
        for rec in RunFile(out / "runs" / f"{run_id}.jsonl").cases():
            if rec["status"] != "ok" or (rec.get("process") or 0) != 0:
                continue
            for m in rec["metrics"]:
                if m["metric"] == LATENCY.p50 and m.get("samples"):
                    series[(rec["case"]["case_id"])] = np.asarray(m["samples"])
        return series

    b, n = first_process(base), first_process(new)
    comps = [compare_samples(b[k], n[k]) for k in b if k in n]
    qs = benjamini_hochberg([c.p_value for c in comps])
    flagged = [c for c, q in zip(comps, qs) if q < SIGNIFICANCE_ALPHA and abs(np.log(c.ratio)) >= np.log(1.05)]
    return {"series": len(comps), "flagged": len(flagged), "regressed": sum(c.ratio > 1 for c in flagged)}


def alternating_runs(suites: dict[bool, Path], out: Path, warm: Path, trials: int) -> list[dict]:
    """One unplanted run (one process) to warm the cache, then ``trials + 1`` runs, unplanted first and then
    alternating: each consecutive pair is a trial."""
    run_suite(suites[False], warm, "--processes", "1")
    runs = []
    for i in range(trials + 1):
        planted = i % 2 == 1
        run_id, wall = run_suite(suites[planted], out)
        runs.append({"run_id": run_id, "planted": planted, "wall_s": wall})
        print(f"  run {i + 1}/{trials + 1} ({'planted' if planted else 'unplanted'}): {run_id} in {wall:.0f} s",
              flush=True)
    return runs


def planted_over_unplanted(series: dict, planted_is_new: bool) -> tuple[float, float, float]:
    """A compare series' ratio and 95% interval as planted over unplanted, whichever run came first."""
    if planted_is_new:
        return series["ratio"], series["ratio_ci_low"], series["ratio_ci_high"]
    return 1 / series["ratio"], 1 / series["ratio_ci_high"], 1 / series["ratio_ci_low"]


def real_suites(work: Path, name: str, processes: int, quick: bool) -> dict[bool, Path]:
    """REAL_SUITE unplanted (False) and with +10% planted (True), written under ``work`` as ``name-*.toml``."""
    suites = {}
    for planted in (False, True):
        p = work / f"{name}-{'planted' if planted else 'base'}.toml"
        p.write_text(REAL_SUITE.format(planted="+10%" if planted else "nothing", s=0.10 if planted else 0.0,
                                       processes=processes, duration=0.1 if quick else 0.5))
        suites[planted] = p
    return suites


def p50_series(js: dict) -> dict:
    """A compare JSON's p50 series by backend label."""
    return {s["backend"]: s for s in js["series"] if s["metric"] == LATENCY.p50}


def part_aa(work: Path, pairs: int, processes: int, quick: bool) -> dict:
    suite = work / "aa-smoke.toml"
    suite.write_text(AA_SUITE.format(processes=processes, **(AA_QUICK if quick else AA_FULL)))
    out = work / "aa"
    print(f"(a) A/A: {pairs + 1} runs of {suite.name}, processes = {processes}; warming the cache...", flush=True)
    run_suite(suite, work / "aa-warm", "--processes", "1")
    runs = []
    for i in range(pairs + 1):
        run_id, wall = run_suite(suite, out)
        runs.append({"run_id": run_id, "wall_s": wall})
        print(f"  run {i + 1}/{pairs + 1}: {run_id} in {wall:.0f} s", flush=True)
    results = []
    for a, b in zip(runs, runs[1:]):
        code, js = compare(out, a["run_id"], b["run_id"], work)
        old = single_process_verdicts(out, a["run_id"], b["run_id"])
        flagged = [s for s in js["series"] if s["verdict"] in ("regressed", "improved")]
        results.append({"base": a["run_id"], "new": b["run_id"], "exit_code": code, "counts": js["counts"],
                        "series": len(js["series"]), "flagged": len(flagged),
                        "flagged_series": [{"label": s["label"], "verdict": s["verdict"], "ratio": s["ratio"],
                                            "q": s["q_value"]} for s in flagged],
                        "methods": sorted({s["method"] for s in js["series"]}),
                        "max_abs_log_ratio": max((abs(np.log(s["ratio"])) for s in js["series"]), default=0.0),
                        "single_process": old})
        print(f"  {a['run_id']} -> {b['run_id']}: exit {code}, {len(flagged)} of {len(js['series'])} flagged "
              f"(single-process way: {old['flagged']} of {old['series']})", flush=True)
    series = sum(r["series"] for r in results)
    flagged = sum(r["flagged"] for r in results)
    old_series = sum(r["single_process"]["series"] for r in results)
    old_flagged = sum(r["single_process"]["flagged"] for r in results)
    return {"processes": processes, "runs": runs, "pairs": results,
            "pairs_exit_0": sum(r["exit_code"] == 0 for r in results), "pair_count": len(results),
            "series_compared": series, "series_flagged": flagged, "share_flagged": flagged / series if series else None,
            "nominal_fdr": NOMINAL_FDR,
            "single_process_way": {"series_compared": old_series, "series_flagged": old_flagged,
                                   "pairs_with_a_flag": sum(r["single_process"]["flagged"] > 0 for r in results)}}


def part_sensitivity(work: Path, trials: int, processes: int, quick: bool) -> dict:
    out = work / "sens"
    suites = {}
    for planted in (False, True):
        p = work / f"sleepy-{'planted' if planted else 'base'}.toml"
        p.write_text(SLEEPY_SUITE.format(s10=0.10 if planted else 0.0, s5=0.05 if planted else 0.0, processes=processes,
                                         duration=0.1 if quick else 0.5))
        suites[planted] = p
    print(f"(b) sensitivity: {trials + 1} runs alternating unplanted/planted, processes = {processes}", flush=True)
    runs = alternating_runs(suites, out, work / "sens-warm", trials)
    rows = []
    for a, b in zip(runs, runs[1:]):
        code, js = compare(out, a["run_id"], b["run_id"], work)
        by = {s["backend"]: s for s in js["series"] if s["metric"] == LATENCY.p50}
        expect = "regressed" if b["planted"] else "improved"
        sign = 1 if b["planted"] else -1
        row = {"base": a["run_id"], "new": b["run_id"], "expected": expect, "exit_code": code}
        for label, size in (("plus10", 0.10), ("plus5", 0.05), ("plus0", 0.0)):
            s = by.get(label)
            if s is None:
                row[label] = None
                continue
            # Express every trial as planted/unplanted, so the numbers read as the slowdown.
            ratio, lo, hi = planted_over_unplanted(s, sign > 0)
            row[label] = {"verdict": s["verdict"], "planted_over_unplanted": ratio, "ci": [lo, hi],
                          "q": s["q_value"], "called": s["verdict"] == (expect if size else "unchanged"),
                          "covers_truth": lo <= 1 + size <= hi}
        rows.append(row)
        print(f"  trial {len(rows)} ({expect}): +10% {row['plus10'] and row['plus10']['verdict']}, "
              f"+5% ×{row['plus5'] and row['plus5']['planted_over_unplanted']:.3f} "
              f"{row['plus5'] and row['plus5']['verdict']}, +0% {row['plus0'] and row['plus0']['verdict']}", flush=True)

    def rate(label: str, key: str) -> tuple[int, int]:
        got = [r[label][key] for r in rows if r[label] is not None]
        return sum(got), len(got)

    d10, n10 = rate("plus10", "called")
    d5, n5 = rate("plus5", "called")
    c5, m5 = rate("plus5", "covers_truth")
    c10, m10 = rate("plus10", "covers_truth")
    fa, n0 = rate("plus0", "called")  # "called" for +0% means "unchanged"
    r5 = [r["plus5"]["planted_over_unplanted"] for r in rows if r["plus5"]]
    return {"processes": processes, "runs": runs, "trials": rows,
            "plus10_detected": d10, "plus10_trials": n10, "plus10_rate": d10 / n10 if n10 else None,
            "plus10_interval_covers_1.10": [c10, m10],
            "plus5_detected": d5, "plus5_trials": n5, "plus5_interval_covers_1.05": [c5, m5],
            "plus5_ratio_median": float(np.median(r5)) if r5 else None,
            "plus5_ratio_range": [float(min(r5)), float(max(r5))] if r5 else None,
            "plus0_unchanged": fa, "plus0_trials": n0}


def part_real(work: Path, trials: int, processes: int, quick: bool) -> dict:
    """Runs alternating unplanted/planted (+10% on every case). Each consecutive pair is a power trial; runs two
    apart are identical (both unplanted or both planted), so they are the A/A pairs, in the same time window."""
    out = work / "real"
    suites = real_suites(work, "real", processes, quick)
    print(f"(d) real cases: {trials + 1} runs alternating unplanted/planted +10%, processes = {processes}; "
          "warming the cache...", flush=True)
    runs = alternating_runs(suites, out, work / "real-warm", trials)

    power, aa = [], []
    for a, b in zip(runs, runs[1:]):
        code, js = compare(out, a["run_id"], b["run_id"], work)
        expect, sign = ("regressed", 1) if b["planted"] else ("improved", -1)
        row = {"base": a["run_id"], "new": b["run_id"], "expected": expect, "exit_code": code, "cases": {}}
        for label, s in sorted(p50_series(js).items()):
            ratio, lo, hi = planted_over_unplanted(s, sign > 0)
            row["cases"][label] = {"verdict": s["verdict"], "planted_over_unplanted": ratio, "ci": [lo, hi],
                                   "q": s["q_value"], "called": s["verdict"] == expect, "covers_truth": lo <= 1.10 <= hi}
        power.append(row)
        print(f"  trial {len(power)} ({expect}): " + ", ".join(
            f"{k} x{v['planted_over_unplanted']:.3f} {v['verdict']}" for k, v in row["cases"].items()), flush=True)
    for a, b in zip(runs, runs[2:]):
        code, js = compare(out, a["run_id"], b["run_id"], work)
        flagged = [s for s in js["series"] if s["verdict"] in ("regressed", "improved")]
        aa.append({"base": a["run_id"], "new": b["run_id"], "planted": a["planted"], "exit_code": code,
                   "series": len(js["series"]), "flagged": len(flagged),
                   "flagged_series": [{"label": s["label"], "verdict": s["verdict"], "ratio": s["ratio"],
                                       "q": s["q_value"]} for s in flagged],
                   "p50_ratios": {k: v["ratio"] for k, v in sorted(p50_series(js).items())}})
        print(f"  A/A {a['run_id']} -> {b['run_id']}: exit {code}, {len(flagged)} of {len(js['series'])} flagged",
              flush=True)
    labels = sorted({k for r in power for k in r["cases"]})
    by_case = {k: {"called": sum(r["cases"][k]["called"] for r in power if k in r["cases"]),
                   "trials": sum(k in r["cases"] for r in power),
                   "covers_1.10": sum(r["cases"][k]["covers_truth"] for r in power if k in r["cases"]),
                   "ratio_median": float(np.median([r["cases"][k]["planted_over_unplanted"] for r in power
                                                    if k in r["cases"]]))} for k in labels}
    series = sum(r["series"] for r in aa)
    flagged = sum(r["flagged"] for r in aa)
    return {"processes": processes, "runs": runs, "trials": power, "by_case": by_case,
            "called": sum(v["called"] for v in by_case.values()), "case_trials": sum(v["trials"] for v in by_case.values()),
            "aa_pairs": aa, "aa_pair_count": len(aa), "aa_pairs_exit_0": sum(r["exit_code"] == 0 for r in aa),
            "aa_series_compared": series, "aa_series_flagged": flagged,
            "aa_share_flagged": flagged / series if series else None, "nominal_fdr": NOMINAL_FDR}


def ab(base: Path, new: Path, out: Path, work: Path, tag: str) -> tuple[int, dict, float]:
    """``costbench ab BASE NEW --fail-on-regression``: (exit code, the comparison's JSON, wall seconds)."""
    js = work / f"ab-{tag}.json"
    t0 = time.perf_counter()
    proc = costbench("ab", str(base), str(new), "--out", str(out), "--fail-on-regression", "--json", str(js))
    wall = time.perf_counter() - t0
    if not js.exists():
        raise RuntimeError(f"costbench ab {tag} wrote no comparison (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    return proc.returncode, json.loads(js.read_text()), wall


def process_audit(records: list[dict]) -> list[dict]:
    """Each measured process of one run file: its p50 over its case's median in that run, and whether it was
    contended (cpu_contention)."""
    from costbench.harness.results.rounds import contended

    out = []
    for label in sorted({r["case"]["backend"] for r in records}):
        mine = [r for r in records if r["case"]["backend"] == label and r["status"] == "ok"]
        p50s = [next(m["value"] for m in r["metrics"] if m["metric"] == LATENCY.p50) for r in mine]
        mid = float(np.median(p50s))
        out += [{"case": label, "p50_over_median": v / mid, "contended": contended(r)} for r, v in zip(mine, p50s)]
    return out


def audit_summary(audit: list[dict]) -> dict:
    """How heavy the tail of the processes' p50s is (over their case-side median), and what contention explains."""
    ratios = np.array([a["p50_over_median"] for a in audit])
    slow = [a for a in audit if a["p50_over_median"] > 1.08]
    return {"processes": len(audit), "p50_over_median_p95": float(np.percentile(ratios, 95)),
            "p50_over_median_max": float(ratios.max()), "over_8pct": len(slow),
            "over_8pct_contended": sum(a["contended"] for a in slow),
            "contended": sum(a["contended"] for a in audit)}


def part_real_ab(work: Path, trials: int, aa_trials: int, processes: int, quick: bool) -> dict:
    """(e) The real cases of (d) measured side by side (``costbench ab``): power trials (unplanted BASE, planted
    NEW) interleaved with A/A trials (the unplanted suite on both sides), so both meet the same windows. Each ab run
    takes its looks; the cases that reached each look are counted."""
    out = work / "real-ab"
    suites = real_suites(work, "real-ab", processes, quick)
    print(f"(e) real cases side by side: {trials} power and {aa_trials} A/A ab runs, processes = {processes}; "
          "warming the cache...", flush=True)
    run_suite(suites[False], work / "real-ab-warm", "--processes", "1")

    power, aa, audit = [], [], []  # audit: every process's p50 against its case's median
    # The A/A trials spread evenly among the power trials: both meet the same windows.
    kinds = sorted([(i / trials, True) for i in range(trials)] + [((i + 0.5) / aa_trials, False) for i in range(aa_trials)])
    for i, (_, planted) in enumerate(kinds):
        code, js, wall = ab(suites[False], suites[planted], out, work, f"{i}")
        row = {"base": js["base"]["run_id"], "new": js["new"]["run_id"], "exit_code": code, "wall_s": wall,
               "cases": {}}
        for label, s in sorted(p50_series(js).items()):
            row["cases"][label] = {"verdict": s["verdict"], "ratio": s["ratio"],
                                   "ci": [s["ratio_ci_low"], s["ratio_ci_high"]], "q": s["q_value"],
                                   "processes": [s["n_base"], s["n_new"]]}
            if planted:
                row["cases"][label].update(called=s["verdict"] == "regressed",
                                           covers_truth=s["ratio_ci_low"] <= 1.10 <= s["ratio_ci_high"])
        for side in ("base", "new"):
            recs = RunFile(out / "runs" / f"{js[side]['run_id']}.jsonl").cases()
            audit += process_audit(recs)
            for label, c in row["cases"].items():
                c.setdefault("recorded", []).append(sum(r["case"]["backend"] == label for r in recs))
        (power if planted else aa).append(row)
        print(f"  {'power' if planted else 'A/A'} {len(power if planted else aa)} in {wall:.0f} s, exit {code}: "
              + ", ".join(f"{k} x{v['ratio']:.3f} {v['verdict']} ({v['processes'][1]} a side)"
                          for k, v in row["cases"].items()), flush=True)
    labels = sorted({k for r in power for k in r["cases"]})
    by_case = {k: {"called": sum(r["cases"][k]["called"] for r in power if k in r["cases"]),
                   "trials": sum(k in r["cases"] for r in power),
                   "covers_1.10": sum(r["cases"][k]["covers_truth"] for r in power if k in r["cases"]),
                   "second_look": sum(r["cases"][k]["processes"][1] > processes for r in power if k in r["cases"]),
                   "third_look": sum(r["cases"][k]["processes"][1] > 3 * processes for r in power if k in r["cases"]),
                   "ratio_median": float(np.median([r["cases"][k]["ratio"] for r in power if k in r["cases"]]))}
               for k in labels}
    series = sum(len(r["cases"]) for r in aa)
    flagged = sum(v["verdict"] in ("regressed", "improved") for r in aa for v in r["cases"].values())
    return {"processes": processes, "power": power, "aa": aa, "by_case": by_case, "processes_audit": audit_summary(audit),
            "called": sum(v["called"] for v in by_case.values()), "case_trials": sum(v["trials"] for v in by_case.values()),
            "aa_exit_0": sum(r["exit_code"] == 0 for r in aa), "aa_series": series, "aa_flagged": flagged,
            "aa_second_look": sum(v["processes"][1] > processes for r in aa for v in r["cases"].values()),
            "aa_third_look": sum(v["processes"][1] > 3 * processes for r in aa for v in r["cases"].values()),
            "wall_s": {"power": float(np.median([r["wall_s"] for r in power])),
                       "aa": float(np.median([r["wall_s"] for r in aa]))}, "nominal_fdr": NOMINAL_FDR}


def part_smoke(work: Path, only: list[str]) -> dict:
    """The smoke suite as shipped, against itself as it was before replication; warm caches, one timed run each."""
    import tomllib

    shipped = ROOT / "suites" / "smoke.toml"
    data = tomllib.loads(shipped.read_text())
    before = shipped.read_text()
    # The smoke suite before issue 17: one process per case, 1 s of measuring per scenario.
    old_scenarios = ('[[scenarios]]\nkind = "single_stream"\nwarmup_count = 10\nmin_count = 100\nmin_duration_s = 1.0\n\n'
                     '[[scenarios]]\nkind = "offline"\nwarmup_count = 3\nmin_count = 20\nmin_duration_s = 1.0\n')
    head = before[: before.index("[[scenarios]]")]
    head = "\n".join(line for line in head.splitlines() if not line.startswith("processes"))
    old = work / "smoke-before.toml"
    old.write_text(head + "\nprocesses = 1\n\n" + old_scenarios)
    out = work / "smoke"
    print(f"(c) smoke wall time: {shipped} (processes = {data.get('processes')}) against {old.name}; warming...",
          flush=True)
    filters = [x for f in only for x in ("--only", f)]
    run_suite(shipped, work / "smoke-warm", *filters)
    run_suite(old, work / "smoke-warm", *filters)
    times = {}
    for name, suite in (("before", old), ("now", shipped), ("before_again", old), ("now_again", shipped)):
        _, wall = run_suite(suite, out, *filters)
        times[name] = wall
        print(f"  {name}: {wall:.0f} s", flush=True)
    before_s = (times["before"] + times["before_again"]) / 2
    now_s = (times["now"] + times["now_again"]) / 2
    return {"walls_s": times, "before_s": before_s, "now_s": now_s, "ratio": now_s / before_s, "only": only,
            "smoke_processes": data.get("processes"), "goal_ratio": 1.5}


def markdown(res: dict) -> str:
    out = ["# Replication across processes: does the regression gate hold? (issue 17)", "",
           f"Machine: {res['machine']}. Commit: `{res['commit']}`. Generated {res['generated']} by "
           "`benchmarks/replication.py`.", ""]
    if "aa" in res:
        a = res["aa"]
        share = a["share_flagged"]
        old = a["single_process_way"]
        what = ("digits-cnn; fp32, int8; ONNX Runtime; single-stream, 0.1 s a process: --quick, a check of the "
                "script, not a measurement" if res.get("quick") else
                "digits-cnn, EfficientNet-Lite0; fp32, int8; ONNX Runtime, OpenVINO, torch; single-stream")
        out += ["## (a) A/A: identical runs", "",
                f"{a['pair_count'] + 1} runs of the reduced smoke suite ({what}), processes = {a['processes']}.", "",
                f"- `compare --fail-on-regression` exit 0: **{a['pairs_exit_0']} of {a['pair_count']} pairs** "
                "(goal: all).",
                f"- series flagged (regressed or improved): **{a['series_flagged']} of {a['series_compared']}** "
                f"({share:.2%}) against a nominal FDR of {a['nominal_fdr']:.1%} (goal: at or below)." if share is not None
                else "- no series compared",
                f"- the same runs judged the old way (first process only, raw samples): {old['series_flagged']} of "
                f"{old['series_compared']} series flagged, in {old['pairs_with_a_flag']} of {a['pair_count']} pairs.",
                "", "| base | new | exit | flagged | largest abs(log ratio) | single-process way |", "|---|---|---:|---:|---:|---:|"]
        for p in a["pairs"]:
            out.append(f"| {p['base']} | {p['new']} | {p['exit_code']} | {p['flagged']} of {p['series']} | "
                       f"{p['max_abs_log_ratio']:.3f} | {p['single_process']['flagged']} of {p['single_process']['series']} |")
        out.append("")
    if "sensitivity" in res:
        s = res["sensitivity"]
        out += ["## (b) Sensitivity: planted slowdowns", "",
                f"`tests/plugins/sleepy_backend.py`: 1 ms a query, a per-process factor exp(N(0, 1.5%²)); "
                f"processes = {s['processes']}; {s['plus10_trials']} trials (consecutive pairs of alternating runs).", "",
                f"- +10%: called in **{s['plus10_detected']} of {s['plus10_trials']}** trials "
                f"({s['plus10_rate']:.0%}; goal >= 95%); its interval covered 1.10 in "
                f"{s['plus10_interval_covers_1.10'][0]} of {s['plus10_interval_covers_1.10'][1]}.",
                f"- +5%: ratio median ×{s['plus5_ratio_median']:.3f} (range ×{s['plus5_ratio_range'][0]:.3f}–"
                f"×{s['plus5_ratio_range'][1]:.3f}); called in {s['plus5_detected']} of {s['plus5_trials']}; its "
                f"interval covered 1.05 in {s['plus5_interval_covers_1.05'][0]} of {s['plus5_interval_covers_1.05'][1]}.",
                f"- +0%: unchanged in {s['plus0_unchanged']} of {s['plus0_trials']}.", "",
                "| trial | expected | +10% verdict | +10% ratio (95% CI) | +5% verdict | +5% ratio (95% CI) | +0% verdict |",
                "|---:|---|---|---|---|---|---|"]
        for i, r in enumerate(s["trials"], 1):
            def cell(x):
                return "-" if x is None else f"×{x['planted_over_unplanted']:.3f} ({x['ci'][0]:.3f}–{x['ci'][1]:.3f})"
            out.append(f"| {i} | {r['expected']} | {r['plus10'] and r['plus10']['verdict']} | {cell(r['plus10'])} | "
                       f"{r['plus5'] and r['plus5']['verdict']} | {cell(r['plus5'])} | {r['plus0'] and r['plus0']['verdict']} |")
        out.append("")
    if "real" in res:
        r = res["real"]
        share = r["aa_share_flagged"]
        out += ["## (d) Power on real cases: +10% planted on EfficientNet-Lite0", "",
                "EfficientNet-Lite0 fp32 on ONNX Runtime, OpenVINO (one thread each, as in the smoke suite) and LiteRT "
                "(XNNPACK, one thread), each session wrapped by `tests/plugins/slowed_backend.py`, which makes every "
                "call take 1.10 times its own duration in planted runs; processes = "
                f"{r['processes']}{' (--quick: a check of the script, not a measurement)' if res.get('quick') else ''}. "
                f"{len(r['runs'])} runs alternating unplanted/planted: {len(r['trials'])} power trials (consecutive "
                f"runs) and {r['aa_pair_count']} A/A pairs (runs two apart: identical, in the same window).", "",
                f"- +10% called (regressed, or improved when the planted run came first): **{r['called']} of "
                f"{r['case_trials']}** case-trials (goal >= 90%).",
                *[f"  - {k}: {v['called']} of {v['trials']}; median planted/unplanted p50 x{v['ratio_median']:.3f}; "
                  f"interval covered 1.10 in {v['covers_1.10']} of {v['trials']}" for k, v in r["by_case"].items()],
                f"- A/A: `compare --fail-on-regression` exit 0 in **{r['aa_pairs_exit_0']} of {r['aa_pair_count']} "
                f"pairs**; series flagged {r['aa_series_flagged']} of {r['aa_series_compared']}"
                + (f" ({share:.2%}; nominal FDR {r['nominal_fdr']:.1%})." if share is not None else "."), "",
                "| trial | expected | " + " | ".join(f"{k} ratio (95% CI), verdict" for k in r["by_case"]) + " |",
                "|---:|---|" + "---|" * len(r["by_case"])]
        for i, t in enumerate(r["trials"], 1):
            cells = [f"x{c['planted_over_unplanted']:.3f} ({c['ci'][0]:.3f}-{c['ci'][1]:.3f}) {c['verdict']}"
                     if (c := t["cases"].get(k)) else "-" for k in r["by_case"]]
            out.append(f"| {i} | {t['expected']} | " + " | ".join(cells) + " |")
        out += ["", "| A/A base | new | runs | exit | flagged | p50 ratios |", "|---|---|---|---:|---:|---|"]
        for p in r["aa_pairs"]:
            out.append(f"| {p['base']} | {p['new']} | {'planted' if p['planted'] else 'unplanted'} | {p['exit_code']} | "
                       f"{p['flagged']} of {p['series']} | "
                       + ", ".join(f"{k} x{v:.3f}" for k, v in p["p50_ratios"].items()) + " |")
        out.append("")
    if "real_ab" in res:
        r = res["real_ab"]
        out += ["## (e) Power on real cases, side by side (`costbench ab`)", "",
                "The cases of (d), each trial one `costbench ab BASE NEW --fail-on-regression`: BASE and NEW alternate "
                "process by process in one window, and a case still undecided after a look (neither called nor shown "
                "within +-5%) gets the next: looks at 1x, 3x and 5x the first's pairs; a change is claimed at "
                "q < 0.002/3 at each look (0.002 over the three; before three looks were built, two looks at q < 0.001 "
                f"each). Pairs at the first look: {r['processes']}"
                f"{' (--quick: a check of the script, not a measurement)' if res.get('quick') else ''}. Power trials "
                "(NEW planted +10%) and A/A trials (the same suite on both sides) are interleaved.", "",
                f"- +10% called regressed: **{r['called']} of {r['case_trials']}** case-trials (goal >= 90%).",
                *[f"  - {k}: {v['called']} of {v['trials']}; median ratio x{v['ratio_median']:.3f}; interval covered "
                  f"1.10 in {v['covers_1.10']} of {v['trials']}; second look in {v['second_look']}, third in "
                  f"{v.get('third_look', 0)}"
                  for k, v in r["by_case"].items()],
                f"- A/A: exit 0 in **{r['aa_exit_0']} of {len(r['aa'])} trials**; series flagged {r['aa_flagged']} of "
                f"{r['aa_series']} (nominal FDR {r['nominal_fdr']:.1%}); second look in {r['aa_second_look']}, third in "
                f"{r.get('aa_third_look', 0)} of {r['aa_series']}.",
                "- Processes (p50 over their case's median in their run): 95th percentile x{p95:.3f}, largest x{mx:.3f}; "
                "{over_8pct} of {processes} more than 8% above it, {over_8pct_contended} of those contended "
                "(cpu_contention); {contended} contended in all.".format(
                    p95=r["processes_audit"]["p50_over_median_p95"], mx=r["processes_audit"]["p50_over_median_max"],
                    **r["processes_audit"]),
                f"- Wall time of one ab run (3 cases), median: {r['wall_s']['power']:.0f} s planted, "
                f"{r['wall_s']['aa']:.0f} s A/A.", "",
                "| trial | kind | " + " | ".join(f"{k} ratio (95% CI), verdict, processes used/recorded BASE+NEW"
                                                 for k in r["by_case"])
                + " |", "|---:|---|" + "---|" * len(r["by_case"])]
        rows = [("power", t) for t in r["power"]] + [("A/A", t) for t in r["aa"]]
        for i, (kind, t) in enumerate(rows, 1):
            cells = [f"x{c['ratio']:.3f} ({c['ci'][0]:.3f}-{c['ci'][1]:.3f}) {c['verdict']}, "
                     f"{c['processes'][0]}/{c['recorded'][0]}+{c['processes'][1]}/{c['recorded'][1]}"
                     if (c := t["cases"].get(k)) else "-" for k in r["by_case"]]
            out.append(f"| {i} | {kind} | " + " | ".join(cells) + " |")
        out.append("")
    if "smoke" in res:
        m = res["smoke"]
        out += ["## (c) Smoke suite wall time", "",
                f"`suites/smoke.toml` (processes = {m['smoke_processes']}): {m['now_s']:.0f} s; the same suite as it "
                f"was before replication (one process, 1 s measuring): {m['before_s']:.0f} s; ratio "
                f"**×{m['ratio']:.2f}** (goal <= ×{m['goal_ratio']}){' with --only ' + ' '.join(m['only']) if m['only'] else ''}. "
                "Warm cache, mean of two timed runs each: "
                + ", ".join(f"{k} {v:.0f} s" for k, v in m["walls_s"].items()) + ".", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for replication.json and replication.md")
    ap.add_argument("--aa-pairs", type=int, default=10, help="A/A pairs (runs = pairs + 1)")
    ap.add_argument("--trials", type=int, default=20, help="sensitivity trials (runs = trials + 1)")
    ap.add_argument("--processes", type=int, default=5, help="processes per case for (a) and (b): compare-grade")
    ap.add_argument("--parts", default="aa,sensitivity,smoke",
                    help="comma-separated: aa, sensitivity, smoke, real, real-ab (the last two not in the default: "
                         "about 15 and 40 min)")
    ap.add_argument("--real-trials", type=int, default=20, help="(d) power trials on real cases (runs = trials + 1); (e) power trials (ab runs)")
    ap.add_argument("--real-aa", type=int, default=10, help="(e) A/A ab runs among the power trials")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--smoke-only", action="append", default=[], metavar="KEY=GLOB",
                    help="(c): time only these smoke cases (costbench run --only); default: the whole suite")
    ap.add_argument("--quick", action="store_true", help="a check that the script works, not a measurement: "
                    "(a) digits-cnn on ONNX Runtime only, 0.1 s measuring a process in (a) and (b)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"aa", "sensitivity", "smoke", "real", "real-ab"}
    if unknown:
        ap.error(f"--parts: unknown {sorted(unknown)}; choose from aa, sensitivity, smoke, real, real-ab")

    from costbench.harness.machine.env import fingerprint
    from costbench.harness.reports.data import describe_env
    from costbench.harness.execute.runner import git_commit

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="costbench-replication-"))
    work.mkdir(parents=True, exist_ok=True)
    # Every run uses the usual artifact cache ($COSTBENCH_CACHE_DIR or ~/.cache/costbench); each part warms it first.
    env = fingerprint()
    res: dict = {"quick": args.quick, "machine": describe_env(env), "env_id": env["env_id"], "commit": git_commit(ROOT),
                 "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "work": str(work)}
    t0 = time.perf_counter()
    if "aa" in parts:
        res["aa"] = part_aa(work, args.aa_pairs, args.processes, args.quick)
    if "sensitivity" in parts:
        res["sensitivity"] = part_sensitivity(work, args.trials, args.processes, args.quick)
    if "smoke" in parts:
        res["smoke"] = part_smoke(work, args.smoke_only)
    if "real" in parts:
        res["real"] = part_real(work, args.real_trials, args.processes, args.quick)
    if "real-ab" in parts:
        res["real_ab"] = part_real_ab(work, args.real_trials, args.real_aa, args.processes, args.quick)
    res["total_s"] = time.perf_counter() - t0
    (args.out / "replication.json").write_text(json.dumps(res, indent=1, default=str))
    (args.out / "replication.md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {args.out / 'replication.json'} and {args.out / 'replication.md'} in {res['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
