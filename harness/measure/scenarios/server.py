"""``server``: Poisson arrivals at a target rate from a fixed seed, optionally grouped into batches by a dynamic
batcher (``max_batch``, ``max_queue_delay_ms``, ``preferred_batch_sizes``).

Latency is measured per query from its scheduled arrival, so time spent queued or waiting for a batch
counts; the SLO percentile carries its bootstrap interval and the verdict is meets, misses or
undecided. With ``search = true``, the capacity: the rate at which the SLO percentile crosses the SLO,
estimated with a 95% interval within a time budget (:mod:`costbench.harness.measure.capacity`).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from costbench.backends.base import Session
from costbench.core.stats import bootstrap_ci, percentile
from costbench.harness.machine import contention
from costbench.harness.measure.capacity import CapacitySearch, SearchOutcome, SearchPlan, trial_queries
from costbench.harness.measure.queue_model import ServiceTimes, model_capacity
from costbench.harness.measure.scenarios.base import ROTATE, Scenario, ScenarioResult, clock, wait_until, warm_up
from costbench.harness.suite.schema import ScenarioSettings
from costbench.harness.build.zoo.base import SampleSet


class ServerSpec(ScenarioSettings):
    """Poisson arrivals at a target QPS from a fixed seed; latency from arrival, queueing included; an SLO.

    With ``search = true`` the target is found instead: the highest QPS whose ``slo_percentile``
    latency stays within ``slo_ms``.
    """

    kind: Literal["server"] = "server"
    target_qps: float | None = Field(None, gt=0, description="Mean arrival rate (queries per second).")
    slo_ms: float = Field(gt=0, description="Latency objective, arrival to completion.")
    slo_percentile: float = Field(99.0, gt=0, le=100, description="Which percentile must meet slo_ms.")
    search: bool = Field(False, description="Find the capacity: the rate at which the SLO percentile crosses the SLO.")
    search_budget_s: float = Field(180.0, gt=0, description="Search: wall time for all its trials (the service-time "
                                   "probe included); the search plans every trial within it, answers with what it "
                                   "has when it ends, and the case's timeout grows by it.")
    search_precision: float = Field(0.025, gt=0, lt=1, description="Search: stop once the capacity's 95% interval "
                                    "is within this relative half-width.")
    seed: int = Field(0, description="Seed of the arrival process; same seed, same arrival times (process k of "
                      "a case adds k x 1,000,003).")
    warmup_count: int = Field(5, ge=0)
    min_count: int = Field(200, ge=1, description="Queries per trial, at least (fewer where max_duration_s at the "
                           "rate allows fewer: a trial is judged on what it collected)...")
    min_duration_s: float = Field(2.0, ge=0, description="...and enough for this long at the target rate.")
    max_duration_s: float = Field(60.0, gt=0, description="Arrivals are planned within this time; a server still "
                                  "behind its arrivals here is overloaded.")
    concurrency: int = Field(1, ge=1, description="Batches served at once (worker threads).")
    max_batch: int = Field(1, ge=1, description="Dynamic batching: the most queries run as one batch (1: no batching).")
    max_queue_delay_ms: float = Field(0.0, ge=0, description="Dynamic batching: how long the oldest waiting query "
                                      "may wait for others to join its batch.")
    preferred_batch_sizes: list[int] = Field(default_factory=list, description="Dynamic batching: batch sizes to form "
                                             "when more queries are waiting (each 1..max_batch); the largest one "
                                             "dispatches a batch without waiting for the delay.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the SLO percentile's interval and of "
                              "the searched capacity's interval.")

    @model_validator(mode="after")
    def _target_or_search(self) -> "ServerSpec":
        if self.target_qps is None and not self.search:
            raise ValueError("server scenario needs target_qps, or search = true to find the highest QPS within the SLO")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} must each be between 1 and max_batch = {self.max_batch}")
        if self.max_batch == 1 and self.max_queue_delay_ms > 0:
            raise ValueError("max_queue_delay_ms needs max_batch > 1: with max_batch = 1 no query can join a batch, "
                             "so the delay would only add latency")
        return self

    @property
    def batching(self) -> bool:
        """Whether queries are served in dynamic batches (max_batch > 1)."""
        return self.max_batch > 1


@dataclass
class _Trial:
    """One server run at one arrival rate: per query (arrival order) and per batch timings."""

    qps: float
    planned: int  # arrivals planned: min_count, or fewer where they would not all arrive within max_duration_s
    latency_ns: list[int]  # per query: scheduled arrival -> end of its batch
    queue_ns: list[int]  # per query: scheduled arrival -> start of its batch
    lateness_ns: list[int]  # per batch: start minus the moment it was due (the load generator's error)
    batch_sizes: list[int]  # per batch: queries in it
    service_ns: list[int]  # per batch: start -> end
    wall_ns: int
    complete: bool  # every planned query was served: the server never fell hopelessly behind
    stop_reason: str = ""

    def latency_at(self, p: float) -> float:
        return percentile(self.latency_ns, p)

    def lateness_at(self, p: float) -> float:
        """The load generator's own error: how late batches started after the moment they were due."""
        return percentile(self.lateness_ns, p) if self.lateness_ns else 0.0

    def backlog_growth_ns(self) -> float:
        """Median queue wait of the last quarter of queries minus that of the first: ~0 in a stable queue."""
        q = len(self.queue_ns) // 4
        if q < 5:
            return 0.0
        return float(np.median(self.queue_ns[-q:]) - np.median(self.queue_ns[:q]))


