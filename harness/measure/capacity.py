"""The capacity search: the arrival rate at which a server's SLO percentile crosses its SLO, with an interval.

Each trial runs the server at one rate and yields its latencies; trials at the same rate are pooled. The
SLO percentile at each rate carries an interval (``percentile_interval``, widened for the queue's
correlated latencies). Three monotone curves over the rates tried (isotonic fits of the percentile and of
its interval's two ends, on a log scale) each cross the SLO somewhere: the estimate is where the
percentile crosses it, interpolated between the rates either side, and the interval runs from the last rate
below the pessimistic curve's crossing (the upper ends: up to this rate the SLO is shown to hold) to the first
rate past the optimistic one's (the lower ends: from there it is shown to fail); where three rates or more show
the curve's shape near the crossing, a weighted line through them narrows it (:func:`_local_fit`). The search places each trial at the current estimate, sizes it to
the precision the bracket still needs, and stops at the target precision or when its time budget is
spent; it never plans a trial that would not fit the budget.

Across processes (:func:`costbench.core.stats.combine_capacities`) the process is the unit of replication,
as for latency: a t interval over the processes' estimates, never narrower than their own intervals combined.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from costbench.core.stats import percentile

# An overloaded trial's percentile is unknown but far above the SLO: it gave up once a query had waited
# this many SLOs, so the curves take it as that (a finite value keeps the isotonic fit well defined).
OVERLOAD_SLOS = 20.0

# Each rate's percentile interval holds its level (in simulated M/D/1 trials of 3,000 queries, 94%), but
# a search picks its rates and the moment it stops from those same intervals, and a line through two or
# three of them inherits any that happens to be off. Fitted as if the design were fixed, the crossing's
# 95% interval held the true capacity in 76 of 100 simulated searches; with each rate's standard error
# taken twice as wide, in 95 of 100. tests/harness/measure/test_capacity.py keeps that coverage checked.
SD_INFLATION = 2.0

# A Fieller interval reaching beyond e^5 (150x) of the rates it was fitted near comes from a slope barely
# above zero: the line then says nothing about where the crossing is, and the envelopes answer alone.
MAX_LOG_SPAN = 5.0

# An interval end left open (no rate tried is shown to meet, or to miss) is closed by a trial 10% past the
# estimate; where that rate is still undecided after this many trials, the next goes 10% further. Near
# capacity a p99 interval narrows only as 1/sqrt(queries), so waiting for eight trials there spent a 40-s
# budget on one rate: 7 of 200 simulated searches (M/D/1, 5,000 queries a trial, 40 s) ended with no rate
# shown to meet the SLO; after two trials, none did, with the same coverage (199 of 200).
TRIALS_BEFORE_STEPPING = 2

# Below the estimate, a rate is left after one trial that did not show the SLO met. On a machine that preempts
# one service in 100 by 2 ms, a trial's p99 interval reaches far above its p99, and retrying such a rate spent
# the budget there: 2 of 300 simulated searches (40 s, 5,000 queries a trial) ended with no rate shown to meet
# the SLO, and 20 of 300 where it preempted one in 50; stepping on after one trial, none of 300 in either. It
# costs a wider interval where nothing preempts (median half-width 11.5% against 10.3%, 40 s).
TRIALS_BEFORE_STEPPING_DOWN = 1

# While no rate is shown to meet the SLO, each rate below the estimate that was tried without showing it makes
# the next step down this many times as long (10%, 20%, 40%, then MAX_STEP_DOWN). On a machine that preempts
# one service in 100 by 2 ms, a p99 interval's top stays above the SLO well below the capacity (the preemptions
# set it, not the queue), and with a fixed 10% a 40-s budget could run out on such rates: 10 of 2,400 simulated
# searches (preempting 1 in 100 and 1 in 50) ended with no rate shown to meet, none of 2,400 with the step
# doubling (results/reference/2026-12-07-intel-xeon-amx-2vcpu/capacity-step-down/). The plain M/D/1 search's
# interval held the capacity as often (391 against 390 of 400), 4-5% wider at the median. The cost: in the
# lowest tenth of the preempting searches, the rate shown to meet is under 0.61 of the estimate, not 0.72.
STEP_DOWN_GROWTH = 2.0
MAX_STEP_DOWN = 0.5

# Below the SLO everywhere, the search steps up: far (x1.5) while the percentile is under half the SLO, else
# near (x1.15). A batching server's percentile never falls under half the SLO (it waits out its batching
# delay at any rate), so its steps were all near ones: from a start at a fifth of the capacity (a service-time
# probe the machine disturbed), 12 of them, and a 40-s budget ran out below the capacity in 20 of 20 simulated
# searches. A percentile that barely rises between the two highest rates (log-log slope under FLAT_SLOPE)
# and is under FLAT_WITHIN of the SLO is far from the capacity too: a queue's tail rises steeply only near it.
# Stepping too far costs little: an overloaded trial gives up early and closes the bracket.
STEP_FAR, STEP_NEAR = 1.5, 1.15
FLAT_SLOPE, FLAT_WITHIN = 1.0, 0.8

# The local line (:func:`_local_fit`) leaves out a rate whose percentile's interval lies wholly above this
# many SLOs (see there).
PAST_CAPACITY_SLOS = 2.0


@dataclass
class RatePool:
    """Every trial at one rate: latencies pooled (arrival order within each trial), overload if any trial had it."""

    qps: float
    latency_ns: list[int] = field(default_factory=list)
    overloaded: str = ""
    trials: int = 0
    # the pooled percentile and its interval (ns), set by :meth:`judge`
    p: float = math.nan
    low: float = math.nan
    high: float = math.nan

    def judge(self, q: float, confidence: float, interval: Callable[..., tuple[float, float]], slo_ns: float) -> None:
        if self.overloaded or not self.latency_ns:
            self.p = self.low = self.high = OVERLOAD_SLOS * slo_ns
            return
        self.p = percentile(self.latency_ns, q)
        self.low, self.high = interval(self.latency_ns, q, confidence)

    @property
    def queries(self) -> int:
        return len(self.latency_ns)


@dataclass(frozen=True)
class Crossing:
    """Where a curve over the rates tried crosses the SLO: ``rate``, or None with ``side`` 'below' / 'above'
    (the curve is over the SLO already at the lowest rate / still within it at the highest)."""

    rate: float | None
    side: str = ""


@dataclass(frozen=True)
class Estimate:
    """The capacity from the rates tried so far."""

    center: Crossing
    low: Crossing  # the pessimistic curve's crossing: the interval's lower end
    high: Crossing  # the optimistic curve's crossing: the interval's upper end
    shown_to_meet: float  # the highest rate whose pooled interval lies within the SLO (0: none)

    @property
    def bracketed(self) -> bool:
        return self.center.rate is not None and self.low.rate is not None and self.high.rate is not None

    def half_width(self) -> float:
        """Relative half-width of the interval on a log scale (inf when an end is open)."""
        if not self.bracketed or self.low.rate <= 0:
            return math.inf
        return math.log(self.high.rate / self.low.rate) / 2


def isotonic(y: Sequence[float], w: Sequence[float]) -> np.ndarray:
    """The nondecreasing sequence closest to ``y`` in weighted least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, length]
    for yi, wi in zip(y, w):
        blocks.append([float(yi), float(wi), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.array([v for v, _, c in blocks for _ in range(int(c))])


def crossing(rates: Sequence[float], curve: Sequence[float], level: float, bound: str = "") -> Crossing:
    """Where a nondecreasing ``curve`` (log latency at each rate, rates ascending) first exceeds ``level``:
    for the centre, interpolated linearly in the rate between the last rate within it and the first over it;
    for an interval end (``bound``), that rate itself: the last within the level for ``bound = "low"``, the
    first over it for ``"high"``.

    An end is not interpolated because nothing between two rates says how the curve runs there: near capacity
    a queue's percentile can rise tenfold within a few percent of rate, and a straight line through two such
    rates put both ends within 1% of each other (a ratio of 0.33 at 9.59 requests/s, 13 at 9.94). Where three
    rates show the curve's shape, the local line's interval (:func:`_local_fit`) narrows it within these.
    So an end next to an overloaded rate (whose percentile is made up) is that rate or the last within.
    """
    if curve[0] > level:
        return Crossing(None, "below")
    for i in range(1, len(rates)):
        if curve[i] > level:
            a, b = rates[i - 1], rates[i]
            if bound:
                return Crossing(float(a if bound == "low" else b))
            ya, yb = curve[i - 1], curve[i]
            return Crossing(float(a + (b - a) * (level - ya) / (yb - ya)) if yb > ya else float(a))
    return Crossing(None, "above")


def _local_fit(pools: Sequence[RatePool], slo_ns: float, near: float,
               confidence: float) -> tuple[float, float, float] | None:
    """(centre, low, high) from a weighted least-squares line of log percentile on log rate near ``near``.

    Every rate within 10% of ``near`` (and the nearest rate either side, if none is) counts, at least three
    of them, weighted by its interval, so a rate measured with many queries fixes the level and the others the slope. The
    crossing's interval is Fieller's, from the line's covariance scaled up when the rates scatter about the
    line more than their intervals say (a machine whose trials differ more than their queues explain).
    None where the line does not rise clearly (its slope's interval reaches 0): the crossing is then not
    determined by it.
    """
    from scipy.special import ndtri

    z = float(ndtri(0.5 + confidence / 2))
    # A rate whose percentile lies wholly above PAST_CAPACITY_SLOS x the SLO is likely past the capacity, where
    # the queue grows through the trial and its percentile measures the trial's length, not the rate. Taken
    # in as the nearest rate above, such a rate bent the line onto the flat floor of a batching server's
    # curve (an interval of 3,512-3,565 queries/s for a capacity of 3,880).
    usable = [p for p in pools if not p.overloaded and p.queries and p.high > p.low > 0
              and p.low <= PAST_CAPACITY_SLOS * slo_ns]
    below = [p for p in usable if p.qps < near]
    above = [p for p in usable if p.qps >= near]
    if not below or not above:
        return None
    chosen = {id(p): p for p in usable if abs(math.log(p.qps / near)) <= 0.10}
    for side, pick in ((below, max), (above, min)):
        nearest = pick(side, key=lambda p: p.qps)
        chosen.setdefault(id(nearest), nearest)
    pts = list(chosen.values())
    if len({p.qps for p in pts}) < 3:  # two rates fix a line exactly: nothing would show it bending or scattering
        return None
    x = np.array([math.log(p.qps / near) for p in pts])
    y = np.array([math.log(p.p) for p in pts])
    sd = SD_INFLATION * np.array([max(math.log(p.high / p.low) / (2 * z), 1e-4) for p in pts])
    w = 1 / sd ** 2
    design = np.stack([np.ones_like(x), x], axis=1)
    info = design.T @ (design * w[:, None])
    cov = np.linalg.inv(info)
    a, b = cov @ (design.T @ (w * y))
    dof = len(pts) - 2
    if dof > 0:
        chi2 = float(np.sum(w * (y - a - b * x) ** 2))
        cov = cov * max(1.0, chi2 / dof)
    # Fieller's interval for the crossing x* = (log SLO - a) / b: every x the line's own interval at x
    # does not rule out as the crossing. Unlike the delta method, it widens as the slope gets uncertain
    # (a steep slope fitted from two close rates would otherwise make the crossing look exact).
    u = math.log(slo_ns) - a
    qa = b * b - z * z * cov[1, 1]
    if qa <= 0 or b <= 0:
        return None
    qb = -2 * (u * b + z * z * cov[0, 1])
    qc = u * u - z * z * cov[0, 0]
    root = math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))
    x_low, x_high = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    if max(abs(x_low), abs(x_high)) > MAX_LOG_SPAN:  # a slope barely above 0: the line does not place the crossing
        return None
    return float(near * math.exp(u / b)), float(near * math.exp(x_low)), float(near * math.exp(x_high))


