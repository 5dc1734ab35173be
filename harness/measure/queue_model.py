"""The server scenario's queue as a model: what capacity the measured service times imply.

A discrete-event simulation of the same queue the server scenario drives (Poisson arrivals, the
dynamic batcher's rule of :class:`~costbench.harness.measure.scenarios.server.BatchPolicy`,
``concurrency`` servers taking batches in turn), with each batch's service time drawn from those
measured for its size. It answers "if the service times were all there is, where would the SLO
percentile cross the SLO?": the capacity search starts from it, and a measured capacity far below it
says the server loses time the service times do not show (the load generator, a neighbour on the
machine). tests/harness/queue_sim.py is an independent simulation the tests check this one against.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from costbench.core.stats import percentile as percentile_of


@dataclass(frozen=True)
class ServiceTimes:
    """Measured service times (ns) per batch size; a size never measured is interpolated linearly."""

    by_size: Mapping[int, Sequence[float]]

    def table(self, max_batch: int) -> list[np.ndarray]:
        """Index k (1..max_batch): the samples for a batch of k; unmeasured sizes shifted from their neighbours."""
        known = sorted(k for k, v in self.by_size.items() if len(v))
        if not known:
            raise ValueError("the queue model needs at least one measured service time")
        out: list[np.ndarray] = [np.empty(0)]
        for k in range(1, max_batch + 1):
            if k in self.by_size and len(self.by_size[k]):
                out.append(np.asarray(self.by_size[k], dtype=np.float64))
                continue
            below = max((j for j in known if j < k), default=None)
            above = min((j for j in known if j > k), default=None)
            if below is None or above is None:  # outside the measured sizes: the nearest one's samples
                nearest = below if above is None else above
                out.append(np.asarray(self.by_size[nearest], dtype=np.float64))
                continue
            lo, hi = np.median(self.by_size[below]), np.median(self.by_size[above])
            step = lo + (hi - lo) * (k - below) / (above - below) - lo  # the median's shift, linear in k
            out.append(np.asarray(self.by_size[below], dtype=np.float64) + step)
        return out

    def typical(self) -> ServiceTimes:
        """Each size's median alone: the queue with every run typical, none of the probe's outliers."""
        return ServiceTimes({k: [float(np.median(v))] for k, v in self.by_size.items() if len(v)})

    def capacity(self, max_batch: int, fill: int, servers: int) -> float:
        """Queries/s with every server busy on full batches back to back (the median service time)."""
        return servers * fill * 1e9 / float(np.median(self.table(max_batch)[fill]))


def lindley_waits(gaps_ns: np.ndarray, service_ns: np.ndarray) -> np.ndarray:
    """Each query's wait in a FIFO queue with one server (the first arrives at ``gaps_ns[0]`` to an empty one).

    Lindley's recursion, vectorised: wait_i = X_i - min(0, min_{j<=i} X_j), X the cumulative sum of
    (previous service - gap).
    """
    steps = np.concatenate(([0.0], np.asarray(service_ns, dtype=np.float64)[:-1] - np.asarray(gaps_ns)[1:]))
    x = np.cumsum(steps)
    return x - np.minimum(np.minimum.accumulate(x), 0.0)


def stationary_backlog_ns(service_ns: np.ndarray, qps: float, rng: np.random.Generator,
                          arrivals: int = 200_000) -> float:
    """One draw of the work a one-slot FIFO queue holds at an arbitrary moment of its steady state at ``qps``
    Poisson arrivals, with service times resampled from ``service_ns``; ``inf`` where the queue has none
    (utilisation ≥ 1).

    The wait the last of ``arrivals`` simulated arrivals finds: by PASTA, Poisson arrivals see the queue as it
    is at an arbitrary time. A trial that starts with this backlog samples the steady state from its first
    request; one that starts empty sees less queueing than a server that has been running, and near
    utilisation 1 it ends long before the queue would have filled (the relaxation time grows as 1 / (1 - ρ)²).
    """
    service = np.asarray(service_ns, dtype=np.float64)
    if service.size == 0 or qps <= 0:
        raise ValueError("stationary_backlog_ns needs service times and a positive rate")
    if qps * float(np.mean(service)) / 1e9 >= 1.0:
        return math.inf
    gaps = rng.exponential(1e9 / qps, size=arrivals)
    return float(lindley_waits(gaps, service[rng.integers(0, service.size, size=arrivals)])[-1])


def simulate_latencies(gaps_ns: np.ndarray, service: list[np.ndarray], draws: np.ndarray, max_batch: int = 1,
                       delay_ns: float = 0.0, fill: int | None = None, preferred: Sequence[int] = (),
                       servers: int = 1) -> np.ndarray:
    """Latency (ns) of each query, arrival to end of its batch, for arrivals at cumulative ``gaps_ns``.

    ``draws`` (uniform in [0, 1), one per batch at most) pick each batch's service time from the samples
    of its size, so two calls with the same draws and gaps scaled differently are common random numbers.
    """
    arrivals = np.cumsum(gaps_ns)
    n = arrivals.size
    if max_batch == 1 and servers == 1:
        s = service[1]
        svc = s[(draws[:n] * s.size).astype(np.int64)]
        return lindley_waits(gaps_ns, svc) + svc
    fill = fill or max_batch
    free = [0.0] * servers
    latency = np.empty(n)
    arr = arrivals.tolist()
    i = j = 0
    while i < n:
        f = heapq.heappop(free)
        ready = arr[i] + delay_ns
        if i + fill - 1 < n:
            ready = min(ready, arr[i + fill - 1])
        start = max(f, ready)
        cap = min(max(int(np.searchsorted(arrivals[i:i + max_batch], start, side="right")), 1), max_batch)
        fits = [p for p in preferred if p <= cap]
        k = max(fits) if fits else cap
        s = service[k]
        end = start + s[int(draws[j % draws.size] * s.size)]
        latency[i:i + k] = end - arrivals[i:i + k]
        heapq.heappush(free, end)
        i += k
        j += 1
    return latency


def model_capacity(times: ServiceTimes, slo_ns: float, percentile: float, max_batch: int = 1,
                   delay_ns: float = 0.0, preferred: Sequence[int] = (), servers: int = 1,
                   queries: int = 20_000, seed: int = 0, steps: int = 14) -> float:
    """The arrival rate at which the simulated ``percentile`` latency crosses ``slo_ns`` (queries/s).

    Bisection on a log scale between 0.1% and 100% of the back-to-back capacity, every rate simulated on
    the same unit-rate arrivals and service draws, so the answer moves smoothly with the rate.
    """
    fill = max(preferred) if preferred else max_batch
    table = times.table(max_batch)
    top = times.capacity(max_batch, fill, servers)
    rng = np.random.default_rng(seed)
    unit_gaps = rng.exponential(1.0, size=queries)
    draws = rng.random(queries)

    def meets(qps: float) -> bool:
        lat = simulate_latencies(unit_gaps * (1e9 / qps), table, draws, max_batch, delay_ns, fill, preferred,
                                 servers)
        return percentile_of(lat, percentile) <= slo_ns

    return highest_rate_meeting(meets, top, steps)


def highest_rate_meeting(meets: Callable[[float], bool], top: float, steps: int = 14) -> float:
    """The rate in (0.1% of ``top``, ``top``) where ``meets`` turns false, by bisection on a log scale
    (0 when it is false already at 0.1% of ``top``)."""
    lo, hi = top * 1e-3, top
    if not meets(lo):
        return 0.0
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return math.sqrt(lo * hi)


# --- M/D/1: Poisson arrivals, one server, a constant service time, exactly ------------------------

def md1_wait_cdf(t: float, lam: float, d: float) -> float:
    """P(wait <= t) in an M/D/1 queue (Erlang): (1-ρ) Σ_{k=0}^{⌊t/D⌋} (λ(kD-t))^k / k! · e^{-λ(kD-t)}."""
    rho = lam * d
    return (1 - rho) * sum((lam * (k * d - t)) ** k / math.factorial(k) * math.exp(-lam * (k * d - t))
                           for k in range(int(t // d) + 1))


def md1_latency_quantile(p: float, lam: float, d: float) -> float:
    """The p-th percentile of latency (wait + D), by bisection on the wait's CDF (up to 30 D)."""
    lo, hi = 0.0, 30 * d
    for _ in range(80):
        mid = (lo + hi) / 2
        if md1_wait_cdf(mid, lam, d) >= p / 100:
            hi = mid
        else:
            lo = mid
    return hi + d


def md1_capacity(slo: float, p: float, d: float) -> float:
    """The arrival rate at which the p-th percentile latency equals ``slo`` (same unit as ``d``, rate per unit)."""
    lo, hi = 1e-9 / d, (1 - 1e-9) / d
    for _ in range(100):
        mid = (lo + hi) / 2
        if md1_wait_cdf(slo - d, mid, d) >= p / 100:
            lo = mid
        else:
            hi = mid
    return lo