def poisson_arrivals(qps: float, count: int, seed: int) -> np.ndarray:
    """Arrival offsets in ns from the start: cumulative exponential gaps with mean 1/qps, from ``seed``."""
    gaps = np.random.default_rng(seed).exponential(1e9 / qps, size=count)
    return np.cumsum(gaps).astype(np.int64)


# A server result whose load generator started queries later than this fraction of the SLO (p99 of
# its wake-up error) is invalid: the verdict would measure the harness's scheduling, not the model.
LATENESS_SLO_FRACTION = 0.05

# A search trial gives up once a query has waited this many SLOs (and at least GIVE_UP_MIN_NS): a
# rate the server sustains within its SLO practically never queues a query that long, and an
# overloaded trial would otherwise run until max_duration_s for a verdict already known.
GIVE_UP_SLOS = 20
GIVE_UP_MIN_NS = 100_000_000

MEETS, MISSES, UNDECIDED = "meets", "misses", "undecided"
MIN_FRACTION = 0.01  # of the service-time capacity: the lowest rate a search tries before answering 0

# Where a search starts is only a guess, and guessing low costs more than guessing high: below the capacity each
# trial runs its full max_duration_s at a low rate and the search climbs x1.5 a trial, while a trial past the
# capacity gives up early and the search then closes in. The queue model on the probe's 20 runs a size takes one
# run the machine preempted as a 5% tail of the service time: in one run it put a batching server of about 3,900
# queries/s at 51, and a 40-s search that began at 46 climbed to 156 and ran out. So a search starts at no less
# than this fraction of the model on each size's median service time (what the queue would sustain were every
# run typical).
START_OF_TYPICAL_MODEL = 0.5
_BLOCKS = 10  # batch means over this many consecutive blocks estimate the latencies' autocorrelation


def search_start(model: float, typical: float, service_cap: float, ceiling: float) -> float:
    """Queries/s a capacity search begins at: just under the queue model's capacity on the probed service
    times, but no less than START_OF_TYPICAL_MODEL of the model on the typical (median) ones, nor above the
    load generator's ceiling; a quarter of the back-to-back capacity where neither model sustains any rate."""
    start = max(0.9 * model, START_OF_TYPICAL_MODEL * typical)
    return min(start if start > 0 else 0.25 * service_cap, 0.9 * ceiling)


