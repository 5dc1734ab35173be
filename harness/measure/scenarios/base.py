"""The scenario contract: a way of issuing queries, with its settings model beside it, and its raw result.

One timing convention for every backend: the timed region is ``session.run(inputs)`` followed by
``session.synchronize()``, measured with the host clock ``time.perf_counter_ns`` (and, where the session
offers one, a device timer around the same region); inputs are prepared host arrays rotated through real
samples. A scenario is registered by its ``kind`` (:mod:`.registry`); its primary series and headline
metric are in the metric catalogue (:mod:`costbench.core.metrics`).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from costbench.backends.base import Session
from costbench.harness.suite.schema import ScenarioSettings
from costbench.harness.build.zoo.base import SampleSet

ROTATE = 8  # distinct input batches cycled through while measuring
_SPIN_NS = 2_000_000  # sleep until this close to an arrival, then spin: sleep() overshoots by 50-100 µs
clock = time.perf_counter_ns


@dataclass
class ScenarioResult:
    """Raw timings from one scenario run, in nanoseconds, and whether the stopping rule was met."""

    kind: str
    batch_size: int
    samples_ns: list[int]  # one per query: single_stream/offline: service time; server: arrival -> completion
    wall_ns: int  # first timed query start -> last timed query end
    valid: bool  # the stopping rule was met before max_duration_s
    notes: list[str] = field(default_factory=list)
    series_ns: dict[str, list[int]] = field(default_factory=dict)  # further series, by catalogue name (queue_wait...)
    scalars: dict[str, tuple[float, str]] = field(default_factory=dict)  # (value, unit): achieved QPS, SLO verdict
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the QPS search's trials
    batch_sizes: list[int] = field(default_factory=list)  # server: queries in each batch, in dispatch order

    @property
    def queries(self) -> int:
        return len(self.samples_ns)


def input_batches(data: SampleSet, batch_size: int) -> list[dict[str, np.ndarray]]:
    return [data.batch(batch_size, start=i * batch_size) for i in range(ROTATE)]


def warm_up(session: Session, batches: list[dict[str, np.ndarray]], count: int) -> None:
    for i in range(count):
        session.run(batches[i % len(batches)])
        session.synchronize()


def wait_until(target_ns: int) -> None:
    """Sleep most of the way to ``target_ns`` (perf_counter_ns), then spin for sub-10 µs accuracy."""
    remaining = target_ns - clock()
    if remaining > _SPIN_NS:
        time.sleep((remaining - _SPIN_NS) / 1e9)
    while clock() < target_ns:
        pass


class Scenario(abc.ABC):
    """A way of issuing queries; registered by its ``kind`` with its settings model ``Settings``."""

    kind: ClassVar[str]
    Settings: ClassVar[type[ScenarioSettings]]
    needs_generative: ClassVar[bool] = False  # generates tokens: only causal-LM models (the planner skips the rest)

    def __init__(self, spec: ScenarioSettings):
        self.spec = spec

    def time_budget_s(self) -> float:
        """Measuring time this scenario plans beyond the suite's ``timeout_s`` (the case's timeout grows by it)."""
        return 0.0

    @abc.abstractmethod
    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        """Warm up, then measure until the spec's stopping rule is met."""
