"""The capacity search on simulated time (tests/harness/measure/test_capacity.py's queues), with the step down
from an undecided rate growing by GROWTH while no rate is shown to meet the SLO (1: a fixed 10% step).

    python step_down.py GROWTH SEEDS N [preempting-only]     # SEEDS: comma-separated; N searches per seed and case

Prints, for a machine that preempts one service in 100 (and one in 50) by 2 ms (40-s budget, 5,000 queries a
trial, started at 0.9x the model's capacity, as the test): how many searches ended with no rate shown to meet
the SLO, and the shown-to-meet rate over the estimate; then, for the plain M/D/1 queue of the issue (1 ms of
service, p99 within 5 ms, 240-s budget), N/3 searches per seed: how many 95% intervals held the exact capacity,
the median half-width and the median error of the estimate. Pure simulation: no timing, any machine.
"""
import sys

sys.path[:0] = ["tests/harness/measure", "tests/harness", "tests"]
import numpy as np  # noqa: E402

import costbench.harness.measure.capacity as cap  # noqa: E402
from test_capacity import (SLO_NS, SERVICE_NS, SearchPlan, md1_capacity, search_on_simulated_time,  # noqa: E402
                           simulate_latencies, simulated_search)

growth, seeds, n = float(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
cap.STEP_DOWN_GROWTH = growth
for frac in (0.01, 0.02):
    missed = total = 0
    ratio = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        service = SERVICE_NS * 0.6 + rng.exponential(0.02e6, 10_000) + (rng.random(10_000) < frac) * 2e6
        start = 0.9 * md1_capacity(SLO_NS / 1e9, 99, float(np.mean(service)) / 1e9)
        plan = SearchPlan(SLO_NS, 99.0, 0.95, 0.025, 40.0, lambda q: 5000, lambda q: int(10 * q),
                          start_qps=start, floor_qps=10.0, ceiling_qps=1e6)
        for _ in range(n):
            out = search_on_simulated_time(plan, lambda qps, k: simulate_latencies(
                rng.exponential(1e9 / qps, k), [np.empty(0), service], rng.random(k)))
            e = out.estimate
            total += 1
            missed += not e.shown_to_meet
            if e.shown_to_meet and e.center.rate:
                ratio.append(e.shown_to_meet / e.center.rate)
    print(f"growth {growth}, preempting 1 in {round(1 / frac)}: {missed} of {total} searches with no rate shown to "
          f"meet; shown-to-meet / estimate median {np.median(ratio):.3f}, 10th percentile {np.percentile(ratio, 10):.3f}",
          flush=True)
if sys.argv[4:] == ["preempting-only"]:
    sys.exit()
truth = md1_capacity(SLO_NS / 1e9, 99, SERVICE_NS / 1e9)
held = total = 0
width, error = [], []
for seed in seeds:
    rng = np.random.default_rng(seed)
    for _ in range(n // 3):
        e = simulated_search(SERVICE_NS, rng).estimate
        total += 1
        held += bool(e.bracketed and e.low.rate <= truth <= e.high.rate)
        width.append(e.half_width())
        error.append(e.center.rate / truth - 1)
print(f"growth {growth}, M/D/1: 95% interval held the capacity in {held} of {total}; median half-width "
      f"{np.median(width):.4f}, median error {np.median(error):+.4f}", flush=True)
