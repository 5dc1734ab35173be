"""Scenario loops: how queries are issued and timed. One timing convention for every backend.

The timed region is ``session.run(inputs)`` followed by ``session.synchronize()``, measured
with the host clock ``time.perf_counter_ns``; inputs are prepared host arrays (rotated through
real samples, so no cache sees the same batch twice in a row), outputs come back as host arrays.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from costbench.backends.base import Session
from costbench.harness.suite import OfflineSpec, SingleStreamSpec
from costbench.harness.zoo.base import SampleSet

_ROTATE = 8  # distinct input batches cycled through while measuring


@dataclass
class ScenarioResult:
    """Raw timings from one scenario run, in nanoseconds, and whether the stopping rule was met."""

    kind: str
    batch_size: int
    samples_ns: list[int]  # one per timed query (single_stream) or per batch (offline)
    wall_ns: int  # first timed query start -> last timed query end
    valid: bool  # min_count and min_duration both met before max_duration
    notes: list[str] = field(default_factory=list)

    @property
    def queries(self) -> int:
        return len(self.samples_ns)


def _batches(data: SampleSet, batch_size: int) -> list[dict[str, np.ndarray]]:
    return [data.batch(batch_size, start=i * batch_size) for i in range(_ROTATE)]


class Scenario(abc.ABC):
    """A way of issuing queries; registered by its ``kind``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        """Warm up, then measure until the spec's stopping rule is met."""


def _timed_loop(session: Session, batches: list[dict[str, np.ndarray]], warmup: int, min_count: int,
                min_duration_s: float, max_duration_s: float) -> tuple[list[int], int, bool]:
    """Issue queries back to back; time each; stop once both minimums are met (or at the cap)."""
    for i in range(warmup):
        session.run(batches[i % len(batches)])
        session.synchronize()
    samples: list[int] = []
    clock = time.perf_counter_ns
    min_ns, max_ns = int(min_duration_s * 1e9), int(max_duration_s * 1e9)
    start = clock()
    end = start
    i = 0
    while True:
        feed = batches[i % len(batches)]
        t0 = clock()
        session.run(feed)
        session.synchronize()
        end = clock()
        samples.append(end - t0)
        i += 1
        elapsed = end - start
        if i >= min_count and elapsed >= min_ns:
            return samples, end - start, True
        if elapsed >= max_ns:
            return samples, end - start, False


class SingleStream(Scenario):
    """One query at a time, each waiting for the previous: latency."""

    kind = "single_stream"

    def __init__(self, spec: SingleStreamSpec):
        self.spec = spec

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        samples, wall, valid = _timed_loop(session, _batches(data, batch_size), s.warmup_count, s.min_count,
                                           s.min_duration_s, s.max_duration_s)
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {len(samples)} of "
                                  f"min_count={s.min_count} queries"]
        return ScenarioResult(self.kind, batch_size, samples, wall, valid, notes)


class Offline(Scenario):
    """Batches back to back as fast as the session accepts them: throughput = samples / wall time."""

    kind = "offline"

    def __init__(self, spec: OfflineSpec):
        self.spec = spec

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        samples, wall, valid = _timed_loop(session, _batches(data, batch_size), s.warmup_count, s.min_count,
                                           s.min_duration_s, s.max_duration_s)
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {len(samples)} batches"]
        return ScenarioResult(self.kind, batch_size, samples, wall, valid, notes)


SCENARIOS: dict[str, type[Scenario]] = {SingleStream.kind: SingleStream, Offline.kind: Offline}


def make_scenario(spec: dict[str, Any]) -> Scenario:
    """The scenario object for a serialised scenario spec."""
    kind = spec["kind"]
    spec_types = {"single_stream": SingleStreamSpec, "offline": OfflineSpec}
    return SCENARIOS[kind](spec_types[kind].model_validate(spec))
