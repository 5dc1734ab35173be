"""``generate_server``: generation requests arriving at a rate, served one at a time, with an SLO on TTFT and TPOT.

Requests arrive as a Poisson process from a fixed seed; each has its own prompt and output length, drawn
uniformly between ``*_tokens_min`` and ``*_tokens`` (equal by default: fixed lengths). The server has one
generation slot, as a ``generate`` loop or a llama.cpp server with one slot does: a request waits in FIFO
order until the previous one has finished. So, per request:

- TTFT = first token on the host - the request's arrival (queue wait + prefill);
- TPOT = (last stamp - first stamp) / (output tokens - 1), as in ``generate`` (load does not change it here);
- a request *meets* the SLO when its TTFT ≤ ``ttft_slo_ms`` and its TPOT ≤ ``tpot_slo_ms`` both.

The SLO holds at a rate when ``slo_percentile`` % of requests meet it: the percentile of each request's
worse ratio, max(TTFT / ttft_slo, TPOT / tpot_slo), is at most 1. That is stricter than the two
percentiles apart (a request late on either counts once), and it is what a user sees.

With ``search = true`` (the default) the capacity: the request rate at which that percentile crosses 1,
with a 95% interval, by the server scenario's search (:mod:`costbench.harness.measure.capacity`) within
``search_budget_s``. Before it, a probe of back-to-back requests gives each request's prefill and duration,
and the queue model (an M/G/1 queue on those) the rate the search starts from.

Each trial of the search starts with the backlog a server running at its rate would hold (``steady_start``):
one draw from that queue model on the service times measured so far; the slot is held (idle) that long
before the first request. A trial of a few hundred requests from an empty queue ends, near capacity, long
before the queue fills, and so overestimates the capacity: by 13-16% on llama-200m int4
(results/reference/2026-12-05-amd-epyc-vnni-2vcpu/generative-serving/). After the search, the queue model on
every request the trials served is ``capacity_model_qps``: the rate their measured prefill and decoding
times alone would sustain, which the search's answer should match.

A session that can hold several requests at once (``session.engine()``, a continuous-batching engine such as
OpenVINO GenAI's ``ContinuousBatchingPipeline``) is served differently: each request is added to the engine at
its arrival, the engine advances one step at a time over every request it holds, and each request's new tokens
are stamped when the step that made them returns. TTFT and TPOT are per request as above. The probe still serves
requests one at a time (the unqueued times the unmeetable-SLO check needs); the one-slot queue model (M/G/1)
does not describe a batched server, so there it neither starts the search nor gives ``capacity_model_qps``.
Its steady start has no model to draw a backlog from, so it deletes the initial transient instead: each trial
first serves ``LEAD_IN`` times its count in requests at the same rate whose times are not kept, and the counted
requests arrive at a server already loaded as it would be at that rate (past its capacity, one whose queue has
grown for that long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from costbench.backends.base import GenerationEngine, GenerativeSession, Session
from costbench.core.metrics import GENERATE_SERVER, QUEUE_WAIT, REQUEST_LATENCY, TPOT
from costbench.core.stats import percentile
from costbench.harness.build.zoo.base import SampleSet
from costbench.harness.machine import contention
from costbench.harness.measure.capacity import CapacitySearch, SearchPlan, trial_queries
from costbench.harness.measure.queue_model import highest_rate_meeting, lindley_waits, stationary_backlog_ns
from costbench.harness.measure.scenarios.base import Scenario, ScenarioResult, clock, wait_until
from costbench.harness.measure.scenarios.server import percentile_interval, poisson_arrivals
from costbench.harness.suite.schema import ScenarioSettings

UNIT = 1_000_000_000  # an SLO ratio of 1 is stored as 1e9, so the search's integer "latencies" keep 9 digits
GIVE_UP_SLOS = 20  # a request that waited this many TTFT SLOs ends the trial as overloaded
# A continuous-batching trial's uncounted lead-in, as a fraction of its counted requests (steady_start).
LEAD_IN = 0.5


class GenerateServerSpec(ScenarioSettings):
    """Poisson request arrivals, one generation slot, an SLO on TTFT and TPOT; a capacity search by default."""

    kind: Literal["generate_server"] = "generate_server"
    prompt_tokens: int = Field(128, ge=1, description="Longest prompt (tokens); each request's is drawn uniformly "
                               "from prompt_tokens_min..prompt_tokens.")
    prompt_tokens_min: int | None = Field(None, ge=1, description="Shortest prompt (default: prompt_tokens, fixed).")
    output_tokens: int = Field(64, ge=2, description="Most tokens a request generates (end-of-sequence ignored).")
    output_tokens_min: int | None = Field(None, ge=2, description="Fewest (default: output_tokens, fixed).")
    ttft_slo_ms: float = Field(gt=0, description="Time to first token, arrival to the first token on the host.")
    tpot_slo_ms: float = Field(gt=0, description="Time per output token after the first.")
    slo_percentile: float = Field(99.0, gt=0, le=100, description="Share of requests that must meet both.")
    search: bool = Field(True, description="Find the capacity (requests/s); false: one trial at target_qps.")
    target_qps: float | None = Field(None, gt=0, description="Request rate of the one trial when search = false.")
    seed: int = Field(0, description="Seed of the arrivals and the lengths (process k of a case adds k x 1,000,003).")
    warmup_count: int = Field(2, ge=0, description="Untimed requests (the longest prompt and output) first.")
    min_count: int = Field(100, ge=1, description="Requests per trial, at least...")
    min_duration_s: float = Field(0.0, ge=0, description="...and enough for this long at the trial's rate.")
    max_duration_s: float = Field(120.0, gt=0, description="No arrival is planned after this (per trial).")
    steady_start: bool = Field(True, description="Start each trial with the backlog of a server that has run at the "
                               "trial's rate for long (one draw from the queue model on the service times measured "
                               "so far): a short trial then samples the steady state instead of a queue filling from "
                               "empty, which near capacity it would end long before reaching.")
    search_budget_s: float = Field(300.0, gt=0, description="Search: wall time for every trial and the probe.")
    search_precision: float = Field(0.05, gt=0, lt=1, description="Search: stop at this relative half-width.")
    confidence: float = Field(0.95, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "GenerateServerSpec":
        if not self.search and self.target_qps is None:
            raise ValueError("generate_server needs target_qps when search = false")
        for low, high, name in ((self.prompt_tokens_min, self.prompt_tokens, "prompt_tokens"),
                                (self.output_tokens_min, self.output_tokens, "output_tokens")):
            if low is not None and low > high:
                raise ValueError(f"{name}_min = {low} is above {name} = {high}")
        return self


@dataclass
class _Requests:
    """One trial's requests, in arrival order."""

    arrival_ns: list[int]
    ttft_ns: list[int] = field(default_factory=list)
    tpot_ns: list[int] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)  # arrival to the last token
    wait_ns: list[int] = field(default_factory=list)  # arrival to the start of its generate call
    prefill_ns: list[int] = field(default_factory=list)  # start of its generate call to its first token
    duration_ns: list[int] = field(default_factory=list)  # start to end of its generate call
    output_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    overloaded: str = ""
    wall_ns: int = 0
    step_sequences: list[int] = field(default_factory=list)  # engine serving: requests that got tokens, per step

    def ratios(self, ttft_slo_ns: float, tpot_slo_ns: float, queued: bool = True) -> list[int]:
        """Each request's worse SLO ratio, times :data:`UNIT`; ``queued = False``: as if it had not waited (its
        prefill in place of its TTFT), the least any rate could give it."""
        first = self.ttft_ns if queued else self.prefill_ns
        return [int(UNIT * max(a / ttft_slo_ns, b / tpot_slo_ns)) for a, b in zip(first, self.tpot_ns)]


