"""A test-only backend that fails on demand: raise, crash (SIGSEGV), hang, or exit; else runs ONNX via ORT."""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

import numpy as np

from costbench.backends.base import Availability, Backend, BackendOptions, Capabilities, Session
from costbench.harness.artifacts import FORMAT_ONNX, Artifact


class FaultyOptions(BackendOptions):
    fail: Literal["none", "raise", "segfault", "hang", "exit"] = "none"


class _OrtSession(Session):
    def __init__(self, path):
        import onnxruntime as ort

        self._s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, inputs):
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
        return _OrtSession(artifact.path)
