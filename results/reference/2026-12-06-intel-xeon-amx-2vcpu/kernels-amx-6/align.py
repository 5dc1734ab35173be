"""The amx path with A and the output on 64-byte cache lines or 16 bytes past one (where numpy puts large arrays),
ONNX Runtime's MatMulInteger beside it (MLAS packs A itself; its output comes from its arena, on a line).

    python align.py ROUNDS

Each round times every column once (0.03 s of back-to-back calls, after the process's threads have gone quiet) in
an order shuffled per round; a ratio is the median over rounds of that round's ratio. Every column is checked exact
against numpy int64 first.
"""
import sys

import numpy as np

from costbench.kernels import gemm
from costbench.kernels.bench import time_interleaved
from costbench.kernels.peers import OrtMatMulInteger

SHAPES = [(32, 384, 384), (128, 384, 384), (512, 384, 384), (2048, 384, 384), (128, 384, 1152), (32, 384, 1536),
          (512, 384, 1536), (512, 1536, 384), (2048, 1536, 384), (196, 480, 112), (49, 1152, 320), (49, 320, 1280)]
PLACES = {"A+16 out+16": (16, 16), "A+16 out+0": (16, 0), "A+0 out+0": (0, 0)}


def at_offset(shape, dtype, offset):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gemm.aligned_empty(nbytes + 64)[offset:offset + nbytes].view(dtype).reshape(shape)


rounds = int(sys.argv[1])
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
print(f"seed {seed}; amx path, 2 threads, u8 x s8 -> int32; median us a call over {rounds} rounds")
cols = list(PLACES) + ["ort A+16", "ort A+0"]
print(f"{'shape':>14} " + " ".join(f"{c:>12}" for c in cols) + "   ratio ort(A+0) / ours:  "
      + "  ".join(f"{c:>12}" for c in PLACES))
for m, k, n in SHAPES:
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a0 = rng.integers(0, 256, (m, k), dtype=np.uint8)
    exact = a0.astype(np.int64) @ b.astype(np.int64)
    pw = gemm.PackedWeight.pack(b, "amx")
    fns, a_at = {}, {}
    for off in (16, 0):
        a_at[off] = at_offset((m, k), np.uint8, off)
        a_at[off][...] = a0
    for col, (ao, oo) in PLACES.items():
        out = at_offset((m, n), np.int32, oo)
        fns[col] = lambda a=a_at[ao], out=out: gemm.int8_gemm(a, pw, threads=2, out=out)
    ort = OrtMatMulInteger().prepare(b, "u8", 2)
    fns["ort A+16"] = lambda: ort.run(a_at[16])
    fns["ort A+0"] = lambda: ort.run(a_at[0])
    for col, f in fns.items():
        assert np.array_equal(f(), exact), (col, m, k, n, seed)
    t = {c: np.array(v) for c, v in time_interleaved(fns, rounds, 0.03, rng).items()}
    print(f"{m}x{k}x{n}".rjust(14), " ".join(f"{1e6 * np.median(t[c]):12.1f}" for c in cols), "  " + " " * 24,
          "  ".join(f"{np.median(t['ort A+0'] / t[c]):12.2f}" for c in PLACES), flush=True)