class GenerateServer(Scenario):
    """Requests at a rate through one generation slot; the SLO on TTFT and TPOT; the capacity in requests/s."""

    Settings = GenerateServerSpec
    kind = GENERATE_SERVER
    needs_generative: ClassVar[bool] = True

    def time_budget_s(self) -> float:
        return self.spec.search_budget_s if self.spec.search else 0.0

    # --- requests ---------------------------------------------------------------------------------

    def _lengths(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(prompt, output) lengths of ``count`` requests, uniform in their ranges, from ``seed``."""
        s = self.spec
        rng = np.random.default_rng([seed, 1])
        prompt = rng.integers(s.prompt_tokens_min or s.prompt_tokens, s.prompt_tokens + 1, size=count)
        output = rng.integers(s.output_tokens_min or s.output_tokens, s.output_tokens + 1, size=count)
        return prompt, output

    def _serve(self, session: GenerativeSession, stream: np.ndarray, offsets: np.ndarray, seed: int,
               give_up_ns: int | None, backlog_ns: float = 0.0) -> _Requests:
        """Serve requests arriving at ``offsets`` (ns from now) one at a time, FIFO, the slot busy for
        ``backlog_ns`` first (the work a running server would still hold: it stays idle that long)."""
        prompt, output = self._lengths(len(offsets), seed)
        start = clock()
        arrivals = (offsets + start).tolist()
        out = _Requests(arrivals)
        if give_up_ns is not None and backlog_ns > give_up_ns:
            out.overloaded = ("overloaded: a server running at this rate would hold "
                              + ("ever more work (utilisation ≥ 1 on the service times measured so far)"
                                 if math.isinf(backlog_ns) else f"{backlog_ns / 1e9:.1f} s of work")
                              + "; the trial gave up before its first request")
            return out
        free_at = start + int(backlog_ns)
        for i, arrival in enumerate(arrivals):
            now = clock()
            if give_up_ns is not None and now - arrival > give_up_ns:
                out.overloaded = (f"overloaded: request {i} waited {(now - arrival) / 1e9:.1f} s for the generation "
                                  "slot; the trial gave up")
                break
            if now < max(arrival, free_at):
                wait_until(max(arrival, free_at))
            ids = np.ascontiguousarray(np.resize(stream[i % max(1, len(stream) - 1):], int(prompt[i]))[None, :])
            stamps: list[int] = []
            stamp = stamps.append
            t0 = clock()
            session.generate(ids, int(output[i]), lambda: stamp(clock()))
            t1 = clock()
            n = int(output[i])
            if len(stamps) != n:
                raise RuntimeError(f"the session stamped {len(stamps)} tokens for a request of {n}")
            out.ttft_ns.append(stamps[0] - arrival)
            out.tpot_ns.append(int(round((stamps[-1] - stamps[0]) / (n - 1))))
            out.latency_ns.append(stamps[-1] - arrival)
            out.wait_ns.append(t0 - arrival)
            out.prefill_ns.append(stamps[0] - t0)
            out.duration_ns.append(t1 - t0)
            out.output_tokens.append(n)
            out.prompt_tokens.append(int(prompt[i]))
        out.wall_ns = clock() - start
        return out

    def _serve_engine(self, engine: GenerationEngine, stream: np.ndarray, offsets: np.ndarray, seed: int,
                      give_up_ns: int | None, lead_in: int = 0) -> _Requests:
        """Serve requests arriving at ``offsets`` through a continuous-batching engine: each added at its arrival
        (at the first step boundary after it), the engine stepped while it holds any, each request's new tokens
        stamped as their step returns. The first ``lead_in`` requests load the server and are not kept."""
        prompt, output = self._lengths(len(offsets), seed)
        n = len(offsets)
        start = clock()
        arrivals = (offsets + start).tolist()
        out = _Requests(arrivals[lead_in:])
        stamps: list[list[int]] = [[] for _ in range(n)]
        admitted = [0] * n
        nxt = 0  # the next request to arrive
        unstarted = 0  # the oldest request added that has no token yet (first tokens come in arrival order)
        while True:
            now = clock()
            while nxt < n and arrivals[nxt] <= now:
                ids = np.resize(stream[nxt % max(1, len(stream) - 1):], int(prompt[nxt]))
                admitted[nxt] = clock()
                engine.add(nxt, ids, int(output[nxt]))
                nxt += 1
            if not engine.busy():
                if nxt >= n:
                    break
                wait_until(arrivals[nxt])
                continue
            while unstarted < nxt and stamps[unstarted]:
                unstarted += 1
            if give_up_ns is not None and unstarted < nxt and now - arrivals[unstarted] > give_up_ns:
                out.overloaded = (f"overloaded: request {unstarted} waited {(now - arrivals[unstarted]) / 1e9:.1f} s "
                                  "for its first token; the trial gave up")
                engine.abort()
                break
            got = engine.step()
            t = clock()
            for rid, k in got.items():
                stamps[rid].extend([t] * k)
            out.step_sequences.append(len(got))
        for i in range(n):
            m = int(output[i])
            if len(stamps[i]) != m:
                if out.overloaded and len(stamps[i]) < m:
                    continue  # dropped unfinished when the trial gave up
                raise RuntimeError(f"the engine stamped {len(stamps[i])} tokens for request {i} of {m}")
            if i < lead_in:
                continue
            first, last = stamps[i][0], stamps[i][-1]
            out.ttft_ns.append(first - arrivals[i])
            out.tpot_ns.append(int(round((last - first) / (m - 1))))
            out.latency_ns.append(last - arrivals[i])
            out.wait_ns.append(admitted[i] - arrivals[i])
            out.prefill_ns.append(first - admitted[i])
            out.duration_ns.append(last - admitted[i])
            out.output_tokens.append(m)
            out.prompt_tokens.append(int(prompt[i]))
        # from the first counted arrival, as a result's wall time is (the lead-in's is not the trial's)
        out.wall_ns = clock() - (arrivals[lead_in] if lead_in < n else start)
        return out

    def _count(self, qps: float) -> int:
        s = self.spec
        return trial_queries(qps, s.min_count, s.min_duration_s, s.max_duration_s)

    # --- the queue model --------------------------------------------------------------------------

    def model_capacity(self, probe: _Requests, queries: int = 100_000, seed: int = 0) -> float:
        """The rate at which the model's SLO-ratio percentile crosses 1: an M/G/1 queue whose requests are
        resampled from ``probe`` (prefill, duration and TPOT together), TTFT = wait + prefill."""
        s = self.spec
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, len(probe.duration_ns), size=queries)
        duration = np.asarray(probe.duration_ns, dtype=np.float64)[pick]
        prefill = np.asarray(probe.prefill_ns, dtype=np.float64)[pick]
        tpot = np.asarray(probe.tpot_ns, dtype=np.float64)[pick]
        gaps = rng.exponential(1.0, size=queries)
        ttft_slo, tpot_slo = s.ttft_slo_ms * 1e6, s.tpot_slo_ms * 1e6

        def meets(qps: float) -> bool:
            wait = lindley_waits(gaps * (1e9 / qps), duration)
            return percentile(np.maximum((wait + prefill) / ttft_slo, tpot / tpot_slo), s.slo_percentile) <= 1

        return highest_rate_meeting(meets, 1e9 / float(np.mean(duration)))

    # --- an SLO no rate meets --------------------------------------------------------------------

    def _unmeetable(self, probe: _Requests) -> tuple[str, float] | None:
        """Why no rate can meet the SLO, and the unqueued SLO ratio's percentile, when the probe shows it (else
        None): with no queue at all, a request's ratio is max(prefill / TTFT SLO, TPOT / TPOT SLO), and a queue
        only adds to it. Decided on the lower end of that percentile's interval, so a borderline configuration
        is still searched."""
        s = self.spec
        idle = probe.ratios(s.ttft_slo_ms * 1e6, s.tpot_slo_ms * 1e6, queued=False)
        low, _ = percentile_interval(idle, s.slo_percentile, s.confidence)
        if low <= UNIT:
            return None
        ratio = percentile(idle, s.slo_percentile) / UNIT
        return (f"the SLO cannot be met at any rate: with no queue, p{s.slo_percentile:g} of {len(idle)} requests' "
                f"SLO ratio is {ratio:.2f} (TTFT p{s.slo_percentile:g} "
                f"{percentile(probe.prefill_ns, s.slo_percentile) / 1e6:.1f} ms against {s.ttft_slo_ms:g} ms, TPOT "
                f"{percentile(probe.tpot_ns, s.slo_percentile) / 1e6:.1f} ms against {s.tpot_slo_ms:g} ms); "
                "no search was run"), ratio

    def _no_rate_result(self, probe: _Requests, why: str, ratio: float, batch_size: int) -> ScenarioResult:
        """The result of a search skipped because no rate can meet the SLO: the probe's unqueued requests, a
        capacity of zero."""
        series = {TPOT.name: probe.tpot_ns, REQUEST_LATENCY.name: probe.duration_ns,
                  QUEUE_WAIT.name: [0] * len(probe.duration_ns)}
        result = ScenarioResult(self.kind, batch_size, probe.prefill_ns, probe.wall_ns, True, [why], series)
        result.scalars.update({
            "slo_met": (0.0, "bool"), "slo_ratio": (ratio, "ratio"), "max_qps_within_slo": (0.0, "queries/s"),
            "capacity_ci_low": (0.0, "queries/s"),
            "output_tokens": (float(np.mean(probe.output_tokens)), "tokens"),
            "prompt_tokens": (float(np.mean(probe.prompt_tokens)), "tokens"),
        })
        result.details["search"] = []
        result.details["search_summary"] = {"stopped_by": "no rate can meet the SLO", "probe_requests":
                                            len(probe.duration_ns)}
        result.details["slo"] = self._slo_details(ratio)
        return result

    def _slo_details(self, ratio: float) -> dict[str, Any]:
        """The SLO a result was judged by, and its ratio at the SLO percentile."""
        s = self.spec
        return {"ttft_slo_ms": s.ttft_slo_ms, "tpot_slo_ms": s.tpot_slo_ms, "slo_ms": s.ttft_slo_ms,
                "percentile": s.slo_percentile, "seed": s.seed, "meets": "both TTFT and TPOT, per request",
                "slo_ratio_p": ratio}

    # --- scenario ---------------------------------------------------------------------------------

    def run(self, session: Session, data: SampleSet, batch_size: int) -> ScenarioResult:
        s = self.spec
        if not isinstance(session, GenerativeSession):
            raise TypeError(f"scenario {self.kind!r} needs a generative session (a causal-LM model on a backend that "
                            f"generates); got {type(session).__name__}")
        if batch_size != 1:
            raise ValueError(f"generate_server serves one request (one prompt) at a time; batch_size is {batch_size}")
        try:
            stream = np.asarray(data.inputs["input_ids"], dtype=np.int64).reshape(-1)
        except KeyError:
            raise ValueError(f"a generate scenario needs prompts under 'input_ids'; the model's data has "
                             f"{sorted(data.inputs)}") from None
        longest = np.resize(stream, s.prompt_tokens)[None, :]
        for _ in range(s.warmup_count):
            session.generate(longest, s.output_tokens, lambda: None)
        ttft_slo, tpot_slo = s.ttft_slo_ms * 1e6, s.tpot_slo_ms * 1e6
        give_up = int(GIVE_UP_SLOS * ttft_slo)
        engine = session.engine()
        seeds = iter(range(s.seed, s.seed + 1_000_000))
        trials: list[dict[str, Any]] = []
        kept: dict[float, _Requests] = {}
        served: list[_Requests] = []
        probe_durations: list[int] = []  # the service times a trial's starting backlog is drawn from, until trials

        def measure(qps: float, count: int) -> tuple[list[int], str]:
            seed = next(seeds)
            durations = [x for r in served for x in r.duration_ns] or probe_durations
            backlog = (stationary_backlog_ns(np.asarray(durations), qps, np.random.default_rng([seed, 2]))
                       if s.steady_start and durations and engine is None else 0.0)
            before = contention.WaitReading.now()
            if engine is None:
                req = self._serve(session, stream, poisson_arrivals(qps, count, seed), seed, give_up, backlog)
            else:
                lead = math.ceil(LEAD_IN * count) if s.steady_start else 0
                req = self._serve_engine(engine, stream, poisson_arrivals(qps, lead + count, seed), seed, give_up, lead)
            waited = contention.WaitReading.now().since(before)
            ratios = req.ratios(ttft_slo, tpot_slo)
            trials.append({"qps": qps, "requests": len(ratios), "planned": count, "overloaded": req.overloaded,
                           "backlog_s": None if math.isinf(backlog) else backlog / 1e9,
                           "slo_ratio_p": percentile(ratios, s.slo_percentile) / UNIT if ratios else None,
                           "ttft_p_ms": percentile(req.ttft_ns, s.slo_percentile) / 1e6 if ratios else None,
                           "tpot_p_ms": percentile(req.tpot_ns, s.slo_percentile) / 1e6 if ratios else None,
                           "duration_p_ms": percentile(req.duration_ns, s.slo_percentile) / 1e6 if ratios else None,
                           **waited})
            if engine is not None:
                trials[-1]["steps"] = len(req.step_sequences)
                trials[-1]["mean_step_sequences"] = (float(np.mean(req.step_sequences)) if req.step_sequences
                                                     else None)
            if qps not in kept or len(req.ttft_ns) >= len(kept[qps].ttft_ns):
                kept[qps] = req
            served.append(req)
            return ratios, req.overloaded

        notes: list[str] = []
        summary: dict[str, Any] = {}
        if s.search:
            begun = clock()
            # The probe: back-to-back requests (arrivals all at 0), each one's prefill, duration and TPOT, as
            # many as take about a tenth of the budget (4 to 64).
            first = self._serve(session, stream, np.zeros(1, dtype=np.int64), s.seed + 999_998, None)
            count = int(min(max(0.1 * s.search_budget_s / (first.duration_ns[0] / 1e9), 4), 64))
            probe = self._serve(session, stream, np.zeros(count, dtype=np.int64), s.seed + 999_999, None)
            probe_durations.extend(probe.duration_ns)
            unmet = self._unmeetable(probe)
            if unmet is not None:
                return self._no_rate_result(probe, *unmet, batch_size)
            model = self.model_capacity(probe, seed=s.seed)
            service_cap = 1e9 / float(np.mean(probe.duration_ns))
            # A batched server serves more than one slot would: start at the one-slot model's rate (a floor under
            # its capacity) and let the search climb as far as every sequence slot busy at the unbatched speed.
            most = 2.0 * service_cap * (1 if engine is None else engine.max_sequences)
            spent = (clock() - begun) / 1e9
            plan = SearchPlan(slo_ns=UNIT, percentile=s.slo_percentile, confidence=s.confidence,
                              precision=s.search_precision, budget_s=max(s.search_budget_s - spent, 0.0),
                              min_queries=self._count, max_queries=lambda q: max(1, math.floor(s.max_duration_s * q)),
                              start_qps=(0.9 if engine is None else 1.0) * model if model > 0 else 0.25 * service_cap,
                              floor_qps=0.01 * service_cap, ceiling_qps=most)
            outcome = CapacitySearch(plan, percentile_interval, clock=lambda: clock() / 1e9).run(measure)
            est = outcome.estimate
            # The queue model again on every request the trials served: the capacity their measured prefill and
            # decoding times imply with nothing else in the way (the search's answer should agree).
            every = _Requests([], prefill_ns=[x for r in served for x in r.prefill_ns],
                              duration_ns=[x for r in served for x in r.duration_ns],
                              tpot_ns=[x for r in served for x in r.tpot_ns])
            if engine is None:
                measured_model = self.model_capacity(every, seed=s.seed) if every.duration_ns else model
            else:
                measured_model = None
                start = (f"each trial's first {LEAD_IN:.0%} more requests loaded the server and were not counted"
                         if s.steady_start else "every trial started from an empty server")
                notes.append(f"continuous batching (up to {engine.max_sequences} sequences a step): the one-slot queue "
                             f"model (M/G/1) does not describe this server, so capacity_model_qps is not reported; "
                             f"{start}")
            summary = {**outcome.summary(), "model_capacity_qps": measured_model, "probe_model_capacity_qps": model,
                       "probe_requests": count, "service_capacity_qps": service_cap, "probe_s": spent,
                       "serving": ("one slot" if engine is None
                                   else f"continuous batching, up to {engine.max_sequences} sequences a step")}
            held = contention.held_up(trials)
            summary.update(held)
            notes.append(contention.held_up_note(held, "capacity_model_qps"))
            notes.append(outcome.budget_note(s.search_budget_s, s.search_precision, len(trials)))
            if est.center.side == "below":
                notes.append("the SLO was not met at any rate tried, down to "
                             f"{min(p.qps for p in outcome.pools):.3g} requests/s")
            notes = [n for n in notes if n]
            pool = outcome.reported_pool()
            if pool is None:
                raise RuntimeError(f"the capacity search ran no trial within its budget of {s.search_budget_s:g} s")
            pick = pool.qps
        else:
            measure(s.target_qps, self._count(s.target_qps))
            pick = s.target_qps
        req = kept[pick]
        ratios = req.ratios(ttft_slo, tpot_slo)
        valid = not req.overloaded and bool(ratios)
        if req.overloaded:
            notes.append(req.overloaded)
        # TTFT leads (the queue shows in it); the per-request SLO ratio is summarised at its percentile.
        series = {TPOT.name: req.tpot_ns, REQUEST_LATENCY.name: req.latency_ns, QUEUE_WAIT.name: req.wait_ns}
        result = ScenarioResult(self.kind, batch_size, req.ttft_ns, req.wall_ns, valid, notes, series)
        p_ratio = percentile(ratios, s.slo_percentile) / UNIT if ratios else math.inf
        mean_out = float(np.mean(req.output_tokens)) if req.output_tokens else float(s.output_tokens)
        mean_in = float(np.mean(req.prompt_tokens)) if req.prompt_tokens else float(s.prompt_tokens)
        result.scalars.update({
            "target_qps": (pick, "queries/s"),
            "slo_met": (float(p_ratio <= 1.0), "bool"),
            "slo_ratio": (p_ratio, "ratio"),
            "output_tokens": (mean_out, "tokens"), "prompt_tokens": (mean_in, "tokens"),
        })
        if s.search:
            e = outcome.estimate
            result.scalars["max_qps_within_slo"] = (e.shown_to_meet, "queries/s")
            if e.center.rate is not None:
                result.scalars["capacity_qps"] = (e.center.rate, "queries/s")
                result.scalars["capacity_output_tokens"] = (e.center.rate * mean_out, "tokens/s")
            result.scalars["capacity_ci_low"] = (e.low.rate or 0.0, "queries/s")
            if e.high.rate is not None:
                result.scalars["capacity_ci_high"] = (e.high.rate, "queries/s")
            if summary["model_capacity_qps"] is not None:
                result.scalars["capacity_model_qps"] = (summary["model_capacity_qps"], "queries/s")
            result.details["search"] = trials
            result.details["search_summary"] = summary
        result.details["slo"] = self._slo_details(p_ratio)
        return result
