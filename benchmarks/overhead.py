"""The harness's own cost, printed (never asserted): per-query overhead, median accuracy, scheduler lateness.

    python benchmarks/overhead.py [--quick]

- single_stream with a no-op session: the loop's overhead per query (wall time per query minus
  the time inside the timed region) and the timing floor (median of an empty timed region);
- single_stream with sessions that busy-wait a known 0.1 / 1 / 10 ms: error of the reported
  median against the known time;
- server with a no-op session at 1,000 QPS (and 100 QPS): p99 lateness of the scheduler against
  the planned arrival times.
Goals (issue 3, on a 2-core machine): overhead < 5 µs/query; median within 1% at 1 ms; lateness
p99 < 100 µs at 1,000 QPS.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from costbench.backends.base import Session
from costbench.harness.machine.env import fingerprint
from costbench.harness.measure.scenarios.registry import make_scenario
from costbench.core.stats import percentile
from costbench.harness.build.zoo.base import SampleSet

DATA = SampleSet({"x": np.zeros((8, 4), dtype=np.float32)})


class Noop(Session):
    def run(self, inputs):
        return []


class BusyWait(Session):
    """Holds the core for exactly ``seconds`` per query (a spin on perf_counter_ns)."""

    def __init__(self, seconds: float):
        self.ns = int(round(seconds * 1e9))

    def run(self, inputs):
        end = time.perf_counter_ns() + self.ns
        while time.perf_counter_ns() < end:
            pass
        return []


def single_stream(session: Session, count: int, seconds: float):
    spec = {"kind": "single_stream", "warmup_count": 100, "min_count": count, "min_duration_s": seconds,
            "max_duration_s": 600}
    return make_scenario(spec).run(session, DATA, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    scale = 0.25 if args.quick else 1.0
    rows: dict[str, float] = {}

    r = single_stream(Noop(), int(200_000 * scale), 1.0 * scale)
    inside = float(np.mean(r.samples_ns))
    per_query = r.wall_ns / r.queries
    rows["noop_per_query_us"] = per_query / 1e3
    rows["noop_timed_region_median_us"] = percentile(r.samples_ns, 50) / 1e3
    rows["loop_overhead_per_query_us"] = (per_query - inside) / 1e3
    print(f"single_stream, no-op session, {r.queries} queries:")
    print(f"  wall time per query                    {per_query / 1e3:8.3f} µs")
    print(f"  inside the timed region (mean)         {inside / 1e3:8.3f} µs  (timer floor: median "
          f"{rows['noop_timed_region_median_us']:.3f} µs)")
    print(f"  harness overhead per query             {rows['loop_overhead_per_query_us']:8.3f} µs   goal < 5 µs")

    print("single_stream, busy-wait sessions of known duration:")
    for ms, count, secs in ((0.1, 5000, 1.0), (1.0, 1000, 1.0), (10.0, 100, 1.0)):
        r = single_stream(BusyWait(ms / 1e3), max(50, int(count * scale)), secs * scale)
        med = percentile(r.samples_ns, 50) / 1e6
        err = (med - ms) / ms
        rows[f"busy_{ms:g}ms_median_error_pct"] = 100 * err
        goal = "   goal within 1%" if ms == 1.0 else ""
        print(f"  {ms:5.1f} ms: median {med:9.4f} ms, error {100 * err:+7.3f}%  p99 "
              f"{percentile(r.samples_ns, 99) / 1e6:9.4f} ms  ({r.queries} queries){goal}")

    print("server, no-op session, Poisson arrivals:")
    for qps in (100, 1000):
        n = max(200, int(qps * 5 * scale))
        spec = {"kind": "server", "target_qps": qps, "slo_ms": 10, "min_count": n, "min_duration_s": 0, "seed": 1}
        r = make_scenario(spec).run(Noop(), DATA, 1)
        late = r.series_ns["scheduler_lateness"]
        p99 = percentile(late, 99) / 1e3
        rows[f"server_{qps}qps_lateness_p99_us"] = p99
        rows[f"server_{qps}qps_lateness_max_us"] = max(late) / 1e3
        goal = "   goal < 100 µs" if qps == 1000 else ""
        print(f"  {qps:5d} QPS: lateness p50 {percentile(late, 50) / 1e3:7.2f} µs, p99 {p99:8.2f} µs, "
              f"max {max(late) / 1e3:9.2f} µs; achieved {r.scalars['achieved_qps'][0]:.1f} QPS "
              f"({len(late)} queries){goal}")

    env = fingerprint()
    print(f"machine: {env['key']['cpu_model']}, {env['key']['logical_cores']} logical cores, "
          f"python {platform.python_version()}, env_id {env['env_id']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
