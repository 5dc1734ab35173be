"""The C int8 GEMM on every code path this CPU runs: exact against numpy int64, on the full range."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from costbench.kernels import gemm
from costbench.kernels.reference import int8_gemm_reference

ISAS = gemm.supported_isas()
POISON = np.int32(-0x21524111)
# shapes that fit no tile: M, K, N of 1, odd, just past 16/32/64 boundaries, K not a multiple of 4/32/64; and
# on amx, where A is read in place but for its last rows: a partial last row block of more than 16 rows (50),
# whole blocks stored straight to the output after two K blocks of partial sums (640 > AMX_KC), rows shorter
# than a tile row's 64 bytes, so that a last k-step reads into the next two rows (24) or twenty-one (3)
SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1000), (33, 1000, 7), (17, 65, 129), (16, 64, 32), (31, 3, 17),
          (100, 127, 31), (129, 384, 65), (2, 1536, 48), (50, 128, 96), (64, 640, 64), (70, 24, 40), (100, 3, 17)]
RANGES = {"s8": (-128, 127, np.int8), "u8": (0, 255, np.uint8)}


def _poisoned(m, n):
    return np.full((m, n), POISON, np.int32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("a_type", ["s8", "u8"])
def test_random_full_range_is_exact(isa, a_type, rng):
    lo, hi, dt = RANGES[a_type]
    for m, k, n in SHAPES:
        a = rng.integers(lo, hi + 1, (m, k), dtype=dt)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        pw = gemm.PackedWeight.pack(b, isa)
        for threads in (1, 2):
            c = gemm.int8_gemm(a, pw, threads=threads, out=_poisoned(m, n))
            np.testing.assert_array_equal(c, int8_gemm_reference(a, b), err_msg=f"{isa} {a_type} {m}x{k}x{n} t{threads}")


def _at_offset(shape, dtype, offset):
    """A C-contiguous array whose data starts `offset` bytes past a cache line."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gemm.aligned_empty(nbytes + 64)[offset:offset + nbytes].view(dtype).reshape(shape)


@pytest.mark.parametrize("isa", ISAS)
def test_rows_on_and_off_cache_lines_are_exact(isa, rng):
    # amx stores whole tiles to the output where its rows start on cache lines (N a multiple of 16 int32s there),
    # and reads A in place: A and out 0, 4, 16 and 48 bytes past a line, with a row block of 32 stored whole
    for (m, k, n), a_off, o_off in [((64, 384, 64), 0, 0), ((64, 384, 64), 16, 16), ((64, 384, 64), 0, 16),
                                    ((96, 200, 96), 48, 0), ((33, 640, 48), 4, 4), ((64, 128, 80), 0, 48)]:
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        a = _at_offset((m, k), np.uint8, a_off)
        a[...] = rng.integers(0, 256, (m, k), dtype=np.uint8)
        out = _at_offset((m, n), np.int32, o_off)
        out[...] = POISON
        c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, isa), threads=2, out=out)
        assert c is out
        np.testing.assert_array_equal(c, int8_gemm_reference(a, b),
                                      err_msg=f"{isa} {m}x{k}x{n} A+{a_off} out+{o_off}")


def test_default_outputs_start_on_a_cache_line(rng):
    for m, n in [(1, 1), (100, 300), (2048, 384)]:
        assert gemm.aligned_array((m, n), np.int32).ctypes.data % 64 == 0
        a = rng.integers(0, 256, (m, 8), dtype=np.uint8)
        assert gemm.int8_gemm(a, rng.integers(-128, 128, (8, n), dtype=np.int8)).ctypes.data % 64 == 0
        assert gemm.quantize_per_token(rng.standard_normal((m, n), dtype=np.float32))[0].ctypes.data % 64 == 0


