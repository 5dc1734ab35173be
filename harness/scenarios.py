"""Scenario loops: how queries are issued and timed. One timing convention for every backend.

The timed region is ``session.run(inputs)`` followed by ``session.synchronize()``, measured
with the host clock ``time.perf_counter_ns`` (and, where the session offers one, a device timer
around the same region); inputs are prepared host arrays rotated through real samples.

- ``single_stream``: one query at a time; each query's latency.
- ``offline``: batches back to back, optionally from several threads at once; throughput over
  the wall time from the first start to the last end.
- ``server``: Poisson arrivals at a target rate from a fixed seed; latency is measured from the
  scheduled arrival, so time spent queued behind earlier queries counts; pass/fail against an
  SLO, and optionally a search for the highest rate that meets it.
"""

from __future__ import annotations

import abc
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from costbench.backends.base import Session
from costbench.core.stats import percentile
from costbench.harness.suite_schema import SCENARIO_SPECS, OfflineSpec, ServerSpec, SingleStreamSpec
from costbench.harness.zoo.base import SampleSet

_ROTATE = 8  # distinct input batches cycled through while measuring
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
    series_ns: dict[str, list[int]] = field(default_factory=dict)  # device time, queue wait, scheduler lateness
    scalars: dict[str, tuple[float, str]] = field(default_factory=dict)  # (value, unit): achieved QPS, SLO verdict
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the QPS search's trials

    @property
    def queries(self) -> int:
        return len(self.samples_ns)


def _batches(data: SampleSet, batch_size: int) -> list[dict[str, np.ndarray]]:
    return [data.batch(batch_size, start=i * batch_size) for i in range(_ROTATE)]


def _warm_up(session: Session, batches: list[dict[str, np.ndarray]], count: int) -> None:
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
    """A way of issuing queries; registered by its ``kind``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        """Warm up, then measure until the spec's stopping rule is met."""


class SingleStream(Scenario):
    """One query at a time, each waiting for the previous: latency."""

    kind = "single_stream"

    def __init__(self, spec: SingleStreamSpec):
        self.spec = spec

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        batches = _batches(data, batch_size)
        _warm_up(session, batches, s.warmup_count)
        timer = session.device_timer()
        samples: list[int] = []
        device: list[int] = []
        min_ns, max_ns = int(s.min_duration_s * 1e9), int(s.max_duration_s * 1e9)
        n_batches = len(batches)
        run, sync = session.run, session.synchronize
        start = clock()
        i = 0
        valid = False
        while True:
            feed = batches[i % n_batches]
            if timer is None:
                t0 = clock()
                run(feed)
                sync()
                end = clock()
            else:
                t0 = clock()
                timer.start()
                run(feed)
                timer.stop()
                sync()
                end = clock()
                device.append(timer.elapsed_ns())
            samples.append(end - t0)
            i += 1
            elapsed = end - start
            if i >= s.min_count and elapsed >= min_ns:
                valid = True
                break
            if elapsed >= max_ns:
                break
        notes = [] if valid else [f"stopped at max_duration_s={s.max_duration_s} with {i} of min_count={s.min_count}"]
        series = {"device": device} if device else {}
        return ScenarioResult(self.kind, batch_size, samples, end - start, valid, notes, series)


class Offline(Scenario):
    """Batches back to back from ``concurrency`` threads: throughput = samples / wall time."""

    kind = "offline"

    def __init__(self, spec: OfflineSpec):
        self.spec = spec

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        n = session.preferred_concurrency() if s.concurrency == "auto" else s.concurrency
        batches = _batches(data, batch_size)
        sessions = [session] + [session.fork() for _ in range(n - 1)]
        for sess in sessions:
            _warm_up(sess, batches, s.warmup_count)
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


