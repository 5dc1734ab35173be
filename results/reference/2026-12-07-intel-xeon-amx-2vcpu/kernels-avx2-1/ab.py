"""Builds of gemm.c on the avx2 path (2 threads, u8 x s8 -> int32, A and out on cache lines), the register-only
loops of avx2 (exact: vpmaddwd + vpaddd) and avx2-saturating (vpmaddubsw + vpmaddwd + vpaddd) timed in the same
rounds, and avx2-saturating itself where a build has it, interleaved in one process.

    python ab.py BUILD ROUNDS NAME...     # BUILD/NAME.so, each loaded as its own module; the last one's loops
    SHAPES='[[m, k, n], ...]' python ab.py ...

Each round times every series once (0.03 s of back-to-back calls) in an order shuffled per round. A build's
% of the exact limit is its median GOPS over the avx2 loop's best rate among the rounds; a ratio between builds is
the median over rounds of that round's ratio. Every build is checked exact against numpy int64 first (and
avx2-saturating exact on activations in [0, 127]).
"""
import importlib.util
import json
import os
import sys

import numpy as np

from costbench.kernels import gemm
from costbench.kernels.bench import time_interleaved

SHAPES = [(32, 384, 384), (512, 384, 384), (2048, 384, 384), (512, 384, 1152), (2048, 384, 1152),
          (512, 384, 1536), (2048, 384, 1536), (512, 1536, 384), (2048, 1536, 384), (12544, 32, 16),
          (3136, 24, 144), (784, 40, 240), (784, 240, 40), (196, 80, 480), (196, 480, 112), (49, 672, 192),
          (49, 1152, 320), (49, 320, 1280)]
if "SHAPES" in os.environ:
    SHAPES = [tuple(s) for s in json.loads(os.environ["SHAPES"])]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def peak(mod, isa_id, threads=2, seconds=0.002):
    """A call of a loop taking about `seconds`, and its operations (gemm.peak_call on the given build)."""
    gemm._gemm = mod
    call, ops = gemm.peak_call({v: k for k, v in gemm.ISA_IDS.items()}[isa_id], threads, seconds)
    return (lambda: (setattr(gemm, "_gemm", mod), call())), ops


build, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
mods = {nm: load(build, nm) for nm in names}
last = mods[names[-1]]
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
loops = {"loop avx2": peak(last, gemm.ISA_IDS["avx2"])}
if hasattr(last, "ISA_AVX2_SAT"):
    loops["loop avx2-saturating"] = peak(last, last.ISA_AVX2_SAT)
sat = [nm for nm in names if hasattr(mods[nm], "ISA_AVX2_SAT")]
cols = names + [f"{nm} sat" for nm in sat]
print(f"seed {seed}; median us a call over {rounds} rounds, 2 threads; % limit: GOPS over the best rate of the "
      f"exact avx2 loop (sat: of the saturating loop) in the shape's rounds; ratio: {names[0]} time / the build's")
print(f"{'shape':>14} " + " ".join(f"{c:>14}" for c in cols) + "  " + " ".join(f"{'%lim ' + c:>16}" for c in cols)
      + "  " + " ".join(f"{names[0] + '/' + c:>20}" for c in cols[1:]))
for m, k, n in SHAPES:
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a = gemm.aligned_array((m, k), np.uint8)
    a[...] = rng.integers(0, 256, (m, k), dtype=np.uint8)
    a7 = gemm.aligned_array((m, k), np.uint8)
    a7[...] = rng.integers(0, 128, (m, k), dtype=np.uint8)
    exact, exact7 = (v.astype(np.int64) @ b.astype(np.int64) for v in (a, a7))
    fns = {}
    for nm in names:
        for isa, col in (("avx2", nm), ("avx2-saturating", f"{nm} sat")):
            if col not in cols:
                continue
            gemm._gemm = mods[nm]
            pw = gemm.PackedWeight(isa, k, n, gemm.aligned_empty(mods[nm].packed_bytes(gemm.ISA_IDS[isa], k, n)),
                                   b.sum(0, dtype=np.int64).astype(np.int32))
            mods[nm].pack_b(gemm.ISA_IDS[isa], b, n, k, n, pw.data)
            out = gemm.aligned_array((m, n), np.int32)

            def run(pw=pw, out=out, mod=mods[nm], a=a):
                gemm._gemm = mod
                return gemm.int8_gemm(a, pw, threads=2, out=out)
            if isa == "avx2":
                assert np.array_equal(run(), exact), (nm, m, k, n, seed)
            else:
                assert np.array_equal(run(a=a7), exact7), (nm, "sat", m, k, n, seed)
            fns[col] = run
    for nm, (call, _) in loops.items():
        fns[nm] = call
    t = {c: np.array(v) for c, v in time_interleaved(fns, rounds, 0.03, rng).items()}
    best = {nm: ops / t[nm].min() / 1e9 for nm, (_, ops) in loops.items()}
    gops = {c: 2.0 * m * k * n / np.median(t[c]) / 1e9 for c in cols}
    share = {c: 100 * gops[c] / best["loop avx2-saturating" if c.endswith(" sat") else "loop avx2"] for c in cols}
    print(f"{m}x{k}x{n}".rjust(14), " ".join(f"{1e6 * np.median(t[c]):14.1f}" for c in cols), " ",
          " ".join(f"{share[c]:15.0f}%" for c in cols), " ",
          " ".join(f"{np.median(t[names[0]] / t[c]):20.2f}" for c in cols[1:]),
          f"  loops GOPS: " + ", ".join(f"{nm[5:]} {v:.0f}" for nm, v in best.items()), flush=True)