@pytest.mark.parametrize("isa", ISAS)
def test_extremes_are_exact(isa):
    # the values that saturate int16 in vpmaddubsw-based kernels: 255*-128*2, -128*-128*2, ...
    for m, k, n in [(33, 1000, 7), (17, 65, 129), (40, 1536, 40)]:
        for a_val, dt in ((-128, np.int8), (127, np.int8), (255, np.uint8), (0, np.uint8)):
            for b_val in (-128, 127):
                a = np.full((m, k), a_val, dt)
                b = np.full((k, n), b_val, np.int8)
                c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, isa), out=_poisoned(m, n))
                np.testing.assert_array_equal(c, int8_gemm_reference(a, b), err_msg=f"{isa} A={a_val} B={b_val}")


@pytest.mark.parametrize("isa", ISAS)
def test_alternating_extremes_are_exact(isa, rng):
    # neighbouring pairs of +-extremes: the worst case for any pairwise int16 sum
    m, k, n = 24, 200, 40
    a = np.where(rng.random((m, k)) < 0.5, -128, 127).astype(np.int8)
    b = np.where(rng.random((k, n)) < 0.5, -128, 127).astype(np.int8)
    c = gemm.int8_gemm(a, gemm.PackedWeight.pack(b, isa), out=_poisoned(m, n))
    np.testing.assert_array_equal(c, int8_gemm_reference(a, b))
    au = np.where(rng.random((m, k)) < 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(gemm.int8_gemm(au, gemm.PackedWeight.pack(b, isa)), int8_gemm_reference(au, b))


def test_all_paths_agree(rng):
    a = rng.integers(-128, 128, (45, 301), dtype=np.int8)
    b = rng.integers(-128, 128, (301, 77), dtype=np.int8)
    results = [gemm.int8_gemm(a, gemm.PackedWeight.pack(b, isa)) for isa in ISAS]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# fastest first: the order of preference kernels/csrc/gemm.c lists the exact paths in (descending ISA id)
PREFERENCE = ["amx", "avx512vnni", "avx2", "generic"]


def test_best_path_is_first_and_generic_always_there(monkeypatch, rng):
    exact_ids = {isa: i for isa, i in gemm.ISA_IDS.items() if isa not in gemm.INEXACT_ISAS}
    assert PREFERENCE == sorted(exact_ids, key=exact_ids.__getitem__, reverse=True)
    assert ISAS == [isa for isa in PREFERENCE if isa in ISAS], f"not in order of preference: {ISAS}"
    assert len(set(ISAS)) == len(ISAS) and set(ISAS) <= set(PREFERENCE), ISAS
    assert ISAS[-1] == "generic"  # the portable path runs everywhere
    assert "amx" not in ISAS or "avx512vnni" in ISAS  # AMX packs run short calls on the VNNI kernel
    monkeypatch.delenv("COSTBENCH_KERNELS_ISA", raising=False)
    assert gemm.best_isa() == ISAS[0]
    b = rng.integers(-128, 128, (8, 4), dtype=np.int8)
    assert gemm.PackedWeight.pack(b).isa == ISAS[0]  # no path asked for: the best one
    monkeypatch.setenv("COSTBENCH_KERNELS_ISA", "generic")  # forced: the portable path, wherever it runs
    assert gemm.best_isa() == "generic" and gemm.PackedWeight.pack(b).isa == "generic"


def test_unpacked_weight_and_empty_m(rng):
    b = rng.integers(-128, 128, (10, 3), dtype=np.int8)
    a = rng.integers(-128, 128, (4, 10), dtype=np.int8)
    np.testing.assert_array_equal(gemm.int8_gemm(a, b), int8_gemm_reference(a, b))
    assert gemm.int8_gemm(np.zeros((0, 10), np.int8), b).shape == (0, 3)


def test_bad_operands_are_refused(rng):
    b = rng.integers(-128, 128, (10, 3), dtype=np.int8)
    with pytest.raises(TypeError):
        gemm.int8_gemm(np.zeros((2, 10), np.int16), b)
    with pytest.raises(ValueError):
        gemm.int8_gemm(np.zeros((2, 9), np.int8), b)
    with pytest.raises(TypeError):
        gemm.PackedWeight.pack(b.astype(np.uint8))
    with pytest.raises(ValueError):
        gemm.int8_gemm(np.zeros((2, 10), np.int8), b, out=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        gemm.PackedWeight.pack(b, "nonsense")


@pytest.mark.parametrize("isa", ISAS)
def test_fused_epilogue_matches_fp64(isa, rng):
    for m, k, n in [(1, 7, 33), (33, 130, 70), (64, 384, 96)]:
        for dt, lo, hi in ((np.int8, -128, 128), (np.uint8, 0, 256)):
            a = rng.integers(lo, hi, (m, k), dtype=dt)
            b = rng.integers(-128, 128, (k, n), dtype=np.int8)
            zp = rng.integers(0, 256, m).astype(np.int32)
            rs = rng.uniform(1e-3, 1e-1, m).astype(np.float32)
            cs = rng.uniform(1e-3, 1e-1, n).astype(np.float32)
            bias = rng.normal(size=n).astype(np.float32)
            y = gemm.int8_gemm_fused(a, gemm.PackedWeight.pack(b, isa), a_zero_point=zp, row_scale=rs, col_scale=cs,
                                     bias=bias, out=np.full((m, n), np.nan, np.float32))
            acc = a.astype(np.int64) @ b.astype(np.int64) - zp[:, None] * b.astype(np.int64).sum(0)
            ref = acc * rs[:, None].astype(np.float64) * cs.astype(np.float64) + bias
            tol = 4 * 2.0**-23 * (np.abs(acc) * rs[:, None] * cs + np.abs(bias)) + 1e-30
            assert not np.isnan(y).any()
            assert (np.abs(y - ref) <= tol).all(), f"{isa} {m}x{k}x{n} {dt}"


def test_quantizer_matches_numpy_reference(rng):
    x = (rng.standard_normal((37, 129)) * rng.uniform(0.01, 10, (37, 1))).astype(np.float32)
    x[3] = 0.0  # an all-zero row
    x[5] = np.abs(x[5])  # all positive: zero point 0
    x[6] = -np.abs(x[6])  # all negative: zero point 255
    q, s, z = gemm.quantize_per_token(x)
    qr, sr, zr = gemm.quantize_per_token_reference(x)
    np.testing.assert_array_equal(s, sr)
    np.testing.assert_array_equal(z, zr)
    np.testing.assert_array_equal(q, qr)
    assert z[5] == 0 and z[6] == 255 and s[3] == 1.0
    # dequantized values are within half a step
    assert (np.abs(s[:, None] * (q.astype(np.float32) - z[:, None]) - x) <= s[:, None] * 0.5001).all()


@pytest.mark.parametrize("k", [1, 7, 31, 32, 33, 64, 100, 1000])
def test_quantizer_simd_rows_match_the_reference_on_hard_values(k, rng):
    """Every K around the 32-wide SIMD step; NaN, ±inf, -0.0, huge and exact .5 products; row splits across threads."""
    m = 600  # 600 x 1000 is past the size at which rows are split across threads
    x = (rng.standard_normal((m, k)) * rng.uniform(1e-3, 1e3, (m, 1))).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 3e38, -3e38, 1e-40], np.float32)
    hit = rng.random((m, k)) < 0.02
    x[hit] = rng.choice(special, hit.sum())
    x[7] = np.float32(2.5) * (np.arange(k) % 3 - 1)  # scale 5/255: products land on .5 ties
    q, s, z = gemm.quantize_per_token(x, threads=2)
    qr, sr, zr = gemm.quantize_per_token_reference(x)
    np.testing.assert_array_equal(s, sr)
    np.testing.assert_array_equal(z, zr)
    np.testing.assert_array_equal(q, qr)


