"""Clocks a session times its queries with: the host clock everywhere, CUDA events on NVIDIA devices.

A scenario asks the session for a device timer; when there is one, each query is timed on
both clocks and both are recorded, each with its convention, so host overhead and device time
can be told apart.
"""

from __future__ import annotations

import abc
import time
from typing import Any


class DeviceTimer(abc.ABC):
    """Times one region on a device clock. ``start``/``stop`` enqueue markers; ``elapsed_ns`` may wait for them."""

    clock: str

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def elapsed_ns(self) -> int:
        """Device time between the last start and stop; blocks until the stop marker has completed."""


class HostTimer(DeviceTimer):
    """``time.perf_counter_ns`` on the host; what every CPU runtime is timed with."""

    clock = "host time.perf_counter_ns"

    def __init__(self) -> None:
        self._t0 = self._t1 = 0

    def start(self) -> None:
        self._t0 = time.perf_counter_ns()

    def stop(self) -> None:
        self._t1 = time.perf_counter_ns()

    def elapsed_ns(self) -> int:
        return self._t1 - self._t0


class CudaEventTimer(DeviceTimer):
    """A pair of CUDA events recorded on a stream (``torch.cuda.Event(enable_timing=True)``), the current one by default.

    ``event_factory`` is injectable so the logic is testable without a GPU; by default it is
    torch's CUDA event class. Resolution is about 0.5 µs (CUDA's documented event resolution).
    """

    clock = "CUDA events (device), torch.cuda.Event.elapsed_time"

    def __init__(self, event_factory: Any = None, stream: Any = None) -> None:
        if event_factory is None:
            import torch

            event_factory = torch.cuda.Event
        self._begin = event_factory(enable_timing=True)
        self._end = event_factory(enable_timing=True)
        self._stream = stream  # None: the current stream; a session with its own stream passes it

    def start(self) -> None:
        self._begin.record(self._stream)

    def stop(self) -> None:
        self._end.record(self._stream)

    def elapsed_ns(self) -> int:
        self._end.synchronize()
        return int(round(self._begin.elapsed_time(self._end) * 1e6))  # elapsed_time is in milliseconds
