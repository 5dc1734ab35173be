"""Whether the feed-forward job beats two Int8Linear calls at every row count: MiniLM's pair (384 -> 1536 with
GELU, 1536 -> 384 with the residual), 2 threads, the C job called directly.
Median of 15 interleaved rounds of 200 back-to-back calls per row count. Run from the repository root,
nothing else running:
    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-7/ffn_rows.py
"""
import time

import numpy as np
import torch
from torch import nn

from costbench.kernels import _gemm
from costbench.kernels.linear import Int8Linear

torch.manual_seed(0)
rng = np.random.default_rng(0)
first = Int8Linear.from_linear(nn.Linear(384, 1536), activation="gelu", threads=2)
second = Int8Linear.from_linear(nn.Linear(1536, 384), threads=2)
p1, p2 = first.packed, second.packed


def job(x, r, y):
    _gemm.ffn(x.numpy(), len(x), 384, 384, p1.data, 1536, p1.colsum, first.w_scale, first.bias_f32, p2.data, 384,
              p2.colsum, second.w_scale, second.bias_f32, y.numpy(), 2, False, r.numpy())


print("rows  two calls us  job us  two calls / job")
for m in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512):
    x, r, y = torch.randn(m, 384), torch.randn(m, 384), torch.empty(m, 384)
    fns = {"two": lambda: second(first(x), residual=r), "job": lambda: job(x, r, y)}
    times = {k: [] for k in fns}
    for _ in range(15):
        for k in rng.permutation(list(fns)):
            for _ in range(10):
                fns[k]()
            t0 = time.perf_counter()
            for _ in range(200):
                fns[k]()
            times[k].append((time.perf_counter() - t0) / 200 * 1e6)
    two, one = np.median(times["two"]), np.median(times["job"])
    ratio = np.median(np.array(times["two"]) / np.array(times["job"]))
    print(f"{m:4d}  {two:12.0f}  {one:6.0f}  {ratio:.2f}")