def estimate(pools: Sequence[RatePool], slo_ns: float, confidence: float = 0.95) -> Estimate:
    """The capacity and its interval from every rate's pooled percentile (see the module docstring)."""
    ordered = sorted(pools, key=lambda p: p.qps)
    rates = [p.qps for p in ordered]
    weights = [max(p.queries, 1) for p in ordered]
    level = math.log(slo_ns)

    def curve(values: list[float]) -> np.ndarray:
        return isotonic(np.log(np.maximum(values, 1.0)), weights)

    met = [p.qps for p in ordered if p.high <= slo_ns and not p.overloaded]
    centre = crossing(rates, curve([p.p for p in ordered]), level)
    low = crossing(rates, curve([p.high for p in ordered]), level, "low")
    high = crossing(rates, curve([p.low for p in ordered]), level, "high")
    fit = _local_fit(ordered, slo_ns, centre.rate, confidence) if centre.rate is not None else None
    if fit is not None:
        # The line's interval, where it lies within the envelopes' (which bound it whatever the curve's shape).
        c, lo, hi = fit
        lo_env = low.rate if low.rate is not None else 0.0
        hi_env = high.rate if high.rate is not None else math.inf
        if lo_env <= c <= hi_env:
            centre, low, high = Crossing(c), Crossing(max(lo, lo_env)), Crossing(min(hi, hi_env))
    return Estimate(center=centre, low=low, high=high, shown_to_meet=max(met, default=0.0))


