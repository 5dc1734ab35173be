"""``offline``: batches back to back, optionally from several threads at once; throughput over the wall time
from the first start to the last end."""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import Field, field_validator

from costbench.backends.base import Session
from costbench.harness.measure.scenarios.base import Scenario, ScenarioResult, clock, input_batches, warm_up
from costbench.harness.suite.schema import ScenarioSettings
from costbench.harness.build.zoo.base import SampleSet


class OfflineSpec(ScenarioSettings):
    """All samples as fast as possible; throughput in samples per second over the wall time."""

    kind: Literal["offline"] = "offline"
    warmup_count: int = Field(2, ge=0)
    min_count: int = Field(10, ge=1, description="At least this many batches...")
    min_duration_s: float = Field(1.0, ge=0, description="...and at least this long.")
    max_duration_s: float = Field(60.0, gt=0)
    concurrency: int | Literal["auto"] = Field(
        1, description="Queries in flight at once, each from its own thread (OpenVINO: its own infer request). "
        "'auto' asks the runtime (OpenVINO's optimal request count; 1 elsewhere).")

    @field_validator("concurrency")
    @classmethod
    def _positive_concurrency(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("concurrency must be >= 1 or 'auto'")
        return v


class Offline(Scenario):
    """Batches back to back from ``concurrency`` threads: throughput = samples / wall time."""

    Settings = OfflineSpec
    kind = "offline"

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        n = session.preferred_concurrency() if s.concurrency == "auto" else s.concurrency
        batches = input_batches(data, batch_size)
        sessions = [session] + [session.fork() for _ in range(n - 1)]
        for sess in sessions:
            warm_up(sess, batches, s.warmup_count)
        min_ns, max_ns = int(s.min_duration_s * 1e9), int(s.max_duration_s * 1e9)
        lock = threading.Lock()
        issued = [0]
        stop = threading.Event()
        per_thread: list[list[tuple[int, int]]] = [[] for _ in sessions]
        start = clock()

        def worker(k: int) -> None:
            sess, out = sessions[k], per_thread[k]
            while not stop.is_set():
                with lock:
                    i = issued[0]
                    issued[0] += 1
                t0 = clock()
                sess.run(batches[i % len(batches)])
                sess.synchronize()
                t1 = clock()
                out.append((t0, t1))
                with lock:
                    done = sum(len(p) for p in per_thread)
                elapsed = t1 - start
                if (done >= s.min_count and elapsed >= min_ns) or elapsed >= max_ns:
                    stop.set()

        if n == 1:
            worker(0)
        else:
            threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        spans = [span for p in per_thread for span in p]
        wall = max(t1 for _, t1 in spans) - start
        valid = len(spans) >= s.min_count and wall >= min_ns
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {len(spans)} batches"]
        result = ScenarioResult(self.kind, batch_size, [t1 - t0 for t0, t1 in spans], wall, valid, notes)
        result.scalars["concurrency"] = (float(n), "count")
        return result