@pytest.mark.parametrize("isa", ISAS)
def test_int8_linear_is_quantizer_then_exact_gemm(isa, rng):
    m, k, n = 19, 200, 45
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = rng.uniform(1e-3, 1e-2, n).astype(np.float32)
    bias = rng.normal(size=n).astype(np.float32)
    y = gemm.int8_linear(x, gemm.PackedWeight.from_linear_weight(w, isa), ws, bias)
    q, s, z = gemm.quantize_per_token_reference(x)
    acc = q.astype(np.int64) @ w.T.astype(np.int64) - z[:, None] * w.astype(np.int64).sum(1)
    ref = acc * s[:, None].astype(np.float64) * ws + bias
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_peak_loops_run():
    for isa in ISAS:
        assert gemm.peak_gops(isa, threads=1, seconds=0.01) > 0


def test_peak_loop_counts_every_chunk_whichever_thread_ran_it():
    """The loop is a dynamic job (threads take chunks of iterations); the count it returns is the work done."""
    for isa in ISAS:
        one = gemm._gemm.peak(gemm.ISA_IDS[isa], 1600, 1)
        assert one > 0 and gemm._gemm.peak(gemm.ISA_IDS[isa], 1600, 3) == 3 * one
        assert gemm._gemm.peak(gemm.ISA_IDS[isa], 1615, 1) == one  # whole chunks of iters / 16
        call, ops = gemm.peak_call(isa, threads=2, seconds=0.001)
        assert 2 * call() == ops


