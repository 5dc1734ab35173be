"""What else wanted the CPU while a process measured: other processes' CPU time, and the hypervisor's steal.

Two readings of ``/proc/stat`` and of this process's own CPU time, one before and one after the measured
loop, cost nothing while it runs (no sampler thread competes with the measured threads). Their
difference, over the window and the machine's cores, is the share of the machine that something else
used: a noisy neighbour, a CPU hog, a backup job, or (as steal) another tenant of the host. Resolution is
the kernel's clock tick (10 ms); elsewhere than Linux nothing is read and nothing is judged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A process is contended when others took more than this share of the machine while it measured. The
# harness itself (the runner waiting on the child, its progress display) takes well under 1%.
CONTENDED_SHARE = 0.10

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuReading:
    """Machine-wide busy and steal CPU seconds, this process's CPU seconds, and the wall clock, at one moment."""

    busy_s: float
    steal_s: float
    own_s: float
    wall_s: float


@dataclass(frozen=True)
class Contention:
    """What others took of the machine over one measured window."""

    other_share: float  # other processes' CPU time / (window x cores)
    steal_share: float  # the hypervisor's steal / (window x cores)
    window_s: float
    cores: int
    start_s: float = 0.0  # the window's start on CLOCK_MONOTONIC (system-wide on Linux: comparable across processes)

    @property
    def share(self) -> float:
        return self.other_share + self.steal_share

    @property
    def contended(self) -> bool:
        return self.share > CONTENDED_SHARE

    def details(self) -> dict[str, Any]:
        return {"other_share": self.other_share, "steal_share": self.steal_share, "window_s": self.window_s,
                "window_start_monotonic_s": self.start_s, "cores": self.cores, "contended": self.contended,
                "threshold": CONTENDED_SHARE}


def read(stat: Path = Path("/proc/stat")) -> CpuReading | None:
    """Now, or None where the kernel does not report it."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    # guest time is already inside user and nice: not added again.
    return CpuReading((user + nice + system + irq + softirq) / _TICK, steal / _TICK, time.process_time(),
                      time.monotonic())


def run_delay_s(task_dir: Path = Path("/proc/self/task")) -> float | None:
    """Seconds this process's threads have so far spent runnable but waiting for a CPU, summed over its threads
    (the second field of each thread's ``schedstat``); None where the kernel does not report it.

    Others' CPU time (:func:`read`) says the machine was shared; this says the process was held up by it:
    on two cores a neighbour's busy core takes nothing from a one-thread service, a third runnable thread
    takes its turns. A thread that has exited no longer counts, so read it where the threads of interest live
    on across both readings.
    """
    total, read_any = 0, False
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
            read_any = True
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total / 1e9 if read_any else None


# The share of a capacity search's trial time that this process waited for a CPU (or the hypervisor stole)
# above which the search says others were using the machine. Alone on a 2-vCPU VM three 40-s generate_server
# searches waited 0.007-0.016% of their time; beside two bursty CPU hogs 0.24-0.56%, and in one of three the
# queue model on the trials' own measured times lay 9% above the search's interval: the model draws those times
# independently, while a neighbour slows a run of requests in a row
# (results/reference/2026-12-07-intel-xeon-amx-2vcpu/generate-server-busy/).
HELD_UP_SHARE = 0.001


@dataclass(frozen=True)
class WaitReading:
    """The machine's counters and this process's threads' run-queue wait at one moment (either may be None)."""

    cpu: CpuReading | None
    run_delay_s: float | None

    @classmethod
    def now(cls) -> "WaitReading":
        return cls(read(), run_delay_s())

    def since(self, before: "WaitReading") -> dict[str, float | None]:
        """A trial's record: its wall time, how long this process's threads waited for a CPU, and the steal."""
        both = self.cpu is not None and before.cpu is not None
        waited = self.run_delay_s is not None and before.run_delay_s is not None
        return {"wall_s": self.cpu.wall_s - before.cpu.wall_s if both else None,
                "cpu_wait_ms": (self.run_delay_s - before.run_delay_s) * 1e3 if waited else None,
                "steal_ms": (self.cpu.steal_s - before.cpu.steal_s) * 1e3 if both else None}


def held_up(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Over trials recorded by :meth:`WaitReading.since`: the share of their time this process waited for a CPU,
    the machine's stolen share, and whether either passed ``HELD_UP_SHARE``; empty where nothing was read."""
    timed = [t for t in trials if t.get("wall_s")]
    wall = sum(t["wall_s"] for t in timed)
    if not wall:
        return {}
    waits = [t["cpu_wait_ms"] for t in timed if t["cpu_wait_ms"] is not None]
    steals = [t["steal_ms"] for t in timed if t["steal_ms"] is not None]
    wait_share = sum(waits) / 1e3 / wall
    steal_share = sum(steals) / 1e3 / (wall * cores())
    return {"cpu_wait_share": wait_share, "steal_share": steal_share,
            "held_up": max(wait_share, steal_share) > HELD_UP_SHARE}


def held_up_note(held: dict[str, Any], model: str) -> str:
    """What a held-up search's answer means, or "" when it was not held up."""
    if not held.get("held_up"):
        return ""
    return (f"this process's threads waited {held['cpu_wait_share']:.2%} of the trials' time for a CPU and the "
            f"hypervisor stole {held['steal_share']:.2%} of the machine: others were using it, so the capacity "
            f"describes the server beside them, and {model} (which draws the measured service times "
            "independently, where a neighbour slows requests in a row) can read above it")


def cores() -> int:
    """The logical cores the kernel schedules on (the share's denominator)."""
    return os.cpu_count() or 1


def between(before: CpuReading | None, after: CpuReading | None, ncores: int | None = None) -> Contention | None:
    """What others took of the machine between two readings; None without both or over no time."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    n = ncores or cores()
    capacity = (after.wall_s - before.wall_s) * n
    other = max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s))
    steal = max(0.0, after.steal_s - before.steal_s)
    return Contention(min(1.0, other / capacity), min(1.0, steal / capacity), after.wall_s - before.wall_s, n,
                      before.wall_s)
