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
