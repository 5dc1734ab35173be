"""``burst``: ``burst_size`` queries arrive at once; the session serves them one after another.

Each query's latency runs from its burst's arrival to its own end, so the k-th query of a burst
waits for the k-1 before it: the tail a bursty client sees. Timed region as costbench's own
scenarios: ``session.run`` then ``session.synchronize`` on ``time.perf_counter_ns``.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from costbench.harness.measure.scenarios.base import Scenario, ScenarioResult, input_batches, warm_up
from costbench.harness.suite.schema import ScenarioSettings


class BurstSettings(ScenarioSettings):
    kind: Literal["burst"] = "burst"
    burst_size: int = Field(4, ge=1, description="Queries that arrive together.")
    warmup_count: int = Field(2, ge=0)
    min_count: int = Field(40, ge=1, description="At least this many queries...")
    min_duration_s: float = Field(0.1, ge=0, description="...and at least this long.")
    max_duration_s: float = Field(30.0, gt=0)


class Burst(Scenario):
    kind = "burst"
    Settings = BurstSettings

    def run(self, session, data, batch_size: int) -> ScenarioResult:
        s = self.spec
        batches = input_batches(data, batch_size)
        warm_up(session, batches, s.warmup_count)
        clock = time.perf_counter_ns
        latencies: list[int] = []
        bursts, i = 0, 0
        start = clock()
        while True:
            arrival = clock()
            for _ in range(s.burst_size):
                session.run(batches[i % len(batches)])
                session.synchronize()
                latencies.append(clock() - arrival)
                i += 1
            bursts += 1
            elapsed = clock() - start
            if (len(latencies) >= s.min_count and elapsed >= s.min_duration_s * 1e9) or elapsed >= s.max_duration_s * 1e9:
                break
        valid = len(latencies) >= s.min_count
        result = ScenarioResult(self.kind, batch_size, latencies, clock() - start, valid)
        result.scalars["bursts"] = (float(bursts), "count")
        return result