def percentile_interval(latency_ns: Sequence[int], p: float, confidence: float) -> tuple[float, float]:
    """Interval of the nearest-rank p-th percentile of a queue's latencies, in arrival order.

    The exact bootstrap interval (:func:`bootstrap_ci`) assumes independent samples; latencies in a
    queue are not (a long busy period delays many queries in a row), which makes it far too narrow near
    capacity. The count of samples above the percentile varies by a factor ``tau`` more than for
    independent samples; ``tau`` is estimated by batch means, of that indicator and of the latencies
    themselves (exceedances cluster in busy periods, whose length the latencies' correlation
    measures), taking the larger. The interval is the order statistics at ranks
    ``k ± z·sqrt(tau·n·q·(1-q))``, never narrower than the bootstrap's. In simulated M/D/1 queues at
    72% load its upper end reached the true p99 in 99% of 5,000-query trials (99% interval), 89% of
    2,000-query and only about half of 600-query ones: near capacity a trial needs thousands of
    queries to see the tail at all (the bootstrap alone: about half, at every size).
    """
    from scipy.special import ndtri

    x = np.asarray(latency_ns, dtype=np.float64)
    low, high = bootstrap_ci(x, p, confidence)
    n = x.size
    q = p / 100.0
    if n < 4 * _BLOCKS or not 0 < q < 1:
        return low, high
    above = (x > percentile(x, p)).astype(np.float64)
    size = n // _BLOCKS
    means = above[:size * _BLOCKS].reshape(_BLOCKS, size).mean(axis=1)
    tau = max(1.0, size * float(means.var(ddof=1)) / max(q * (1 - q), 1e-12))
    spread = float(x.var())
    if spread > 0:
        lat_means = x[:size * _BLOCKS].reshape(_BLOCKS, size).mean(axis=1)
        tau = max(tau, size * float(lat_means.var(ddof=1)) / spread)
    half = float(ndtri(0.5 + confidence / 2)) * math.sqrt(tau * n * q * (1 - q))
    k = max(1, math.ceil(q * n))
    ordered = np.sort(x)
    lo_rank, hi_rank = max(1, math.floor(k - half)), min(n, math.ceil(k + half))
    return min(low, float(ordered[lo_rank - 1])), max(high, float(ordered[hi_rank - 1]))


@dataclass(frozen=True)
class BatchPolicy:
    """The dynamic batcher's rule (as Triton's dynamic batcher: a size cap, a queue delay, preferred sizes).

    A free server takes the oldest waiting query and dispatches when ``fill`` queries wait (the
    largest preferred size, else ``max_batch``) or when that query has waited ``delay_ns``,
    whichever is first; the batch is then the largest preferred size that the waiting queries fill,
    or all of them (at most ``max_batch``) when none does.
    """

    max_batch: int = 1
    delay_ns: int = 0
    preferred: tuple[int, ...] = ()

    @property
    def fill(self) -> int:
        return max(self.preferred) if self.preferred else self.max_batch

    def size(self, waiting: int) -> int:
        """How many of ``waiting`` (>= 1) queries form the batch."""
        cap = min(waiting, self.max_batch)
        fits = [p for p in self.preferred if p <= cap]
        return max(fits) if fits else cap

    def due(self, arrivals: Sequence[int], i: int, free: int) -> int:
        """When a server free at ``free`` dispatches the batch headed by query ``i`` (arrival times, ns)."""
        ready = arrivals[i] + self.delay_ns
        j = i + self.fill - 1
        if j < len(arrivals):
            ready = min(ready, arrivals[j])
        return max(ready, free)


