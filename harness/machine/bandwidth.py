"""The machine's memory read bandwidth, measured the way a decoding step uses memory: one pass over a buffer far
larger than the caches, summed by the same number of threads the model runs with.

Decoding one token of a language model at batch 1 reads every weight once and does about two operations per
weight, so on a CPU its time is bound by how fast memory can be read: ``weight bytes per token / bandwidth``
is the floor under the time per output token (``tpot_memory_bound``). This measures the bandwidth that floor
uses, in the measuring process, just before the scenario, so it shares the machine's state at that moment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

BUFFER_MB = 512  # well past any L3 these machines have (AMD EPYC: 32 MB a CCD; Xeon: under 2 MB a core)
REPEATS = 5


@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth in GB/s (10^9 bytes): the best of the passes (the floor's denominator) and their median."""

    best_gbs: float
    median_gbs: float
    threads: int
    buffer_mb: int

    def details(self) -> dict[str, object]:
        return {"method": f"torch.sum over a {self.buffer_mb} MiB float32 buffer, {self.threads} thread(s), best of "
                          f"{REPEATS} passes after one warm pass", "median_gbs": self.median_gbs,
                "threads": self.threads, "buffer_mb": self.buffer_mb}


def read_bandwidth(buffer_mb: int = BUFFER_MB) -> Bandwidth:
    """Measure with torch's current intra-op thread count (the case's ``threads`` once its session is prepared)."""
    import torch

    buffer = torch.ones(buffer_mb * 2**20 // 4, dtype=torch.float32)
    buffer.sum()  # fault the pages in and warm the threads
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        buffer.sum()
        rates.append(buffer_mb * 2**20 / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return Bandwidth(rates[-1], rates[len(rates) // 2], torch.get_num_threads(), buffer_mb)


def tpot_floor_ms(weight_bytes_per_token: float, bandwidth_gbs: float) -> float:
    """The memory-bound floor under one decoding step: the weights read once at the measured bandwidth, in ms."""
    if bandwidth_gbs <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_gbs} GB/s")
    return weight_bytes_per_token / (bandwidth_gbs * 1e9) * 1e3


def read_bandwidth_in_child(threads: int | None, buffer_mb: int = BUFFER_MB) -> Bandwidth:
    """:func:`read_bandwidth` in a short-lived child process, so the measuring process's peak memory never holds
    the buffer; ``threads`` as the case sets them (None: torch's default, every core)."""
    import json
    import subprocess
    import sys

    argv = [sys.executable, "-m", "costbench.harness.machine.bandwidth", str(buffer_mb)]
    if threads is not None:
        argv.append(str(threads))
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"the bandwidth probe exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return Bandwidth(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _main(argv: list[str]) -> int:
    import json
    from dataclasses import asdict

    import torch

    if len(argv) > 1:
        torch.set_num_threads(int(argv[1]))
    print(json.dumps(asdict(read_bandwidth(int(argv[0]) if argv else BUFFER_MB))))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
