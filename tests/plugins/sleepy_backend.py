"""A test-only backend whose latency is set, not measured: it runs the ONNX model with ONNX Runtime, then busy-waits
until the query has taken ``base_ms * (1 + slowdown)`` times a per-process factor.

The per-process factor is exp(N(0, process_sd²)), drawn once when the session is prepared, from fresh
entropy: like the state a real process launch draws (memory layout, core, thread placement), it holds for
the process's life. ``SLEEPY_EXTRA_SLOWDOWN`` in the environment adds to ``slowdown`` (a slowdown planted through
the environment, as ``costbench ab --new-env`` sets it). So a planted slowdown is known exactly, and the between-process spread is known too:
what ``benchmarks/replication.py`` needs to measure how often compare finds a change that is or is not there.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.core.artifacts import FORMAT_ONNX, Artifact


class SleepyOptions(BackendOptions):
    base_ms: float = 0.5  # the latency of one query before the slowdown and the process factor
    slowdown: float = 0.0  # planted: 0.10 makes every query 10% slower
    process_sd: float = 0.015  # standard deviation of the log per-process factor (0: every process alike)


class _SleepySession(Session):
    def __init__(self, path, target_ns: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._target_ns = target_ns

    def run(self, inputs):
        start = time.perf_counter_ns()
        out = self._s.run(None, inputs)
        while time.perf_counter_ns() - start < self._target_ns:  # busy: a sleep's wake-up jitter is not ours to plant
            pass
        return out

    def info(self):
        return {"target_ms": self._target_ns / 1e6}


class SleepyBackend(Backend):
    name = "sleepy"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "int8"), formats=(FORMAT_ONNX,))
    Options = SleepyOptions

    def probe(self) -> Availability:
        return Availability.ok(sleepy="1")

    def prepare(self, artifact: Artifact, options: SleepyOptions, batch_size: int, device: str = "cpu") -> Session:
        factor = math.exp(np.random.default_rng().normal(0.0, options.process_sd)) if options.process_sd else 1.0
        extra = float(os.environ.get("SLEEPY_EXTRA_SLOWDOWN", "0"))
        target_ms = options.base_ms * (1.0 + options.slowdown + extra) * factor
        return _SleepySession(artifact.path, int(target_ms * 1e6))