class Server(Scenario):
    """Poisson arrivals at a target QPS, optionally dynamically batched; latency includes queueing; SLO verdict."""

    Settings = ServerSpec
    kind = "server"

    def __init__(self, spec: ServerSpec):
        super().__init__(spec)
        s = spec
        self.policy = BatchPolicy(s.max_batch, int(round(s.max_queue_delay_ms * 1e6)), tuple(s.preferred_batch_sizes))

    def _count(self, qps: float) -> int:
        s = self.spec
        return trial_queries(qps, s.min_count, s.min_duration_s, s.max_duration_s)

    def time_budget_s(self) -> float:
        return self.spec.search_budget_s if self.spec.search else 0.0

    def trial(self, session: Session, feeds: dict[int, list[dict[str, np.ndarray]]], qps: float, seed: int,
              count: int | None = None, give_up_ns: int | None = None) -> _Trial:
        """One run at ``qps`` (``count`` arrivals, default :meth:`_count`), batched by the policy, served by
        ``concurrency`` workers."""
        offsets = poisson_arrivals(qps, count or self._count(qps), seed)
        # Judged on what arrives within max_duration_s: a low rate that cannot reach min_count is not overloaded.
        offsets = offsets[:max(1, int(np.searchsorted(offsets, self.spec.max_duration_s * 1e9, side="right")))]
        if self.spec.concurrency == 1:
            return self._serve_inline(session, feeds, qps, offsets, give_up_ns)
        return self._serve_threads(session, feeds, qps, offsets, give_up_ns)

    def _limits(self, give_up_ns: int | None) -> tuple[int, int]:
        """(most a waiting query may wait, latest a batch may start) before the trial stops as overloaded.

        Arrivals end by max_duration_s; a server still busy with them a give-up time later is behind.
        """
        grace = max(GIVE_UP_MIN_NS, int(GIVE_UP_SLOS * self.spec.slo_ms * 1e6))
        end = int(self.spec.max_duration_s * 1e9) + grace
        return (1 << 62 if give_up_ns is None else give_up_ns), end

    def _next_batch(self, arrivals: list[int], i: int, free: int, start: int, wait_limit: int,
                    end_limit: int) -> tuple[str, int, int, int]:
        """Dispatch the batch headed by query ``i`` on a server free since ``free``: (why the trial stops as
        overloaded, or ""; when the batch was due; when it starts; its size). Waits until it is due."""
        now = clock()
        if now - arrivals[i] > wait_limit or now - start > end_limit:
            return _overload_reason(now - arrivals[i], now - start, wait_limit), 0, 0, 0
        due = self.policy.due(arrivals, i, free)
        if now < due:
            wait_until(due)
        t0 = clock()
        waiting = bisect.bisect_right(arrivals, t0, i, min(len(arrivals), i + self.policy.max_batch)) - i
        return "", due, t0, self.policy.size(waiting)

    def _serve_inline(self, session: Session, feeds, qps: float, offsets: np.ndarray,
                      give_up_ns: int | None) -> _Trial:
        # One server and no threads: the loop knows the arrival schedule, so it dispatches each batch
        # exactly when the batcher would, and the only scheduler error is the wake-up of wait_until.
        n = len(offsets)
        wait_limit, end_limit = self._limits(give_up_ns)
        run, sync = session.run, session.synchronize
        start = clock()
        arrivals = (offsets + start).tolist()
        latency, queued, late, sizes, service = [], [], [], [], []
        complete, reason = True, ""
        end = start
        i = 0
        while i < n:
            # Due from the end of the last batch: this loop's own bookkeeping counts as lateness.
            stop, due, t0, k = self._next_batch(arrivals, i, end, start, wait_limit, end_limit)
            if stop:
                complete, reason = False, stop
                break
            run(feeds[k][i % len(feeds[k])])
            sync()
            end = clock()
            for a in arrivals[i:i + k]:
                latency.append(end - a)
                queued.append(t0 - a)
            late.append(t0 - due)
            sizes.append(k)
            service.append(end - t0)
            i += k
        return _Trial(qps, n, latency, queued, late, sizes, service, end - start, complete, reason)

    def _serve_threads(self, session: Session, feeds, qps: float, offsets: np.ndarray,
                       give_up_ns: int | None) -> _Trial:
        # Each worker, when free, forms the next batch itself under one lock (so batches leave in
        # arrival order, the earliest free worker taking the next), then runs it on its own session.
        # Forming the batch where it starts means no hand-over between threads is timed.
        n, c = len(offsets), self.spec.concurrency
        wait_limit, end_limit = self._limits(give_up_ns)
        sessions = [session] + [session.fork() for _ in range(c - 1)]
        batcher = threading.Lock()
        state = {"next": 0, "stop": ""}
        done: list[list[tuple[int, int, int, int, int]]] = [[] for _ in range(c)]  # (first, size, due, start, end)
        start = clock()
        arrivals = (offsets + start).tolist()

        def worker(w: int) -> None:
            sess, out = sessions[w], done[w]
            free = start
            while True:
                with batcher:
                    i = state["next"]
                    if i >= n or state["stop"]:
                        return
                    stop, due, t0, k = self._next_batch(arrivals, i, free, start, wait_limit, end_limit)
                    if stop:
                        state["stop"] = stop
                        return
                    state["next"] = i + k
                sess.run(feeds[k][i % len(feeds[k])])
                sess.synchronize()
                free = clock()
                out.append((i, k, due, t0, free))

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = sorted(b for per in done for b in per)
        latency, queued = [], []
        for i, k, _, t0, t1 in batches:
            for a in arrivals[i:i + k]:
                latency.append(t1 - a)
                queued.append(t0 - a)
        end = max((b[4] for b in batches), default=start)
        return _Trial(qps, n, latency, queued, [t0 - due for _, _, due, t0, _ in batches],
                      [k for _, k, _, _, _ in batches], [t1 - t0 for _, _, _, t0, t1 in batches], end - start,
                      not state["stop"], state["stop"])

    # --- verdicts -------------------------------------------------------------------------------

    def _overloaded(self, trial: _Trial) -> str:
        """Why the queue grew during ``trial``, or "" when it did not (running out of time is not overload)."""
        if not trial.complete:
            return trial.stop_reason
        growth = trial.backlog_growth_ns()
        if growth > self.spec.slo_ms * 1e6:
            return (f"overloaded: the median queue wait grew by {growth / 1e6:.3f} ms from the first to the last "
                    "quarter of the trial, more than the SLO")
        return ""

    def _judge(self, latency_ns: Sequence[int], overloaded: str) -> dict[str, Any]:
        """The SLO percentile with its interval, and the verdict: meets, misses or undecided."""
        s = self.spec
        slo = s.slo_ms * 1e6
        value = percentile(latency_ns, s.slo_percentile)
        low, high = percentile_interval(latency_ns, s.slo_percentile, s.confidence)
        if overloaded or low > slo:
            verdict = MISSES
        elif high <= slo:
            verdict = MEETS
        else:
            verdict = UNDECIDED
        return {"verdict": verdict, "p_latency_ms": value / 1e6, "p_latency_ci_ms": [low / 1e6, high / 1e6],
                "overloaded": overloaded}

    # --- search ---------------------------------------------------------------------------------

    def _service_times(self, session: Session, feeds) -> ServiceTimes:
        """Each batch size's service time back to back (20 runs): 1, the fill size, and the sizes between
        at powers of two (the queue model interpolates the rest)."""
        p = self.policy
        sizes = {1, p.fill, p.max_batch, *p.preferred} | {k for k in (2, 4, 8, 16, 32, 64) if k < p.max_batch}
        out: dict[int, list[int]] = {}
        for k in sorted(sizes):
            runs = []
            for i in range(20):
                t0 = clock()
                session.run(feeds[k][i % len(feeds[k])])
                session.synchronize()
                runs.append(clock() - t0)
            out[k] = runs
        return ServiceTimes(out)

    def _generator_ceiling(self, feeds) -> float:
        """Queries/s the load generator and batcher move with a session that does nothing: every query due
        at once, so each batch is full and the only cost is the harness's own (its ceiling on this machine)."""
        n = 2000 * self.policy.fill
        null = _NullSession()
        offsets = np.zeros(n, dtype=np.int64)
        serve = self._serve_inline if self.spec.concurrency == 1 else self._serve_threads
        t = serve(null, feeds, 1.0, offsets, None)
        return len(t.latency_ns) / max(t.wall_ns / 1e9, 1e-9)

    def _search(self, session: Session, feeds) -> tuple[_Trial, dict[str, Any]]:
        """Probe the service times, then :class:`~costbench.harness.measure.capacity.CapacitySearch`.

        The queue model (:mod:`~costbench.harness.measure.queue_model`) on the probed service times says
        where to start; trials, not the model, give the answer. Every trial is recorded in the summary.
        """
        s = self.spec
        begun = clock()
        times = self._service_times(session, feeds)
        service_cap = times.capacity(self.policy.max_batch, self.policy.fill, s.concurrency)
        ceiling = self._generator_ceiling(feeds)
        slo_ns = s.slo_ms * 1e6
        model, typical = (model_capacity(t, slo_ns, s.slo_percentile, self.policy.max_batch, self.policy.delay_ns,
                                         self.policy.preferred, s.concurrency, seed=s.seed)
                          for t in (times, times.typical()))
        start = search_start(model, typical, service_cap, ceiling)
        give_up = max(GIVE_UP_MIN_NS, int(GIVE_UP_SLOS * slo_ns))
        trials: list[dict[str, Any]] = []
        kept: dict[float, _Trial] = {}
        seeds = iter(range(s.seed, s.seed + 1_000_000))

        def measure(qps: float, count: int) -> tuple[list[int], str]:
            before = contention.WaitReading.now()
            t = self.trial(session, feeds, qps, next(seeds), count=count, give_up_ns=give_up)
            waited = contention.WaitReading.now().since(before)
            over = self._overloaded(t)
            one = self._judge(t.latency_ns, over) if t.latency_ns else {"verdict": MISSES}
            trials.append({"qps": qps, "queries": len(t.latency_ns), "planned": t.planned, "complete": t.complete,
                           "p_latency_ms": one.get("p_latency_ms"), "p_latency_ci_ms": one.get("p_latency_ci_ms"),
                           "trial_verdict": one["verdict"], "overloaded": over,
                           "lateness_p99_ms": t.lateness_at(99) / 1e6,
                           "on_schedule": t.lateness_at(99) <= LATENESS_SLO_FRACTION * s.slo_ms * 1e6,
                           "service_p50_ms": percentile(t.service_ns, 50) / 1e6 if t.service_ns else None,
                           "service_p99_ms": percentile(t.service_ns, 99) / 1e6 if t.service_ns else None,
                           "mean_batch_size": float(np.mean(t.batch_sizes)) if t.batch_sizes else 0.0,
                           **waited})
            kept[qps] = t
            return t.latency_ns, over

        spent = (clock() - begun) / 1e9
        plan = SearchPlan(slo_ns=slo_ns, percentile=s.slo_percentile, confidence=s.confidence,
                          precision=s.search_precision, budget_s=max(s.search_budget_s - spent, 0.0),
                          min_queries=self._count, max_queries=lambda q: max(1, math.floor(s.max_duration_s * q)),
                          start_qps=start, floor_qps=MIN_FRACTION * service_cap, ceiling_qps=ceiling)
        outcome = CapacitySearch(plan, percentile_interval, clock=lambda: clock() / 1e9).run(measure)
        summary = self._summary(outcome, trials, service_cap, model, ceiling, times, spent)
        summary.update(typical_model_capacity_qps=typical, start_qps=start)
        # The result's own series: the last trial at the rate shown to meet (else the lowest tried); its
        # verdict: all the trials at that rate.
        pool = outcome.reported_pool()
        if pool is None:
            raise RuntimeError(f"the capacity search ran no trial: its budget of {s.search_budget_s:g} s was spent "
                               f"by the service-time probe ({spent:.1f} s); raise search_budget_s")
        judged = self._judge(pool.latency_ns, pool.overloaded) if pool.latency_ns else {
            "verdict": MISSES, "p_latency_ms": math.nan, "p_latency_ci_ms": [math.nan, math.nan], "overloaded": ""}
        summary["judged"] = judged
        return kept[pool.qps], summary

    def _summary(self, outcome: SearchOutcome, trials: list[dict[str, Any]], service_cap: float, model: float,
                 ceiling: float, times: ServiceTimes, probe_s: float) -> dict[str, Any]:
        """The search's answer, its interval and what bounds it, in words where a number alone would mislead."""
        s = self.spec
        est = outcome.estimate
        notes = []
        summary: dict[str, Any] = {**outcome.summary(), "trials": trials, "confidence": s.confidence,
                                   "service_capacity_qps": service_cap, "model_capacity_qps": model,
                                   "generator_ceiling_qps": ceiling, "probe_s": probe_s,
                                   "service_ms_by_batch": {k: percentile(v, 50) / 1e6 for k, v in
                                                           sorted(times.by_size.items())},
                                   "max_qps": est.shown_to_meet}
        top = max((p.qps for p in outcome.pools), default=0.0)
        held = contention.held_up(trials)
        summary.update(held)
        notes.append(contention.held_up_note(held, "model_capacity_qps"))
        notes.append(outcome.budget_note(s.search_budget_s, s.search_precision, len(trials)))
        if est.center.side == "below":
            notes.append(f"the SLO was not met even at {min(p.qps for p in outcome.pools):.4g} queries/s "
                         f"({min(p.qps for p in outcome.pools) / service_cap:.0%} of the service-time capacity)")
        elif est.center.side == "above" or est.high.side == "above":
            what = ("the load generator's ceiling on this machine" if top >= 0.95 * ceiling else "the highest rate tried")
            notes.append(f"no rate tried was shown to miss the SLO: the capacity is at least {est.shown_to_meet:.4g} "
                         f"queries/s, up to {what} ({top:.4g} queries/s)")
        centre = est.center.rate
        if centre is not None and centre >= 0.5 * ceiling:
            notes.append(f"the load generator can move at most {ceiling:.4g} queries/s on this machine with a session "
                         f"that does nothing; at {centre:.4g} queries/s its own work is a large part of the server's, "
                         "so this capacity is partly the harness's")
        elif centre is not None and model > 0 and centre < 0.85 * model:
            notes.append(f"the queue model on the probed service times sustains {model:.4g} queries/s, "
                         f"{1 - centre / model:.0%} more than measured: the server lost time its service times do "
                         "not show (the load generator, other processes, service slower under load)")
        if any(notes):
            summary["note"] = "; ".join(n for n in notes if n)
        return summary

    # --- scenario -------------------------------------------------------------------------------

    def feeds(self, data: SampleSet, batch_size: int) -> dict[int, list[dict[str, np.ndarray]]]:
        """Inputs per batch size (queries per batch): views into one array, so any size costs no copy."""
        sizes = range(1, self.policy.max_batch + 1)
        rows = (self.policy.max_batch + ROTATE) * batch_size
        full = data.batch(rows)
        return {k: [{name: a[j * batch_size:(j + k) * batch_size] for name, a in full.items()} for j in range(ROTATE)]
                for k in sizes}

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        feeds = self.feeds(data, batch_size)
        warm_up(session, feeds[1], s.warmup_count)
        if self.policy.max_batch > 1:  # every batch shape the batcher can form, so no first-use cost is measured
            for k in range(2, self.policy.max_batch + 1):
                warm_up(session, feeds[k], 1)
        search: dict[str, Any] = {}
        if s.search:
            trial, search = self._search(session, feeds)
        else:
            trial = self.trial(session, feeds, s.target_qps, s.seed)
        overloaded = self._overloaded(trial)
        # A searched rate is judged on all its trials together, a fixed rate on its one trial.
        judged = search.pop("judged") if s.search else self._judge(trial.latency_ns, overloaded)
        notes = [overloaded] if overloaded else []
        if trial.planned < s.min_count:
            notes.append(f"{trial.planned} queries of min_count={s.min_count}: max_duration_s={s.max_duration_s} at "
                         f"{trial.qps:.4g} queries/s allows no more; judged on those, with their interval")
        late_ms = trial.lateness_at(99) / 1e6
        # A search's answer rests on every trial's verdict, so every trial must have kept its schedule.
        behind = [t for t in search.get("trials", []) if not t["on_schedule"]]
        if behind:
            late_ms = max(late_ms, max(t["lateness_p99_ms"] for t in behind))
        on_schedule = late_ms <= LATENESS_SLO_FRACTION * s.slo_ms
        if not on_schedule:
            which = f" in {len(behind)} of {len(search['trials'])} search trials" if behind else ""
            notes.append(f"the load generator fell behind its own schedule{which} (wake-up lateness p99 up to "
                         f"{late_ms:.3f} ms, over {LATENESS_SLO_FRACTION:.0%} of the {s.slo_ms:g} ms SLO): the machine "
                         "is busy, so the SLO verdict measures the harness as much as the model; rerun on a quiet "
                         "machine")
        series = {"queue_wait": trial.queue_ns, "scheduler_lateness": trial.lateness_ns,
                  "service_time": trial.service_ns}
        result = ScenarioResult(self.kind, batch_size, trial.latency_ns, trial.wall_ns,
                                trial.complete and on_schedule, notes, series, batch_sizes=trial.batch_sizes)
        result.scalars.update({
            "target_qps": (trial.qps, "queries/s"),
            "achieved_qps": (len(trial.latency_ns) / (trial.wall_ns / 1e9), "queries/s"),
            "slo_met": (float(judged["verdict"] == MEETS), "bool"),
            "slo_latency": (judged["p_latency_ms"], "ms"),  # at slo_percentile, arrival to end
            "slo_latency_ci_low": (judged["p_latency_ci_ms"][0], "ms"),
            "slo_latency_ci_high": (judged["p_latency_ci_ms"][1], "ms"),
        })
        if s.search:
            result.scalars["max_qps_within_slo"] = (search["max_qps"], "queries/s")
            low, high = search["interval"]
            if search["estimate_qps"] is not None:
                result.scalars["capacity_qps"] = (search["estimate_qps"], "queries/s")
            result.scalars["capacity_ci_low"] = (low if low is not None else 0.0, "queries/s")
            if high is not None:
                result.scalars["capacity_ci_high"] = (high, "queries/s")
            result.scalars["capacity_model_qps"] = (search["model_capacity_qps"], "queries/s")
            result.scalars["generator_ceiling_qps"] = (search["generator_ceiling_qps"], "queries/s")
            result.details["search"] = search["trials"]
            result.details["search_summary"] = {k: v for k, v in search.items() if k != "trials"}
            if "note" in search:
                result.notes.append(search["note"])
        result.details["slo"] = {"slo_ms": s.slo_ms, "percentile": s.slo_percentile, "seed": s.seed,
                                 "concurrency": s.concurrency, "verdict": judged["verdict"],
                                 "p_latency_ci_ms": judged["p_latency_ci_ms"], "confidence": s.confidence}
        if self.policy.max_batch > 1:
            sizes, counts = np.unique(trial.batch_sizes, return_counts=True)
            result.details["batching"] = {
                "max_batch": s.max_batch, "max_queue_delay_ms": s.max_queue_delay_ms,
                "preferred_batch_sizes": list(s.preferred_batch_sizes),
                "batch_size_histogram": {int(k): int(c) for k, c in zip(sizes, counts)}}
            result.scalars["mean_batch_size"] = (float(np.mean(trial.batch_sizes)), "queries")
        return result


class _NullSession(Session):
    """Does nothing: the load generator's own cost, measured alone (it shares itself across workers)."""

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return []


def _overload_reason(waited_ns: int, elapsed_ns: int, wait_limit_ns: int) -> str:
    if waited_ns > wait_limit_ns:
        return f"overloaded: a query waited {waited_ns / 1e6:.1f} ms for service; the trial gave up"
    return f"overloaded: still serving a backlog {elapsed_ns / 1e9:.1f} s in, past max_duration_s"