@dataclass
class _Trial:
    qps: float
    latency_ns: list[int]
    queue_ns: list[int]
    lateness_ns: list[int]
    wall_ns: int
    complete: bool  # every planned query was issued before max_duration_s

    def latency_at(self, p: float) -> float:
        return percentile(self.latency_ns, p)

    def lateness_at(self, p: float) -> float:
        """The load generator's own error: how late queries started that found the server idle."""
        return percentile(self.lateness_ns, p) if self.lateness_ns else 0.0


def poisson_arrivals(qps: float, count: int, seed: int) -> np.ndarray:
    """Arrival offsets in ns from the start: cumulative exponential gaps with mean 1/qps, from ``seed``."""
    gaps = np.random.default_rng(seed).exponential(1e9 / qps, size=count)
    return np.cumsum(gaps).astype(np.int64)


# A server result whose load generator started queries later than this fraction of the SLO (p99 of
# its wake-up error) is invalid: the verdict would measure the harness's scheduling, not the model.
LATENESS_SLO_FRACTION = 0.05


class Server(Scenario):
    """Poisson arrivals at a target QPS; latency includes queueing; pass/fail against the SLO."""

    kind = "server"

    def __init__(self, spec: ServerSpec):
        self.spec = spec

    def _count(self, qps: float) -> int:
        return max(self.spec.min_count, math.ceil(self.spec.min_duration_s * qps))

    def trial(self, session: Session, batches: list[dict[str, np.ndarray]], qps: float, seed: int) -> _Trial:
        """One run at ``qps``: the planned arrivals, served by ``concurrency`` workers in arrival order."""
        s = self.spec
        offsets = poisson_arrivals(qps, self._count(qps), seed)
        if s.concurrency == 1:
            return self._serve_inline(session, batches, qps, offsets)
        return self._serve_threads(session, batches, qps, offsets)

    def _serve_inline(self, session: Session, batches, qps: float, offsets: np.ndarray) -> _Trial:
        # One server: no threads, so the only scheduler error is the wake-up of wait_until.
        max_ns = int(self.spec.max_duration_s * 1e9)
        latency, queued, late = [], [], []
        run, sync = session.run, session.synchronize
        start = clock()
        complete = True
        end = start
        for i, off in enumerate(offsets.tolist()):
            target = start + off
            free = clock()
            if free - start > max_ns:
                complete = False
                break
            if free < target:
                wait_until(target)
            t0 = clock()
            run(batches[i % len(batches)])
            sync()
            end = clock()
            latency.append(end - target)
            queued.append(max(0, t0 - target))
            late.append(t0 - max(target, free))
        return _Trial(qps, latency, queued, late, end - start, complete)

    def _serve_threads(self, session: Session, batches, qps: float, offsets: np.ndarray) -> _Trial:
        n = self.spec.concurrency
        max_ns = int(self.spec.max_duration_s * 1e9)
        sessions = [session] + [session.fork() for _ in range(n - 1)]
        work: queue.Queue = queue.Queue()
        results: list[tuple[int, int, int, int]] = []  # (target, dispatched, started, ended)
        lock = threading.Lock()

        def worker(sess: Session) -> None:
            while True:
                item = work.get()
                if item is None:
                    return
                i, target, dispatched = item
                t0 = clock()
                sess.run(batches[i % len(batches)])
                sess.synchronize()
                t1 = clock()
                with lock:
                    results.append((target, dispatched, t0, t1))

        threads = [threading.Thread(target=worker, args=(sess,), daemon=True) for sess in sessions]
        for t in threads:
            t.start()
        start = clock()
        complete = True
        for i, off in enumerate(offsets.tolist()):
            target = start + off
            if clock() - start > max_ns:
                complete = False
                break
            wait_until(target)
            work.put((i, target, clock()))
        for _ in threads:
            work.put(None)
        for t in threads:
            t.join()
        end = max(r[3] for r in results)
        return _Trial(qps, [t1 - tg for tg, _, _, t1 in results], [max(0, t0 - tg) for tg, _, t0, _ in results],
                      [d - tg for tg, d, _, _ in results], end - start, complete)

    def _meets(self, trial: _Trial) -> bool:
        return trial.complete and trial.latency_at(self.spec.slo_percentile) <= self.spec.slo_ms * 1e6

    def _search(self, session: Session, batches) -> tuple[_Trial, list[dict[str, Any]]]:
        """Bisect on a log scale between a low rate and the service-time capacity; keep the best passing trial."""
        s = self.spec
        probe = []
        for i in range(20):
            t0 = clock()
            session.run(batches[i % len(batches)])
            session.synchronize()
            probe.append(clock() - t0)
        capacity = s.concurrency * 1e9 / percentile(probe, 50)
        lo, hi = capacity * 0.02, capacity * 1.0
        trials: list[dict[str, Any]] = []
        best: _Trial | None = None
        first: _Trial | None = None

        def attempt(qps: float, k: int) -> bool:
            nonlocal best, first
            t = self.trial(session, batches, qps, s.seed + k)
            ok = self._meets(t)
            trials.append({"qps": qps, "p_latency_ms": t.latency_at(s.slo_percentile) / 1e6, "meets_slo": ok,
                           "complete": t.complete, "queries": len(t.latency_ns),
                           "lateness_p99_ms": t.lateness_at(99) / 1e6})
            first = first or t
            if ok and (best is None or qps > best.qps):
                best = t
            return ok

        if not attempt(lo, 0):
            return first, trials  # the SLO fails even at 2% of capacity
        if attempt(hi, 1):
            return best, trials
        for k in range(2, s.search_iterations + 2):
            mid = math.sqrt(lo * hi)
            if attempt(mid, k):
                lo = mid
            else:
                hi = mid
        return best, trials

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        batches = _batches(data, batch_size)
        _warm_up(session, batches, s.warmup_count)
        trials: list[dict[str, Any]] = []
        if s.search:
            trial, trials = self._search(session, batches)
        else:
            trial = self.trial(session, batches, s.target_qps, s.seed)
        meets = self._meets(trial)
        notes = [] if trial.complete else [f"overloaded: stopped issuing at max_duration_s={s.max_duration_s}"]
        late_ms = trial.lateness_at(99) / 1e6
        on_schedule = late_ms <= LATENESS_SLO_FRACTION * s.slo_ms
        if not on_schedule:
            notes.append(f"the load generator fell behind its own schedule (wake-up lateness p99 {late_ms:.3f} ms, "
                         f"over {LATENESS_SLO_FRACTION:.0%} of the {s.slo_ms:g} ms SLO): the machine is busy, so the "
                         "SLO verdict measures the harness as much as the model; rerun on a quiet machine")
        result = ScenarioResult(self.kind, batch_size, trial.latency_ns, trial.wall_ns, trial.complete and on_schedule,
                                notes,
                                {"queue_wait": trial.queue_ns, "scheduler_lateness": trial.lateness_ns})
        result.scalars.update({
            "target_qps": (trial.qps, "queries/s"),
            "achieved_qps": (len(trial.latency_ns) / (trial.wall_ns / 1e9), "queries/s"),
            "slo_met": (float(meets), "bool"),
            "slo_latency": (trial.latency_at(s.slo_percentile) / 1e6, "ms"),  # at slo_percentile, arrival to end
        })
        if s.search:
            found = any(t["meets_slo"] for t in trials)
            result.scalars["max_qps_within_slo"] = (trial.qps if found else 0.0, "queries/s")
            result.details["search"] = trials
        result.details["slo"] = {"slo_ms": s.slo_ms, "percentile": s.slo_percentile, "seed": s.seed,
                                 "concurrency": s.concurrency}
        return result


SCENARIOS: dict[str, type[Scenario]] = {SingleStream.kind: SingleStream, Offline.kind: Offline, Server.kind: Server}


def make_scenario(spec: dict[str, Any]) -> Scenario:
    """The scenario object for a serialised scenario spec."""
    kind = spec["kind"]
    return SCENARIOS[kind](SCENARIO_SPECS[kind].model_validate(spec))
