"""``single_stream``: one query at a time, each waiting for the previous; each query's latency."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from costbench.backends.base import Session
from costbench.core.metrics import DEVICE_LATENCY
from costbench.harness.measure.scenarios.base import Scenario, ScenarioResult, clock, input_batches, warm_up
from costbench.harness.suite.schema import ScenarioSettings
from costbench.harness.build.zoo.base import SampleSet


class SingleStreamSpec(ScenarioSettings):
    """One query at a time; latency percentiles."""

    kind: Literal["single_stream"] = "single_stream"
    warmup_count: int = Field(5, ge=0, description="Untimed queries before measuring.")
    min_count: int = Field(50, ge=1, description="Measure at least this many queries...")
    min_duration_s: float = Field(1.0, ge=0, description="...and for at least this long.")
    max_duration_s: float = Field(60.0, gt=0, description="Stop here even if min_count is not met (the result is then marked invalid).")


class SingleStream(Scenario):
    """One query at a time, each waiting for the previous: latency."""

    Settings = SingleStreamSpec
    kind = "single_stream"

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        batches = input_batches(data, batch_size)
        warm_up(session, batches, s.warmup_count)
        timer = session.device_timer()
        samples: list[int] = []
        device: list[int] = []
        min_ns, max_ns = int(s.min_duration_s * 1e9), int(s.max_duration_s * 1e9)
        n_batches = len(batches)
        run, sync = session.run, session.synchronize
        start = clock()
        i = 0
        valid = False
        while True:
            feed = batches[i % n_batches]
            if timer is None:
                t0 = clock()
                run(feed)
                sync()
                end = clock()
            else:
                t0 = clock()
                timer.start()
                run(feed)
                timer.stop()
                sync()
                end = clock()
                device.append(timer.elapsed_ns())
            samples.append(end - t0)
            i += 1
            elapsed = end - start
            if i >= s.min_count and elapsed >= min_ns:
                valid = True
                break
            if elapsed >= max_ns:
                break
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {i} of min_count={s.min_count}"]
        series = {DEVICE_LATENCY.name: device} if device else {}
        return ScenarioResult(self.kind, batch_size, samples, end - start, valid, notes, series)

