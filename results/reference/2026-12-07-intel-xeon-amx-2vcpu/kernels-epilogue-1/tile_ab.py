"""Builds of gemm.c side by side on one path, in one process: the int32 GEMM (u8 A, nothing to correct) and the
Int8Linear call (float rows quantized per token, the fused epilogue with bias, f32 out) at each shape, with the
path's register-only loop timed in the same rounds.

    python tile_ab.py BUILD ROUNDS ISA NAME...      # BUILD/NAME.so, each loaded as its own module
    SHAPES='[[m, k, n], ...]' python tile_ab.py ...

Each round times every series once (0.03 s of back-to-back calls, 2 threads) in an order shuffled per round.
% peak: a series' median GOPS over the loop's best rate among the shape's rounds. Ratio: the median over rounds of
that round's time of the first build over the other's (above 1: the other is faster), with the exact bootstrap 95%
interval of that median. Before timing, every build's int32 output is checked equal to numpy's int64 product, and
every build's Int8Linear output bit-identical to the first build's.
"""
import importlib.util
import json
import os
import sys

import numpy as np

from costbench.core.stats import paired_median_ratio
from costbench.kernels import gemm
from costbench.kernels.bench import time_interleaved

SHAPES = [(512, 384, 384), (2048, 384, 1536), (12544, 32, 16), (3136, 24, 144), (784, 40, 240), (784, 240, 40),
          (196, 80, 480), (196, 480, 112)]
if "SHAPES" in os.environ:
    SHAPES = [tuple(s) for s in json.loads(os.environ["SHAPES"])]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def on(mod, fn):
    """fn run with the gemm module's extension set to `mod`."""
    def call():
        gemm._gemm = mod
        return fn()
    return call


build, rounds, isa, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
mods = {nm: load(build, nm) for nm in names}
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
gemm._gemm = mods[names[-1]]
loop_call, loop_ops = gemm.peak_call(isa, 2, 0.002)
loop = on(mods[names[-1]], loop_call)
print(f"seed {seed}; path {isa}; 2 threads; {rounds} rounds; median us a call; % peak of the {isa} loop's best "
      f"rate in the shape's rounds; ratio: {names[0]} time / the build's, median of per-round ratios [95% CI]")
for m, k, n in SHAPES:
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a = gemm.aligned_array((m, k), np.uint8)
    a[...] = rng.integers(0, 256, (m, k), dtype=np.uint8)
    x = gemm.aligned_array((m, k), np.float32)
    x[...] = rng.standard_normal((m, k), dtype=np.float32)
    w_scale = (rng.random(n, dtype=np.float32) + 0.5) / 128
    bias = rng.standard_normal(n, dtype=np.float32)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    fns, first_lin = {}, None
    for nm in names:
        gemm._gemm = mods[nm]
        pw = gemm.PackedWeight.pack(b, isa)
        out_i = gemm.aligned_array((m, n), np.int32)
        out_f = gemm.aligned_array((m, n), np.float32)
        gemm_call = on(mods[nm], lambda pw=pw, o=out_i: gemm.int8_gemm(a, pw, threads=2, out=o))
        lin_call = on(mods[nm], lambda pw=pw, o=out_f: gemm.int8_linear(x, pw, w_scale, bias, threads=2, out=o))
        assert np.array_equal(gemm_call(), exact), (nm, m, k, n, seed)
        lin = lin_call().copy()
        if first_lin is None:
            first_lin = lin
        assert np.array_equal(lin.view(np.int32), first_lin.view(np.int32)), (nm, "linear", m, k, n, seed)
        fns[f"{nm} int32"], fns[f"{nm} linear"] = gemm_call, lin_call
    fns["loop"] = loop
    t = {c: np.array(v) for c, v in time_interleaved(fns, rounds, 0.03, rng).items()}
    best = loop_ops / t["loop"].min()
    ops = 2.0 * m * k * n
    for kind in ("int32", "linear"):
        cells = [f"{nm} {1e6 * np.median(t[f'{nm} {kind}']):8.1f} us {100 * ops / np.median(t[f'{nm} {kind}']) / best:3.0f}%"
                 for nm in names]
        ratios = []
        for nm in names[1:]:
            r, lo, hi = paired_median_ratio(t[f"{nm} {kind}"], t[f"{names[0]} {kind}"])
            ratios.append(f"{names[0]}/{nm} {r:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"{m}x{k}x{n}".rjust(14), kind.ljust(6), "  ".join(cells), "  ", "  ".join(ratios),
              f"  loop {best / 1e9:.0f} GOPS", flush=True)
