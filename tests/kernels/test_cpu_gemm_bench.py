"""pytest-benchmark micro-benchmarks of the GEMM (run with --benchmark-enable; a single call otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

from costbench.kernels import gemm
from costbench.kernels.reference import int8_gemm_reference

SHAPES = [(1, 384, 1536), (32, 384, 1536), (512, 384, 1536), (128, 1536, 384)]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
@pytest.mark.parametrize("isa", gemm.supported_isas()[:2])
def test_gemm_speed(benchmark, isa, m, k, n, rng):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    pw = gemm.PackedWeight.pack(b, isa)
    out = np.full((m, n), -0x21524111, np.int32)  # poisoned: an output the kernel does not write shows
    benchmark.extra_info["gops_per_call"] = 2 * m * k * n / 1e9
    c = benchmark(gemm.int8_gemm, a, pw, out=out)
    # what was timed is exact (checked after timing, on the last call's result; times are never asserted)
    assert c is out
    np.testing.assert_array_equal(c, int8_gemm_reference(a, b), err_msg=f"{isa} {m}x{k}x{n}")
