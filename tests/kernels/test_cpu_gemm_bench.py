"""pytest-benchmark micro-benchmarks of the GEMM (run with --benchmark-enable; a single call otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from costbench.kernels import gemm

SHAPES = [(1, 384, 1536), (32, 384, 1536), (512, 384, 1536), (128, 1536, 384)]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
@pytest.mark.parametrize("isa", gemm.supported_isas()[:2])
def test_gemm_speed(benchmark, isa, m, k, n):
    rng = np.random.default_rng()
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    pw = gemm.PackedWeight.pack(rng.integers(-128, 128, (k, n), dtype=np.int8), isa)
    out = np.empty((m, n), np.int32)
    benchmark.extra_info["gops_per_call"] = 2 * m * k * n / 1e9
    benchmark(gemm.int8_gemm, a, pw, out=out)
