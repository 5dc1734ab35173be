"""The avx512vnni register-only loop of two builds of gemm.c, side by side in one process, on 1 and 2 threads.

    python loops.py BUILD ROUNDS NAME...     # BUILD/NAME.so

Each round times each series once (0.03 s of back-to-back calls) in a shuffled order; prints each series' best
and median rate (GOPS) over the rounds, and the median over rounds of each round's rate ratio to the first build.
"""
import importlib.util
import sys

import numpy as np

from costbench.kernels import gemm
from costbench.kernels.bench import time_interleaved


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
fns, ops = {}, {}
for nm in names:
    mod = load(build, nm)
    gemm._gemm = mod
    for threads in (1, 2):
        call, n = gemm.peak_call("avx512vnni", threads, 0.002)
        fns[f"{nm} {threads}t"] = lambda call=call, mod=mod: (setattr(gemm, "_gemm", mod), call())
        ops[f"{nm} {threads}t"] = n
t = {k: np.array(v) for k, v in time_interleaved(fns, rounds, 0.03, np.random.default_rng()).items()}
for k, v in t.items():
    first = f"{names[0]} {k.split()[-1]}"
    ratio = np.median(t[first] / v)
    print(f"{k:>12}: best {ops[k] / v.min() / 1e9:6.0f} GOPS, median {ops[k] / np.median(v) / 1e9:6.0f}; "
          f"rate / {first}'s, median of per-round ratios {ratio:.3f}")
