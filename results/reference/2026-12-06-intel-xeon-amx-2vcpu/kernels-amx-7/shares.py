"""Builds of gemm.c on the amx path (A and out on cache lines, 2 threads, u8 x s8 -> int32), ONNX Runtime's
MatMulInteger beside them, interleaved in one process.

    python shares.py BUILD ROUNDS NAME...     # BUILD/NAME.so, each loaded as its own module
    SHAPES='[[m, k, n], ...]' python shares.py ...   # other shapes than the ones below

Each round times every implementation once (0.03 s of back-to-back calls, after the process's threads have gone
quiet) in an order shuffled per round; a ratio is the median over rounds of that round's ratio. Every build is
checked exact against numpy int64 first.
"""
import importlib.util
import json
import os
import sys

import numpy as np

from costbench.kernels import gemm
from costbench.kernels.bench import time_interleaved
from costbench.kernels.peers import OrtMatMulInteger

SHAPES = [(128, 384, 384), (128, 384, 1152), (128, 384, 1536), (128, 1536, 384), (512, 384, 384), (512, 384, 1152),
          (512, 1536, 384), (2048, 384, 384), (2048, 384, 1536), (2048, 1536, 384), (784, 240, 40), (196, 480, 112),
          (49, 320, 1280)]
if "SHAPES" in os.environ:
    SHAPES = [tuple(s) for s in json.loads(os.environ["SHAPES"])]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
mods = {nm: load(build, nm) for nm in names}
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
cols = names + ["ort"]
print(f"seed {seed}; median us a call over {rounds} rounds; ratio: ORT time / the build's")
print(f"{'shape':>14} " + " ".join(f"{c:>9}" for c in cols) + "   " + " ".join(f"{'ort/' + c:>11}" for c in names))
for m, k, n in SHAPES:
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a = gemm.aligned_array((m, k), np.uint8)
    a[...] = rng.integers(0, 256, (m, k), dtype=np.uint8)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    fns = {}
    for nm in names:
        gemm._gemm = mods[nm]
        pw = gemm.PackedWeight.pack(b, "amx")
        out = gemm.aligned_array((m, n), np.int32)

        def run(pw=pw, out=out, mod=mods[nm]):
            gemm._gemm = mod
            return gemm.int8_gemm(a, pw, threads=2, out=out)
        assert np.array_equal(run(), exact), (nm, m, k, n, seed)
        fns[nm] = run
    ort = OrtMatMulInteger().prepare(b, "u8", 2)
    fns["ort"] = lambda ort=ort: ort.run(a)
    t = {c: np.array(v) for c, v in time_interleaved(fns, rounds, 0.03, rng).items()}
    print(f"{m}x{k}x{n}".rjust(14), " ".join(f"{1e6 * np.median(t[c]):9.1f}" for c in cols), "  ",
          " ".join(f"{np.median(t['ort'] / t[c]):11.2f}" for c in names), flush=True)
