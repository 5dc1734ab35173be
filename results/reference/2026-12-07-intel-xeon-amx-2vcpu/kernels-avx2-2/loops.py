"""The register-only loops of builds of gemm.c, interleaved in one process: GOPS of each build's avx2 loop (and
avx2-saturating's, where a build has it) on 1 and 2 threads, the best and the median over the rounds.

    python loops.py BUILD ROUNDS NAME...     # BUILD/NAME.so, each loaded as its own module

Each loop call is calibrated to about 2 ms; a round times every series once (0.03 s of back-to-back calls) in an
order shuffled per round.
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
rng = np.random.default_rng()
fns, ops = {}, {}
for nm in names:
    mod = load(build, nm)
    for isa in ("avx2", "avx2-saturating"):
        if isa == "avx2-saturating" and not hasattr(mod, "ISA_AVX2_SAT"):
            continue
        for threads in (1, 2):
            gemm._gemm = mod
            call, n = gemm.peak_call(isa, threads)
            key = f"{nm} {isa} t{threads}"
            fns[key], ops[key] = (lambda call=call, mod=mod: (setattr(gemm, "_gemm", mod), call())), n
t = time_interleaved(fns, rounds, 0.03, rng)
print(f"{rounds} interleaved rounds; GOPS of each build's register-only loop: best round, median round")
for key in fns:
    ts = np.array(t[key])
    print(f"{key:>36}  best {ops[key] / ts.min() / 1e9:6.0f}  median {ops[key] / np.median(ts) / 1e9:6.0f}")
