"""A test-only backend whose service time is known exactly: ``a + b * rows`` per run, spent spinning on the host clock.

Its queue can therefore be simulated (tests/harness/queue_sim.py) and the server scenario checked against
the simulation. It accepts any ONNX artifact (the file is never read) and any batch size in one session.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.core.artifacts import FORMAT_ONNX, Artifact


class LinearServiceOptions(BackendOptions):
    a_ms: float = Field(1.0, ge=0, description="Fixed cost of one run.")
    b_ms: float = Field(0.0, ge=0, description="Cost of each row of the batch.")
    wait: Literal["spin", "sleep"] = Field("spin", description="spin: hold the core (and the GIL) like a CPU "
                                           "runtime; sleep: release both, like a native runtime on another device.")


class LinearServiceSession(Session):
    """Holds the core for ``a + b * rows`` (like a CPU runtime), returns its first input."""

    def __init__(self, a_ms: float, b_ms: float, wait: str = "spin"):
        self.a_ns, self.b_ns = int(a_ms * 1e6), int(b_ms * 1e6)
        self.sleep = wait == "sleep"

    def service_ns(self, rows: int) -> int:
        return self.a_ns + self.b_ns * rows

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        first = next(iter(inputs.values()))
        if self.sleep:  # overshoots by tens of µs; a test reads the service time each run had
            time.sleep(self.service_ns(len(first)) / 1e9)
            return [first]
        end = time.perf_counter_ns() + self.service_ns(len(first))
        while time.perf_counter_ns() < end:
            pass
        return [first]


class LinearServiceBackend(Backend):
    name = "linear-service"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32",), formats=(FORMAT_ONNX,))
    Options = LinearServiceOptions

    def probe(self) -> Availability:
        return Availability.ok(linear_service="1")

    def prepare(self, artifact: Artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
        self.check_request(artifact, batch_size, device)
        opts: LinearServiceOptions = self.own_options(options)
        return LinearServiceSession(opts.a_ms, opts.b_ms, opts.wait)

    def prepare_batched(self, artifact: Artifact, options: BackendOptions, batch_size: int, max_batch: int,
                        device: str = "cpu") -> Session:
        """One session takes every batch size: the service time is a function of the rows."""
        return self.prepare(artifact, options, batch_size, device)
