"""Test-only wrappers of real backends that plant a known slowdown: each query takes ``1 + slowdown`` times its
own measured duration.

``slowed-onnxruntime``, ``slowed-openvino`` and ``slowed-litert`` accept their runtime's options plus
``slowdown`` and run the real session; after each call they busy-wait for ``slowdown`` times the call's own
duration (a sleep's wake-up jitter is not ours to plant). So the runtime's own noise stays in the series,
and a planted change of exactly 10% rides on it: what ``benchmarks/replication.py --parts real`` needs to
measure how often compare finds a change on real cases. With ``slowdown = 0`` the wrapper adds one clock
read per call.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from costbench.backends.base import Availability, Backend, BackendOptions, Session
from costbench.backends.litert_backend import LiteRTBackend
from costbench.backends.onnxruntime_backend import OnnxRuntimeBackend
from costbench.backends.openvino_backend import OpenVinoBackend


class _SlowedSession(Session):
    def __init__(self, inner: Session, slowdown: float):
        self._inner = inner
        self._slowdown = slowdown
        self.timing = inner.timing

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter_ns()
        out = self._inner.run(inputs)
        if self._slowdown:
            end = time.perf_counter_ns()
            until = end + int((end - start) * self._slowdown)
            while time.perf_counter_ns() < until:
                pass
        return out

    def synchronize(self) -> None:
        self._inner.synchronize()

    def fork(self) -> "_SlowedSession":
        return _SlowedSession(self._inner.fork(), self._slowdown)

    def preferred_concurrency(self) -> int:
        return self._inner.preferred_concurrency()

    def close(self) -> None:
        self._inner.close()

    def info(self) -> dict[str, Any]:
        return {**self._inner.info(), "planted_slowdown": self._slowdown}


def slowed(inner_cls: type[Backend]) -> type[Backend]:
    """A backend named ``slowed-<inner>`` that runs ``inner_cls`` with a planted ``slowdown`` option."""

    class Options(inner_cls.Options):  # type: ignore[name-defined, misc]
        slowdown: float = Field(0.0, ge=0.0, description="planted: 0.10 makes every call 10% slower than it was")

    class Slowed(Backend):
        name = f"slowed-{inner_cls.name}"
        capabilities = inner_cls.capabilities

        def __init__(self) -> None:
            self._inner = inner_cls()

        def _inner_options(self, options: BackendOptions) -> BackendOptions:
            # Only what the suite set: an inner default set explicitly can trip the inner's own checks.
            given = self.own_options(options).model_dump(exclude={"slowdown"}, exclude_unset=True)
            return self._inner.Options.model_validate(given)

        def probe(self) -> Availability:
            return self._inner.probe()

        def probe_device(self, device: str) -> Availability:
            return self._inner.probe_device(device)

        def builds_for(self, options: BackendOptions, device: str) -> bool:
            return self._inner.builds_for(self._inner_options(options), device)

        def build_cache(self, artifact, options, batch_size, device, cache_dir):
            return self._inner.build_cache(artifact, self._inner_options(options), batch_size, device, cache_dir)

        def prepare(self, artifact, options: BackendOptions, batch_size: int, device: str = "cpu") -> Session:
            session = self._inner.prepare(artifact, self._inner_options(options), batch_size, device)
            return _SlowedSession(session, self.own_options(options).slowdown)

    Slowed.Options = Options
    Slowed.__name__ = Slowed.__qualname__ = f"Slowed{inner_cls.__name__}"
    return Slowed


SlowedOnnxRuntime = slowed(OnnxRuntimeBackend)
SlowedOpenVino = slowed(OpenVinoBackend)
SlowedLiteRT = slowed(LiteRTBackend)
