"""The avx512vnni path's blocking: register tiles (6 rows x 64 columns), panel tails, row blocks, the
thread split and work taken over by idle threads, exact against numpy int64 on the full range."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costbench.kernels import gemm
from costbench.kernels.peers import our_peers
from costbench.kernels.reference import int8_gemm_reference

VNNI = "avx512vnni"
needs_vnni = pytest.mark.skipif(VNNI not in gemm.supported_isas(), reason="this CPU cannot run the avx512vnni path")
POISON = np.int32(-0x21524111)
RANGES = {"s8": (-128, 127, np.int8), "u8": (0, 255, np.uint8)}


def _operands(rng, a_type, m, k, n):
    lo, hi, dt = RANGES[a_type]
    return rng.integers(lo, hi + 1, (m, k), dtype=dt), rng.integers(-128, 128, (k, n), dtype=np.int8)


@needs_vnni
@pytest.mark.parametrize("a_type", ["s8", "u8"])
def test_tile_and_panel_edges_are_exact(a_type, rng):
    # M around the 6-row tile, N around the 16-column vector and the 64-column panel, K around the 4-byte group
    for m, n, k in itertools.product((1, 5, 6, 7, 13, 49), (1, 16, 17, 64, 65, 200), (1, 3, 4, 385)):
        a, b = _operands(rng, a_type, m, k, n)
        pw = gemm.PackedWeight.pack(b, VNNI)
        exact = int8_gemm_reference(a, b)
        for threads in (1, 2, 3):
            c = gemm.int8_gemm(a, pw, threads=threads, out=np.full((m, n), POISON, np.int32))
            np.testing.assert_array_equal(c, exact, err_msg=f"{a_type} {m}x{k}x{n} t{threads}")


@needs_vnni
@pytest.mark.parametrize("a_type", ["s8", "u8"])
def test_row_blocks_splits_and_oversubscription_are_exact(a_type, rng):
    # several L2 row blocks (K = 1536: 42 tiles a block), one panel (split along M), one tile (split along N),
    # and more threads than cores, so that tasks are taken over by whichever thread runs
    for m, k, n in [(600, 1536, 130), (2048, 64, 16), (6, 384, 1152), (31, 384, 384), (3, 8, 2000)]:
        a, b = _operands(rng, a_type, m, k, n)
        pw = gemm.PackedWeight.pack(b, VNNI)
        exact = int8_gemm_reference(a, b)
        for threads in (2, 4, 8):
            c = gemm.int8_gemm(a, pw, threads=threads, out=np.full((m, n), POISON, np.int32))
            np.testing.assert_array_equal(c, exact, err_msg=f"{a_type} {m}x{k}x{n} t{threads}")


@needs_vnni
def test_extremes_on_every_tile_shape():
    # all -128 / 127 / 255 against all -128 / 127, with M and N tails in the same call
    m, k, n = 13, 1027, 81
    for a_val, dt in ((-128, np.int8), (127, np.int8), (255, np.uint8), (0, np.uint8)):
        for b_val in (-128, 127):
            a, b = np.full((m, k), a_val, dt), np.full((k, n), b_val, np.int8)
            c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, VNNI), threads=2, out=np.full((m, n), POISON, np.int32))
            np.testing.assert_array_equal(c, int8_gemm_reference(a, b), err_msg=f"A={a_val} B={b_val}")


@needs_vnni
def test_fused_epilogue_on_tails(rng):
    # the fused form's integer part through the per-vector epilogue, M and N tails included
    m, k, n = 19, 130, 90
    a, b = _operands(rng, "s8", m, k, n)
    zp = rng.integers(-128, 256, m).astype(np.int32)
    y = gemm.int8_gemm_fused(a, gemm.PackedWeight.pack(b, VNNI), a_zero_point=zp, row_scale=1.0, col_scale=1.0,
                             threads=2, out=np.full((m, n), np.nan, np.float32))
    acc = a.astype(np.int64) @ b.astype(np.int64) - zp[:, None] * b.astype(np.int64).sum(0)
    np.testing.assert_array_equal(y, acc.astype(np.float32))


def test_packed_bytes_hold_the_panels():
    for isa in gemm.supported_isas():
        g = gemm.geometry(isa)
        # only amx hands small-K weights to the avx512vnni kernel, whose packing the weight then carries too
        assert g["vnni_max_k"] == (64 if isa == "amx" else 0), (isa, g)
        if isa == "amx":
            small, large = gemm.PackedWeight.pack(np.ones((64, 48), np.int8), isa), gemm.PackedWeight.pack(
                np.ones((65, 48), np.int8), isa)
            vnni = gemm.PackedWeight.pack(np.ones((64, 48), np.int8), "avx512vnni")
            assert small.data.nbytes == 64 * 64 + vnni.data.nbytes and large.data.nbytes == 128 * 64
        for k, n in [(1, 1), (5, 17), (384, 65), (33, 200)]:
            pw = gemm.PackedWeight.pack(np.ones((k, n), np.int8), isa)
            if isa != "generic":
                assert pw.data.nbytes >= -(-k // g["k_align"]) * g["k_align"] * n, (isa, k, n)


def test_validate_lists_every_path_of_ours():
    peers = our_peers()
    assert [p.isa for p in peers] == ["amx", "avx512vnni", "avx2", "generic", "avx2-saturating", "avx2-saturating"]
    # the inexact path: on the full range (reported, not required exact), then on the range where it is exact
    assert [p.exact_required for p in peers] == [True] * 4 + [False, True]
    assert peers[-1].a_types == ("u7",)
    for p in peers:
        why = p.available()
        if p.isa in gemm.supported_isas() + gemm.inexact_isas():
            assert why is None
        else:
            assert why and p.isa in why and "cannot run" in why


def test_bench_peer_reuses_one_output_per_row_count_and_stays_exact(rng):
    """The bench's `Ours` writes into a buffer kept per row count (as ORT's arena): each call's result is exact."""
    from costbench.kernels.peers import Ours

    b = rng.integers(-128, 128, (40, 24), dtype=np.int8)
    run = Ours(gemm.supported_isas()[0]).prepare(b, "u8", 2).run
    a1, a2 = (rng.integers(0, 256, (30, 40), dtype=np.uint8) for _ in range(2))
    y1 = run(a1).copy()
    y2 = run(a2)
    assert run(a2) is y2  # the same buffer for the same row count
    y3 = run(a1[:7])
    for a, y in ((a1, y1), (a2, y2), (a1[:7], y3)):
        assert np.array_equal(y, a.astype(np.int64) @ b.astype(np.int64))


