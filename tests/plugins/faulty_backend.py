"""A test-only backend that fails on demand (raise, SIGSEGV, hang, exit, leak memory, be slow); else runs ONNX via ORT."""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

import numpy as np

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.core.artifacts import FORMAT_ONNX, Artifact


class FaultyOptions(BackendOptions):
    # "run": prepares, then every run() raises (a failure while measuring, with the call's time in its message)
    fail: Literal["none", "raise", "segfault", "hang", "exit", "leak", "slow", "run"] = "none"
    slow_s: float = 4.0
    block_while: str | None = None  # fail="slow": instead of slow_s, wait while this file exists (tests resume)


class _OrtSession(Session):
    def __init__(self, path, fail_in_run: bool = False):
        import onnxruntime as ort

        self._s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._fail = fail_in_run

    def run(self, inputs):
        if self._fail:
            raise RuntimeError(f"faulty session asked to raise in run (at {time.perf_counter():.6f} s)")
        return self._s.run(None, inputs)


class FaultyBackend(Backend):
    name = "faulty"
    capabilities = Capabilities(devices=("cpu",), precisions=("fp32", "int8"), formats=(FORMAT_ONNX,))
    Options = FaultyOptions

    def probe(self) -> Availability:
        return Availability.ok(faulty="1")

    def prepare(self, artifact: Artifact, options: FaultyOptions, batch_size: int, device: str = "cpu") -> Session:
        if options.fail == "raise":
            raise RuntimeError("faulty backend asked to raise")
        if options.fail == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if options.fail == "hang":
            time.sleep(3600)
        if options.fail == "exit":
            os._exit(3)
        if options.fail == "leak":
            hoard = []
            while True:  # touch every page so it counts as resident
                hoard.append(np.ones(16 * 2**20, dtype=np.uint8))
                time.sleep(0.01)
        if options.fail == "slow":
            if options.block_while:
                deadline = time.monotonic() + 120
                while os.path.exists(options.block_while) and time.monotonic() < deadline:
                    time.sleep(0.05)
            else:
                time.sleep(options.slow_s)
        return _OrtSession(artifact.path, fail_in_run=options.fail == "run")
