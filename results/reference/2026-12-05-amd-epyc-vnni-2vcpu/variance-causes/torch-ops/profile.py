"""Which of PyTorch's operators make a slow launch slow? EfficientNet-Lite0 fp32, one thread, batch 1.

    python profile.py OUT.json [--launches 10] [--iters 100] [--inputs random|photos] [--flush-denormal]

Each launch is a fresh process (as a costbench measured process is): it builds the model, runs 20 warm-up
queries, times --iters queries (the p50; on one random image, or rotating through the photo crops the
single-stream scenario feeds, in its order), then profiles another 50 with torch.profiler and sums each operator's
self CPU time per query. The parent sorts the launches by p50 and sets the fast half's per-operator times
against the slow half's: the operators whose time differs are where the launches disagree.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(iters: int, inputs: str, flush_denormal: bool) -> dict:
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from costbench.harness.build.zoo.efficientnet import build_model

    torch.set_num_threads(1)
    torch.set_flush_denormal(flush_denormal)  # x86 FTZ/DAZ: subnormal floats read and written as zero
    model = build_model()
    if inputs == "photos":
        from costbench.core.artifacts import default_cache_dir
        from costbench.harness.build.zoo.efficientnet import cached_imagenet_samples
        from costbench.harness.measure.scenarios.base import input_batches

        data = cached_imagenet_samples(default_cache_dir())["evaluation"]
        xs = [torch.from_numpy(b["input"]) for b in input_batches(data, 1)]
    else:
        xs = [torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))]
    with torch.inference_mode():
        for i in range(20):
            model(xs[i % len(xs)])
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(iters):
            t0 = time.perf_counter_ns()
            model(xs[i % len(xs)])
            times.append(time.perf_counter_ns() - t0)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(50):
                model(xs[i % len(xs)])
    ops = {e.key: e.self_cpu_time_total / 50 / 1000 for e in prof.key_averages()}  # ms per query
    return {"p50_ms": float(np.median(times)) / 1e6, "minor_faults_per_query": faults / iters, "ops_ms": ops}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--launches", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--inputs", choices=("random", "photos"), default="random")
    ap.add_argument("--flush-denormal", action="store_true")
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    if a.child:
        json.dump(child(a.iters, a.inputs, a.flush_denormal), sys.stdout)
        return
    runs = []
    for i in range(a.launches):
        out = subprocess.run([sys.executable, __file__, "-", "--child", "--iters", str(a.iters), "--inputs", a.inputs] + ["--flush-denormal"] * a.flush_denormal, capture_output=True,
                             text=True, check=True).stdout
        runs.append(json.loads(out))
        print(f"launch {i + 1}: p50 {runs[-1]['p50_ms']:.2f} ms, {runs[-1]['minor_faults_per_query']:.0f} page faults "
              "a query", flush=True)
    runs.sort(key=lambda r: r["p50_ms"])
    half = len(runs) // 2
    fast, slow = runs[:half], runs[-half:]
    names = sorted({k for r in runs for k in r["ops_ms"]})

    def mean(rs, k):
        return sum(r["ops_ms"].get(k, 0.0) for r in rs) / len(rs)

    rows = sorted(((mean(slow, k) - mean(fast, k), mean(fast, k), mean(slow, k), k) for k in names), reverse=True)
    summary = {"p50_ms": [r["p50_ms"] for r in runs],
               "fast_p50_ms": sum(r["p50_ms"] for r in fast) / half, "slow_p50_ms": sum(r["p50_ms"] for r in slow) / half,
               "by_op": [{"op": k, "fast_ms": f, "slow_ms": s, "slow_minus_fast_ms": d} for d, f, s, k in rows],
               "runs": runs}
    with open(a.out, "w") as fh:
        json.dump(summary, fh, indent=1)
    print(f"fast half p50 {summary['fast_p50_ms']:.2f} ms, slow half {summary['slow_p50_ms']:.2f} ms")
    print(f"{'operator':40} {'fast ms':>8} {'slow ms':>8} {'slow-fast':>9}")
    for d, f, s, k in rows[:12]:
        print(f"{k:40} {f:8.3f} {s:8.3f} {d:9.3f}")


if __name__ == "__main__":
    main()
