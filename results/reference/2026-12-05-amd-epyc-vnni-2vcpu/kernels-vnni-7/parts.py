"""Where a MiniLM feed-forward layer's time goes, on the shapes batch 8 x 64 tokens gives (M = 512), 2 threads.

Each row is the median of 15 interleaved rounds of 300 back-to-back calls (per-call microseconds): the two Linear
layers as Int8Linear runs them (with and without the GELU epilogue, with and without the residual), the bare
u8 GEMMs (int32 out, A already quantized: what `costbench kernels bench` times), the per-token quantizer alone,
and the feed-forward pair as one job. Run from the repository root, nothing else running:
    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-7/parts.py
"""
import time

import numpy as np
import torch
from torch import nn

from costbench.kernels import gemm
from costbench.kernels.linear import Int8Linear, feed_forward

torch.manual_seed(0)
rng = np.random.default_rng(0)
lin1, lin2 = nn.Linear(384, 1536), nn.Linear(1536, 384)
first_gelu = Int8Linear.from_linear(lin1, activation="gelu", threads=2)
first = Int8Linear.from_linear(lin1, threads=2)
second = Int8Linear.from_linear(lin2, threads=2)
x, h, r = torch.randn(512, 384), torch.randn(512, 1536), torch.randn(512, 384)
xq = rng.integers(0, 256, (512, 384), dtype=np.uint8)
hq = rng.integers(0, 256, (512, 1536), dtype=np.uint8)
fns = {
    "384->1536 Int8Linear + GELU": lambda: first_gelu(x),
    "384->1536 Int8Linear": lambda: first(x),
    "384->1536 u8 GEMM, int32 out": lambda: gemm.int8_gemm(xq, first.packed, threads=2),
    "quantize 512x384 per token": lambda: gemm.quantize_per_token(x.numpy(), threads=2),
    "1536->384 Int8Linear + residual": lambda: second(h, residual=r),
    "1536->384 Int8Linear": lambda: second(h),
    "1536->384 u8 GEMM, int32 out": lambda: gemm.int8_gemm(hq, second.packed, threads=2),
    "quantize 512x1536 per token": lambda: gemm.quantize_per_token(h.numpy(), threads=2),
    "both as two calls": lambda: second(first_gelu(x), residual=r),
    "both as one job (feed_forward)": lambda: feed_forward(first_gelu, second, x, r),
}
times = {k: [] for k in fns}
names = list(fns)
for _ in range(15):
    for i in rng.permutation(len(names)):
        fn = fns[names[i]]
        for _ in range(20):
            fn()
        t0 = time.perf_counter()
        for _ in range(300):
            fn()
        times[names[i]].append((time.perf_counter() - t0) / 300 * 1e6)
peak = gemm.peak_gops("avx512vnni", 2)
ops = 2 * 512 * 384 * 1536
print(f"register-only avx512vnni peak, 2 threads: {peak:.0f} GOPS; one 512x384x1536 product is {ops / 1e9:.3f} GOP")
for k, v in times.items():
    med = float(np.median(v))
    gops = f"  {ops / med / 1e3:.0f} GOPS ({100 * ops / med / 1e3 / peak:.0f}% of peak)" if "GEMM" in k or "Int8Linear" in k else ""
    print(f"{k:34s} {med:7.0f} us{gops}")
