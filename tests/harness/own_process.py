"""Run a timing-sensitive measurement in a fresh interpreter, as the runner measures every case.

A test process that has run the rest of the suite holds what earlier tests left: threads of Ray's client,
thread pools, imported runtimes. They wake beside the measured service and take turns on its CPU, so a
queue measured there is a queue on a busier machine (in a fresh-clone CI, the capacity searches' trials
waited 0.24-0.34% of their time for a CPU, past ``contention.HELD_UP_SHARE``, and were skipped as busy).
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable


def in_own_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a spawned interpreter (``fn`` importable by name, arguments and result picklable); it
    inherits the environment and ``sys.path``, so plugins registered for this test resolve there too."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