@dataclass
class SearchOutcome:
    """What a search found, and why it stopped."""

    estimate: Estimate
    pools: list[RatePool]
    stop: str  # 'precision', 'budget', 'floor' (the SLO fails at the lowest rate worth trying), 'ceiling'
    elapsed_s: float
    budget_s: float

    def reported_pool(self) -> RatePool | None:
        """The rate a result's own series and verdict come from: the highest shown to meet, else the lowest tried."""
        shown = [q for q in self.pools if q.qps == self.estimate.shown_to_meet]
        return shown[0] if shown else (self.pools[0] if self.pools else None)

    def budget_note(self, budget_s: float, precision: float, trials: int) -> str:
        """What a result must say when its budget ran out first ("" when it did not)."""
        if self.stop != "budget":
            return ""
        return (f"the search's budget ({budget_s:g} s) ended before its precision target (±{precision:.1%}): the "
                f"interval is what {trials} trials showed")

    def summary(self) -> dict[str, Any]:
        e = self.estimate
        return {"estimate_qps": e.center.rate, "interval": [e.low.rate, e.high.rate],
                "open_ends": {"center": e.center.side, "low": e.low.side, "high": e.high.side},
                "shown_to_meet_qps": e.shown_to_meet, "relative_half_width": e.half_width(),
                "stopped_by": self.stop, "elapsed_s": self.elapsed_s, "budget_s": self.budget_s}


