"""The kernels bench's check that every peer ran on all the CPUs the process started with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


_NARROWED_CHILD = """
import os, threading, time, numpy as np
from costbench.kernels import bench, gemm
cpus = set(os.sched_getaffinity(0))
pw = gemm.PackedWeight.pack(np.ones((384, 384), np.int8), gemm.supported_isas()[0])
gemm.int8_gemm(np.ones((512, 384), np.uint8), pw, threads=2)  # starts the pool's worker
assert bench.narrowed_threads(cpus) == {}, bench.narrowed_threads(cpus)
os.sched_setaffinity(0, {min(cpus)})  # as the pool's bug once did to the caller
t = threading.Thread(target=time.sleep, args=(1,))
t.start()
print(sorted(bench.narrowed_threads(cpus).items()), threading.get_native_id(), t.native_id)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least 2 CPUs")
def test_the_bench_names_every_thread_kept_off_some_cpus():
    """A thread kept off some of the process's CPUs, and one started after (inheriting them), are reported; the
    pool's own worker, which the pool moves on purpose, is not (it is named costbench-pool)."""
    run = subprocess.run([sys.executable, "-c", _NARROWED_CHILD], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    line = run.stdout.strip().splitlines()[-1]
    first = min(os.sched_getaffinity(0))
    main_tid, thread_tid = line.rsplit(" ", 2)[1:]
    assert line.startswith(str(sorted([(int(main_tid), [first]), (int(thread_tid), [first])]))), line
