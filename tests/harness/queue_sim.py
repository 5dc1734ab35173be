"""A discrete-event simulation of the server scenario's queue, written apart from harness/measure/scenarios/server.py.

Poisson arrivals, a dynamic batcher (a free server takes the oldest waiting query and dispatches when
``fill`` queries wait or that query has waited ``delay``; the batch is the largest preferred size the
waiting queries fill, else all of them up to ``max_batch``) and ``servers`` servers, the earliest free
one taking the next batch. Service times come from a function of (batch index, batch size), so a test
can drive it with the service times a measured run recorded.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable, Sequence

import numpy as np


def simulate(arrivals: Sequence[int], service: Callable[[int, int], float], max_batch: int = 1, delay: float = 0.0,
             preferred: Sequence[int] = (), servers: int = 1,
             late: Callable[[int], float] = lambda j: 0.0) -> tuple[np.ndarray, list[int]]:
    """(latency of each query in arrival order, size of each batch); times in the arrivals' unit.

    ``late(j)`` delays batch ``j``'s start past the moment it is due (a measured run's scheduler lateness).
    """
    arr = np.asarray(arrivals, dtype=np.float64)
    n = len(arr)
    fill = max(preferred) if preferred else max_batch
    free = [0.0] * servers
    heapq.heapify(free)
    latency = np.empty(n)
    sizes: list[int] = []
    i = j = 0
    while i < n:
        f = heapq.heappop(free)
        ready = arr[i] + delay
        if i + fill - 1 < n:
            ready = min(ready, arr[i + fill - 1])
        start = max(f, ready) + late(j)
        waiting = int(np.searchsorted(arr[i:i + max_batch], start, side="right"))
        cap = min(max(waiting, 1), max_batch)
        fits = [p for p in preferred if p <= cap]
        k = max(fits) if fits else cap
        end = start + service(j, k)
        latency[i:i + k] = end - arr[i:i + k]
        sizes.append(k)
        heapq.heappush(free, end)
        i += k
        j += 1
    return latency, sizes


def nearest_rank(x: np.ndarray, p: float) -> float:
    """Nearest-rank percentile, the harness's definition."""
    s = np.sort(x)
    return float(s[max(1, math.ceil(p / 100 * len(s))) - 1])


def capacity(p99_at: Callable[[float], float], slo: float, low: float, high: float, steps: int = 18) -> float:
    """The rate where ``p99_at(rate)`` crosses ``slo``, by log bisection between ``low`` (meets) and ``high``."""
    for _ in range(steps):
        mid = math.sqrt(low * high)
        if p99_at(mid) <= slo:
            low = mid
        else:
            high = mid
    return math.sqrt(low * high)
