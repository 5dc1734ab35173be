"""How fast the machine runs a fixed piece of work right now: a yardstick read just before a measuring process
starts and just after it ends.

A neighbour on the host that competes for the last-level cache, the memory bus or the core's clock slows every
thread of this VM without taking any of its CPU time, so ``/proc/stat`` (:mod:`.contention`) cannot see it. On
the 2-vCPU AMD EPYC VM one such phase lasted some 10-25 s: one-thread EfficientNet-Lite0 processes measured a
p50 of 11.9-17.8 ms instead of 9-11 while ``cpu_contention`` stayed under 1%. The yardstick is meant to see them. It is an interpreter loop (the
core's speed) and a pass over 16 MiB (the cache and memory), timed a few times by the runner, outside the
measuring process, so it costs that process neither time nor memory. A process whose yardstick ran much slower
than its case's other processes' was measured while the machine was slow (:mod:`costbench.harness.results.rounds`
judges it).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from costbench.core.metrics import YARDSTICK

LOOP = 20_000  # interpreter iterations (about 1 ms)
SWEEP_BYTES = 16 << 20  # past a small VM's share of the last-level cache
REPEATS = 3  # the median of these is one reading

_buffers: tuple[np.ndarray, np.ndarray] | None = None


def _work(src: np.ndarray, dst: np.ndarray) -> float:
    t0 = time.perf_counter_ns()
    x = 0
    for i in range(LOOP):
        x += i & 7
    np.add(src, 1, out=dst)
    return (time.perf_counter_ns() - t0) / 1e6


def read(repeats: int = REPEATS) -> float:
    """Milliseconds the yardstick takes now: the median of ``repeats`` timings, after one untimed pass."""
    global _buffers
    if _buffers is None:  # allocated and touched once, so no reading pays for page faults
        _buffers = (np.ones(SWEEP_BYTES // 4, dtype=np.int32), np.zeros(SWEEP_BYTES // 4, dtype=np.int32))
    _work(*_buffers)
    return statistics.median(_work(*_buffers) for _ in range(repeats))


def row(before_ms: float, after_ms: float) -> dict:
    """The ``yardstick`` metric row of one process: the slower reading, both in its details."""
    return {"metric": YARDSTICK, "value": max(before_ms, after_ms), "unit": "ms",
            "details": {"before_ms": before_ms, "after_ms": after_ms, "loop": LOOP, "sweep_bytes": SWEEP_BYTES,
                        "repeats": REPEATS}}