@pytest.mark.skipif("amx" not in gemm.supported_isas(), reason="this CPU cannot run the amx path")
def test_amx_shares_of_rows_and_of_columns_are_exact(rng):
    # amx cuts the task grid into one share per thread, of columns (N >= M) or rows (M > N), and threads then
    # help finish the others' shares: large enough for 2 to 8 threads (2^24 padded MACs each), more threads than
    # cores, and tails in both directions
    for m, k, n in [(128, 384, 1152), (2048, 384, 384), (520, 416, 700), (1100, 448, 230)]:
        a, b = _operands(rng, "u8", m, k, n)
        pw = gemm.PackedWeight.pack(b, "amx")
        exact = int8_gemm_reference(a, b)
        for threads in (2, 3, 8):
            c = gemm.int8_gemm(a, pw, threads=threads, out=np.full((m, n), POISON, np.int32))
            np.testing.assert_array_equal(c, exact, err_msg=f"amx {m}x{k}x{n} t{threads}")


def test_bench_times_the_forced_path_as_ours_and_the_saturating_mode_only_beside_avx2(monkeypatch):
    from costbench.kernels.bench import bench_peers

    monkeypatch.delenv("COSTBENCH_KERNELS_ISA", raising=False)
    ours = [p for p in bench_peers() if p.ours]
    assert ours[0].isa == gemm.supported_isas()[0]
    assert ("avx2-saturating" in [p.isa for p in ours]) == (gemm.supported_isas()[0] == "avx2")
    if "avx2" in gemm.supported_isas():
        monkeypatch.setenv("COSTBENCH_KERNELS_ISA", "avx2")  # as on a CPU without VNNI
        ours = [p for p in bench_peers() if p.ours]
        assert [p.isa for p in ours][0] == "avx2" and [p.isa for p in ours][-1] == "avx2-saturating"
        assert not ours[-1].exact_required