@dataclass
class SearchPlan:
    """How a search runs: its target, precision, budget and trial sizes."""

    slo_ns: float
    percentile: float
    confidence: float
    precision: float  # stop once the interval's relative half-width (log scale) is at most this
    budget_s: float  # wall time for all trials; none is started that would not end within it
    min_queries: Callable[[float], int]  # the smallest trial at a rate (min_count, min_duration_s)
    max_queries: Callable[[float], int]  # the largest trial at a rate (max_duration_s)
    start_qps: float  # where to begin (the queue model's capacity, else a fraction of the service capacity)
    floor_qps: float  # below this the answer is 0
    ceiling_qps: float  # the most the load generator can issue: no trial above it


def trial_queries(qps: float, min_count: int, min_duration_s: float, max_duration_s: float) -> int:
    """Queries a trial plans at ``qps``: min_count and min_duration_s, but no arrival after max_duration_s."""
    wanted = max(min_count, math.ceil(min_duration_s * qps))
    return max(1, min(wanted, math.floor(max_duration_s * qps)))


Measure = Callable[[float, int], tuple[list[int], str]]  # (rate, queries) -> (latencies ns, overload reason or "")


class CapacitySearch:
    """Runs trials through ``measure`` until the estimate is precise enough or the budget is spent."""

    def __init__(self, plan: SearchPlan, interval: Callable[..., tuple[float, float]],
                 clock: Callable[[], float] = time.monotonic):
        self.plan = plan
        self.interval = interval
        self.clock = clock
        self.pools: dict[float, RatePool] = {}

    def _pool_near(self, qps: float) -> RatePool | None:
        """The pool of a rate within 0.5% of ``qps``, if one was tried: that rate, for pooling."""
        return next((pool for rate, pool in self.pools.items() if abs(rate / qps - 1) <= 0.005), None)

    def _queries(self, pool: RatePool, est: Estimate | None) -> int:
        """A trial's size: enough for the precision still needed at this rate (never under min_queries)."""
        p = self.plan
        n0 = p.min_queries(pool.qps)
        if est is None or not pool.queries or not est.bracketed or pool.overloaded:
            return n0
        # The capacity's relative half-width is about the percentile's (log) half-width over the curve's
        # local slope d log(latency) / d log(rate); the percentile's half-width shrinks as 1/sqrt(n).
        width = math.log(max(pool.high, 1.0) / max(pool.low, 1.0)) / 2
        slope = self._slope()
        if width <= 0 or slope is None:
            return n0
        needed = pool.queries * (width / (p.precision * slope)) ** 2
        return int(min(max(n0, needed - pool.queries), p.max_queries(pool.qps)))

    def _slope(self) -> float | None:
        """d log(percentile) / d log(rate) between the tried rates either side of the estimate."""
        below = [q for q in self.pools.values() if q.p <= self.plan.slo_ns and not q.overloaded]
        above = [q for q in self.pools.values() if q.p > self.plan.slo_ns and not q.overloaded]
        if not below or not above:
            return None
        a, b = max(below, key=lambda q: q.qps), min(above, key=lambda q: q.qps)
        if b.qps <= a.qps:
            return None
        return max(math.log(b.p / a.p) / math.log(b.qps / a.qps), 0.5)

    def _flat_below(self, highest: RatePool) -> bool:
        """Whether the percentile barely rose up to ``highest`` (a log-log slope under FLAT_SLOPE from the
        rate before it) while still under FLAT_WITHIN of the SLO: the queue is far from its capacity."""
        lower = [q for q in self.pools.values() if q.qps < highest.qps and not q.overloaded and q.queries]
        if not lower or highest.overloaded or highest.p > FLAT_WITHIN * self.plan.slo_ns:
            return False
        before = max(lower, key=lambda q: q.qps)
        return math.log(highest.p / before.p) / math.log(highest.qps / before.qps) < FLAT_SLOPE

    def _next_rate(self, est: Estimate) -> float | None:
        """Where the next trial goes: the estimate when bracketed, else a step towards the crossing."""
        p = self.plan
        pools = sorted(self.pools.values(), key=lambda q: q.qps)
        if est.center.side == "below":  # over the SLO at every rate tried: step down
            lowest = pools[0]
            factor = 0.5 if lowest.overloaded or lowest.p > 2 * p.slo_ns else 0.8
            rate = lowest.qps * factor
            return rate if rate >= p.floor_qps else (p.floor_qps if lowest.qps > p.floor_qps * 1.001 else None)
        if est.center.side == "above":  # within the SLO at every rate tried: step up
            highest = pools[-1]
            factor = STEP_FAR if highest.p < 0.5 * p.slo_ns or self._flat_below(highest) else STEP_NEAR
            rate = highest.qps * factor
            if highest.qps >= p.ceiling_qps * 0.999:
                return None
            return min(rate, p.ceiling_qps)
        center = est.center.rate
        if est.low.rate is None or est.high.rate is None or not est.shown_to_meet:
            # An open end: bound it by a trial past the estimate on that side, far enough to decide. The
            # low end stays open until some rate is shown to meet the SLO, even where the local line closed
            # it: a result's max_qps_within_slo is that rate. Where that rate has had its trials and still
            # does not decide (its interval keeps reaching the SLO), a step further, and so on.
            up = est.high.rate is None and bool(est.shown_to_meet)
            base = max(2 * self.plan.precision, 0.1)
            step = 1 + base if up else 1 - base
            if not up and not est.shown_to_meet:
                undecided = sum(1 for q in self.pools.values() if q.qps < center and not q.overloaded)
                step = 1 - min(base * STEP_DOWN_GROWTH ** max(undecided - 1, 0), MAX_STEP_DOWN)
            rate = self._beyond(center * step, step)
            return min(max(rate, p.floor_qps), p.ceiling_qps)
        return center

    def _beyond(self, rate: float, step: float) -> float:
        """The rate to decide an open end from ``rate`` (a step past the estimate), stepping on by ``step``:
        the nearest rate on that side not yet tried as often as that side needs, or a step past the farthest
        one that was. The estimate moves with every trial, so a step from it alone lands on
        a new rate each time, and one with a single trial's wide interval never decides anything."""
        further = (lambda q: q <= rate * 1.005) if step < 1 else (lambda q: q >= rate * 0.995)
        tried = sorted((q for q in self.pools.values() if further(q.qps) and not q.overloaded),
                       key=lambda q: q.qps, reverse=step < 1)
        needed = TRIALS_BEFORE_STEPPING_DOWN if step < 1 else TRIALS_BEFORE_STEPPING
        for pool in tried:
            if pool.trials < needed:
                return pool.qps
            rate = min(rate, pool.qps * step) if step < 1 else max(rate, pool.qps * step)
        return rate

    def run(self, measure: Measure) -> SearchOutcome:
        p = self.plan
        start = self.clock()
        deadline = start + p.budget_s
        rate: float | None = p.start_qps
        est: Estimate | None = None
        stop = "budget"
        overrun = 0.0  # the most a trial has run past its last arrival (the queue draining, a give-up)
        while rate is not None:
            # A rate joins the pools only once a trial runs at it: a pool no trial fitted has nothing to report.
            pool = self._pool_near(rate) or RatePool(rate)
            n = self._queries(pool, est)
            # Plan within the budget: a trial's arrivals end after about n / rate seconds, and it then runs
            # on for as long as the longest overrun seen so far.
            left = deadline - self.clock() - overrun
            fits = int(left * pool.qps * 0.95)
            if fits < min(n, max(100, p.min_queries(pool.qps) // 2)):
                stop = "budget"
                break
            self.pools.setdefault(pool.qps, pool)
            began = self.clock()
            latency, overloaded = measure(pool.qps, min(n, fits))
            overrun = max(overrun, self.clock() - began - min(n, fits) / pool.qps)
            pool.latency_ns += latency
            pool.overloaded = pool.overloaded or overloaded
            pool.trials += 1
            pool.judge(p.percentile, p.confidence, self.interval, p.slo_ns)
            est = estimate(list(self.pools.values()), p.slo_ns, p.confidence)
            if est.bracketed and est.half_width() <= p.precision and est.shown_to_meet:
                stop = "precision"
                break
            rate = self._next_rate(est)
            if rate is None:
                stop = "floor" if est.center.side == "below" else "ceiling"
        if est is None:
            est = estimate([RatePool(p.start_qps, overloaded="no trial fitted the budget")], p.slo_ns)
        return SearchOutcome(est, sorted(self.pools.values(), key=lambda q: q.qps), stop, self.clock() - start,
                             p.budget_s)