# The start of a fresh process whose pool has just started its worker (on the first multi-threaded call).
_START_POOL = """
import os, threading, time, numpy as np
from costbench.kernels import bench, gemm
cpus = set(os.sched_getaffinity(0))
pw = gemm.PackedWeight.pack(np.ones((384, 384), np.int8), gemm.supported_isas()[0])
gemm.int8_gemm(np.ones((512, 384), np.uint8), pw, threads=2)
"""
needs_two_cpus = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                                    reason="needs Linux and at least 2 CPUs to run the pool's worker beside the caller")


def _child_line(code: str) -> str:
    """The last line a fresh Python process running ``code`` prints."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


@needs_two_cpus
def test_starting_the_pool_leaves_the_callers_cpus_alone():
    """The pool once moved the caller itself off its CPU when a new worker had not run yet (its thread id
    unknown, and 0 means the calling thread to sched_setaffinity): in 7 of 12 fresh processes on a 2-vCPU VM,
    and every thread the process started afterwards (ONNX Runtime's, torch's OpenMP team) inherited the one
    CPU left. Six fresh processes all keep their CPUs (one with the bug passed all six about 1 time in 200)."""
    for _ in range(6):
        line = _child_line(_START_POOL + "print(sorted(cpus), sorted(os.sched_getaffinity(0)))")
        before, after = line.split("] [")
        assert before + "]" == "[" + after, line


@needs_two_cpus
def test_the_bench_names_every_thread_kept_off_some_cpus():
    """A thread kept off some of the process's CPUs, and one started after (inheriting them), are reported by
    kernels.bench.narrowed_threads; the pool's own worker, which the pool moves on purpose, is not (it is named
    _gemm.POOL_THREAD_NAME)."""
    line = _child_line(_START_POOL + """
assert bench.narrowed_threads(cpus) == {}, bench.narrowed_threads(cpus)
os.sched_setaffinity(0, {min(cpus)})  # as the pool's bug once did to the caller
t = threading.Thread(target=time.sleep, args=(1,))
t.start()
print(sorted(bench.narrowed_threads(cpus).items()), threading.get_native_id(), t.native_id)
""")
    first = min(os.sched_getaffinity(0))
    main_tid, thread_tid = line.rsplit(" ", 2)[1:]
    assert line.startswith(str(sorted([(int(main_tid), [first]), (int(thread_tid), [first])]))), line
