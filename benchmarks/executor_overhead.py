"""What the Ray executor costs over the local one, printed (never asserted).

    python benchmarks/executor_overhead.py [--rounds 2] [--suite FILE [--only KEY=GLOB ...]] [--json FILE]

Runs one digits suite (digits-cnn, fp32 and int8, ONNX Runtime and OpenVINO, single-stream and
offline; or ``--suite``, e.g. ``--suite suites/smoke.toml --only model=digits-cnn``) with the local executor and with ``--executor ray`` on a one-node Ray
cluster on this machine, interleaved (local, ray, local, ray...), both with a warm artifact cache, and
prints:

- wall time of each run (planning included: for Ray, joining the cluster and probing the node) and the
  ratio ray / local of their medians;
- per-case dispatch overhead on Ray: the time from submitting a case's task to the task starting on the
  node, plus the task's own time beyond the measured child process (from each case's
  ``info["dispatch"]``), median and max.

Goals (issue 14): wall time within 10%; dispatch overhead under 100 ms per case.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a loopback cluster (read when Ray is imported)

DIGITS = """
name = "digits"
models = ["digits-cnn"]
variants = ["fp32", "int8"]
backends = [{name = "onnxruntime", threads = 1}, {name = "openvino", threads = 1}]
batch_sizes = [1]
timeout_s = 300

[[scenarios]]
kind = "single_stream"
warmup_count = 5
min_count = 100
min_duration_s = 0.5

[[scenarios]]
kind = "offline"
warmup_count = 2
min_count = 10
min_duration_s = 0.5
"""


def one_run(suite_path: Path, out: Path, executor, only: list[str]) -> tuple[float, list[dict]]:
    """Plan and run the suite with ``executor`` (costbench.api.run); (wall seconds, case records)."""
    import costbench.api as api
    from costbench.harness.results.store import RunFile

    t0 = time.perf_counter()
    with executor:
        summary = api.run(suite_path, out, only=only, on=executor)
    wall = time.perf_counter() - t0
    return wall, RunFile(summary.run_file).cases()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="local/ray pairs (interleaved)")
    ap.add_argument("--suite", type=Path, help="suite file (default: the digits suite above)")
    ap.add_argument("--only", action="append", default=[], help="KEY=GLOB filters on the suite's cases")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()

    from ray.cluster_utils import Cluster

    from costbench.harness.execute.executor import LocalExecutor
    from costbench.harness.execute.ray import RayExecutor

    work = Path(tempfile.mkdtemp(prefix="costbench-executor-overhead-"))
    suite_path = args.suite or work / "digits.toml"
    if not args.suite:
        suite_path.write_text(DIGITS)
    cache = work / "cache"  # one warm cache for both: the same machine, so the node's cache is this one
    os.environ["COSTBENCH_CACHE_DIR"] = str(cache)
    cpus = os.cpu_count() or 1
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": cpus,
                                                            "include_dashboard": False})
    try:
        print(f"suite {suite_path}; one Ray node at {cluster.address} with {cpus} CPUs; warming the cache...")
        one_run(suite_path, work / "warm", LocalExecutor(), args.only)
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        overheads: list[float] = []
        for i in range(args.rounds):
            for kind in ("local", "ray"):
                ex = LocalExecutor() if kind == "local" else RayExecutor(cluster.address)
                wall, records = one_run(suite_path, work / f"{kind}-{i}", ex, args.only)
                walls[kind].append(wall)
                ok = [r for r in records if r["status"] == "ok"]
                print(f"  round {i + 1} {kind:5s}: {wall:6.1f} s, {len(ok)} ok of {len(records)}")
                for r in ok if kind == "ray" else []:
                    d = r["info"]["dispatch"]
                    overheads.append((d["started"] - d["submitted"]) + (d["ended"] - d["started"] - r["elapsed_s"]))
        local, ray_ = statistics.median(walls["local"]), statistics.median(walls["ray"])
        ms = sorted(1000 * o for o in overheads)
        numbers = {"local_wall_s": walls["local"], "ray_wall_s": walls["ray"], "ratio": ray_ / local,
                   "dispatch_overhead_ms_median": statistics.median(ms), "dispatch_overhead_ms_max": ms[-1],
                   "cases": len(ms)}
        print(f"wall time: local {local:.1f} s, ray {ray_:.1f} s (medians of {args.rounds}); "
              f"ray / local = {ray_ / local:.3f} (goal <= 1.10)")
        print(f"dispatch overhead per case on Ray: median {numbers['dispatch_overhead_ms_median']:.1f} ms, "
              f"max {numbers['dispatch_overhead_ms_max']:.1f} ms over {len(ms)} cases (goal < 100 ms)")
        if args.json:
            Path(args.json).write_text(json.dumps(numbers, indent=2))
    finally:
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
