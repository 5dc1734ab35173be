"""CPU affinity for a measured process: its own cores, and the harness kept off them where cores are to spare.

On a small VM the runner (its progress display, the contention sampler) and the measured runtime's threads
share the cores, and the scheduler moves both between them. With ``pin_cpus`` a case whose runtime uses
fewer threads than this process may run on gets that many cores of its own (the last ones of the allowed
set), the child process started on them (so every thread it creates inherits them, and OpenMP sizes its pool
from them), and every thread of the runner moves to the remaining cores until the child ends. A runtime that
uses every core (no ``threads`` option) leaves nothing to spare: the child then runs on the whole set and the
plan says so. ``docs/replication.md`` gives what pinning was worth on the machines measured.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class CpuPlan:
    """Where a case's process runs (``worker``) and where the harness waits meanwhile (``harness``)."""

    worker: tuple[int, ...]
    harness: tuple[int, ...]
    why: str

    @property
    def pins(self) -> bool:
        """Whether the worker's cores differ from the harness's (else nothing is moved)."""
        return bool(self.harness) and set(self.worker) != set(self.harness)

    def record(self) -> dict[str, Any]:
        return {"worker_cpus": list(self.worker), "harness_cpus": list(self.harness), "pinned": self.pins,
                "why": self.why}


def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on, ascending."""
    return tuple(sorted(os.sched_getaffinity(0)))


def plan_cpus(threads: int | None, allowed: tuple[int, ...]) -> CpuPlan:
    """The last ``threads`` of ``allowed`` for the worker and the rest for the harness, when some are left."""
    if threads is None:
        return CpuPlan(allowed, allowed, "the runtime sizes its threads to every core: none to spare")
    if threads >= len(allowed):
        return CpuPlan(allowed, allowed, f"{threads} threads on {len(allowed)} cores: none to spare")
    worker, harness = allowed[len(allowed) - threads:], allowed[:len(allowed) - threads]
    return CpuPlan(worker, harness, f"{threads} of {len(allowed)} cores for the runtime, the rest for the harness")


def _threads_of_this_process() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread alone
        return [0]


@contextmanager
def harness_on(cpus: tuple[int, ...]) -> Iterator[None]:
    """Every thread of this process on ``cpus`` for the block, then back where each was (a thread started
    meanwhile inherits from the thread that started it)."""
    before: dict[int, set[int]] = {}
    for tid in _threads_of_this_process():
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # the thread ended between listing and pinning
            before.pop(tid, None)
    try:
        yield
    finally:
        for tid, mask in before.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:  # the thread ended inside the block: nothing left to move back
                continue
