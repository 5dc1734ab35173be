"""avx2-saturating: the inexact vpmaddubsw path, only ever used when asked for by name.

Exact where its pair sums fit int16 (u8 activations in [0, 127] with any s8 weights, or any activations with
weights in [-64, 63]); off by a saturated pair elsewhere; its linear layers quantize activations to 7 bits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from costbench.kernels import gemm
from costbench.kernels.linear import Int8Linear
from costbench.kernels.reference import int8_gemm_reference

SAT = "avx2-saturating"
pytestmark = pytest.mark.skipif(SAT not in gemm.inexact_isas(), reason="this CPU has no AVX2")
SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1000), (33, 1000, 7), (17, 65, 129), (31, 3, 17), (100, 127, 31),
          (129, 384, 65), (2, 1536, 48), (70, 24, 40), (12, 40, 240)]
POISON = np.int32(-0x21524111)


def test_never_chosen_by_itself():
    assert SAT not in gemm.supported_isas()
    assert gemm.best_isa() != SAT or os.environ.get("COSTBENCH_KERNELS_ISA") == SAT


@pytest.mark.parametrize("a_range, b_range", [((0, 127), (-128, 127)), ((0, 255), (-64, 63))])
def test_exact_where_every_pair_fits_int16(a_range, b_range, rng):
    for m, k, n in SHAPES:
        a = rng.integers(a_range[0], a_range[1] + 1, (m, k), dtype=np.uint8)
        b = rng.integers(b_range[0], b_range[1] + 1, (k, n), dtype=np.int8)
        for threads in (1, 2):
            out = np.full((m, n), POISON, np.int32)
            c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, SAT), threads=threads, out=out)
            np.testing.assert_array_equal(c, int8_gemm_reference(a, b), err_msg=f"{m}x{k}x{n} t{threads}")
    # the extremes of both ranges: 2 * 127 * -128 = -32512 and 2 * 255 * -64 = -32640 still fit
    a = np.full((9, 66), a_range[1], np.uint8)
    for bv in b_range:
        b = np.full((66, 20), bv, np.int8)
        np.testing.assert_array_equal(gemm.int8_gemm(a, gemm.PackedWeight.pack(b, SAT)), int8_gemm_reference(a, b))


def test_s8_activations_are_shifted_and_exact_with_narrow_weights(rng):
    a = rng.integers(-128, 128, (37, 99), dtype=np.int8)
    b = rng.integers(-64, 64, (99, 70), dtype=np.int8)
    np.testing.assert_array_equal(gemm.int8_gemm(a, gemm.PackedWeight.pack(b, SAT)), int8_gemm_reference(a, b))


def test_full_range_saturates_as_vpmaddubsw_does():
    # each pair 255 * -128 * 2 = -65280 clips to -32768: K = 8 is 4 pairs, each 32512 short of the exact sum
    a = np.full((3, 8), 255, np.uint8)
    b = np.full((8, 5), -128, np.int8)
    c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, SAT))
    assert (c == -32768 * 4).all()
    assert (int8_gemm_reference(a, b) == -65280 * 4).all()


def test_linear_quantizes_to_seven_bits_and_matches_the_reference(torch_rng):
    lin = torch.nn.Linear(100, 48)
    x = torch.randn(30, 100, generator=torch_rng) * 3
    layer = Int8Linear.from_linear(lin, isa=SAT, threads=2)
    y = layer(x).detach().numpy()
    # the same layer in float64 from the 7-bit quantization of x (the kernel's quantizer, operation for operation)
    q, scale, zp = gemm.quantize_per_token_reference(x.numpy(), qmax=gemm.activation_qmax(SAT))
    assert q.max() <= 127 and zp.max() <= 127
    acc = int8_gemm_reference(q, layer.w_q.T).astype(np.float64) - zp[:, None] * layer.packed.colsum[None, :]
    ref = acc * scale[:, None].astype(np.float64) * layer.w_scale[None, :].astype(np.float64) + layer.bias_f32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_fused_epilogue_gives_the_exact_paths_bits_on_seven_bit_activations(torch_rng):
    lin = torch.nn.Linear(64, 40)
    layer = Int8Linear.from_linear(lin, isa=SAT)
    exact = Int8Linear.from_linear(lin, isa="avx2")
    a = torch.randint(0, 128, (20, 64), generator=torch_rng).to(torch.uint8).numpy()
    zp = np.arange(20, dtype=np.int32) % 100
    rs = np.linspace(0.01, 0.1, 20, dtype=np.float32)
    ys = gemm.int8_gemm_fused(a, layer.packed, a_zero_point=zp, row_scale=rs, col_scale=layer.w_scale,
                              bias=layer.bias_f32)
    ye = gemm.int8_gemm_fused(a, exact.packed, a_zero_point=zp, row_scale=rs, col_scale=exact.w_scale,
                              bias=exact.bias_f32)
    np.testing.assert_array_equal(ys, ye)
