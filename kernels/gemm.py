"""The Python face of the C int8 GEMM: code paths, ``PackedWeight``, the raw GEMM and the fused form.

``C_int32 = A · B`` for ``A`` int8 or uint8 (M×K) and ``B`` int8 (K×N), exact on the full value
range for every shape. The C code lives in ``kernels/csrc/gemm.c``; the path (``amx``, ``avx512vnni``,
``avx2``, ``generic``) is chosen at run time from the CPU's features, or forced with ``isa=``.

One more path is never chosen by itself: ``avx2-saturating`` (:data:`INEXACT_ISAS`) multiplies with
``vpmaddubsw``, whose u8×s8 pair sums saturate to int16. It is exact only while every pair sum fits int16
(activations in [0, 127], or weights in [−64, 63]); its linear layers quantize activations to 7 bits so that
they do, and lose a bit of activation resolution for it. Ask for it by name.

The fused form computes, in one pass over the output,
``Y_fp32 = (A·B − zp_row ⊗ colsum(B)) · s_row ⊗ s_col + bias``: an asymmetric activation zero
point per row, symmetric per-channel weights, and the bias.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from costbench.kernels import _gemm

ISA_IDS = {"generic": _gemm.ISA_GENERIC, "avx2": _gemm.ISA_AVX2, "avx512vnni": _gemm.ISA_AVX512VNNI,
           "amx": _gemm.ISA_AMX, "avx2-saturating": _gemm.ISA_AVX2_SAT}
INEXACT_ISAS = ("avx2-saturating",)  # inexact on the full range: only used when asked for by name
SATURATING_QMAX = 127  # the largest activation avx2-saturating's linear layers quantize to (7 bits)
AMX_MIN_ROWS = _gemm.AMX_MIN_ROWS  # an AMX-packed weight runs calls with fewer rows on the VNNI micro-kernel
ALIGN = 64  # packed weights are read with aligned vector loads


def supported_isas() -> list[str]:
    """The exact code paths this CPU can run, fastest first (``generic`` always last)."""
    return list(_gemm.supported_isas())


def inexact_isas() -> list[str]:
    """The inexact paths this CPU can run (see :data:`INEXACT_ISAS`); never among :func:`supported_isas`."""
    return list(_gemm.inexact_isas())


def activation_qmax(isa: str) -> int:
    """The largest value a linear layer on ``isa`` quantizes its activations to: 255, or 127 on avx2-saturating."""
    return SATURATING_QMAX if isa in INEXACT_ISAS else 255


def best_isa() -> str:
    """The path chosen when none is asked for: ``$COSTBENCH_KERNELS_ISA`` if set, else the fastest supported."""
    forced = os.environ.get("COSTBENCH_KERNELS_ISA")
    return _check_isa(forced) if forced else supported_isas()[0]


def _check_isa(isa: str | None) -> str:
    if isa is None:
        return best_isa()
    if isa not in ISA_IDS:
        raise ValueError(f"unknown kernel path {isa!r}; known: {', '.join(ISA_IDS)}")
    if isa not in supported_isas() and isa not in inexact_isas():
        raise RuntimeError(f"this CPU cannot run the {isa} path; it supports "
                           f"{', '.join(supported_isas() + inexact_isas())}")
    return isa


def geometry(isa: str) -> dict:
    """Tile geometry of a path: k_align, nr (panel width), mr (rows per micro-tile), element_bytes, mc, and
    vnni_max_k (weights with K up to it run the avx512vnni kernel on this path: amx's hand-over; 0 elsewhere)."""
    return dict(_gemm.geometry(ISA_IDS[isa]))


def default_threads() -> int:
    """Threads used when a call does not say: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """A uint8 array of ``nbytes`` whose data pointer is ``align``-byte aligned."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset : offset + nbytes]


def aligned_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array that starts on a cache line, as torch's and ONNX Runtime's
    allocators place tensors (numpy's large arrays start 16 bytes past one)."""
    dtype = np.dtype(dtype)
    return aligned_empty(int(np.prod(shape)) * dtype.itemsize).view(dtype).reshape(shape)


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """An int8 weight matrix ``B`` (K×N) packed once into the layout one code path reads.

    Keeps the per-column sums of ``B`` (int32) that the zero-point and +128 corrections need.
    Build it with :meth:`pack` (from ``B``, K×N) or :meth:`from_linear_weight` (from an
    ``nn.Linear``-style weight, N×K).
    """

    isa: str
    k: int
    n: int
    data: np.ndarray = field(repr=False)  # packed bytes, 64-byte aligned
    colsum: np.ndarray = field(repr=False)  # int32 (N,)

    @classmethod
    def pack(cls, b: np.ndarray, isa: str | None = None) -> "PackedWeight":
        """Pack ``b`` (int8, K×N) for ``isa`` (default: the best path on this CPU)."""
        isa = _check_isa(isa)
        b = np.asarray(b)
        if b.dtype != np.int8:
            raise TypeError(f"the weight operand must be int8, got {b.dtype}")
        if b.ndim != 2 or 0 in b.shape:
            raise ValueError(f"the weight must be a non-empty K×N matrix, got shape {b.shape}")
        k, n = b.shape
        if k >= 1 << 17:
            raise ValueError(f"K={k} is too large: an exact int32 result needs K < 2**17")
        b = np.ascontiguousarray(b)
        data = aligned_empty(_gemm.packed_bytes(ISA_IDS[isa], k, n))
        _gemm.pack_b(ISA_IDS[isa], b, n, k, n, data)
        colsum = b.sum(axis=0, dtype=np.int64).astype(np.int32)
        return cls(isa, k, n, data, colsum)

    @classmethod
    def from_linear_weight(cls, w_q: np.ndarray, isa: str | None = None) -> "PackedWeight":
        """Pack an int8 ``nn.Linear``-style weight (N×K, out_features × in_features)."""
        return cls.pack(np.asarray(w_q).T, isa)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.colsum.nbytes)


def _as_operand(a: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(a)
    if a.dtype not in (np.int8, np.uint8):
        raise TypeError(f"the activation operand must be int8 or uint8, got {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"the activation operand must be M×K, got shape {a.shape}")
    return np.ascontiguousarray(a), a.dtype == np.uint8


def _vector(x, n: int, dtype, what: str) -> np.ndarray | None:
    if x is None:
        return None
    v = np.asarray(x, dtype=dtype)
    if v.ndim == 0:
        v = np.full(n, v, dtype=dtype)
    if v.shape != (n,):
        raise ValueError(f"{what} must be a scalar or have shape ({n},), got {v.shape}")
    return np.ascontiguousarray(v)


def int8_gemm(
    a: np.ndarray,
    b: np.ndarray | PackedWeight,
    *,
    isa: str | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``C_int32 = A · B`` exactly, for ``a`` int8/uint8 (M×K) and ``b`` int8 (K×N) or a :class:`PackedWeight`.

    Exactly on every path but ``avx2-saturating``, which is exact only while each pair of products fits int16
    (``a`` in [0, 127], or ``b`` in [−64, 63]) and otherwise off by up to 32 512 per pair of k.

    ``threads`` is the most threads the call may use (default: all cores this process may run
    on); tiny problems use fewer. ``out``, if given, must be a C-contiguous int32 (M, N) array.
    Rows that start on 64-byte cache lines (``a`` and ``out``, as :func:`aligned_array` gives them and the
    default ``out`` is) are faster on the amx path, whose tiles load and store whole rows of 64 bytes.
    """
    a, a_unsigned = _as_operand(a)
    pw = b if isinstance(b, PackedWeight) else PackedWeight.pack(b, isa)
    if isa is not None and pw.isa != isa:
        raise ValueError(f"weight packed for {pw.isa}, call asked for {isa}")
    m, k = a.shape
    if k != pw.k:
        raise ValueError(f"shapes ({m}, {k}) and ({pw.k}, {pw.n}) do not chain")
    out = _out(out, (m, pw.n), np.int32)
    _gemm.gemm(ISA_IDS[pw.isa], a, a_unsigned, m, k, k, pw.data, pw.n, pw.colsum, None, None, None, None,
               out, False, threads or default_threads())
    return out


def int8_gemm_fused(
    a: np.ndarray,
    b: PackedWeight,
    *,
    a_zero_point: int | np.ndarray | None = None,
    row_scale: float | np.ndarray | None = None,
    col_scale: float | np.ndarray | None = None,
    bias: np.ndarray | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``Y_fp32 = (A·B − zp_row ⊗ colsum(B)) · s_row ⊗ s_col + bias`` in one pass.

    ``a_zero_point`` and ``row_scale`` are a scalar or one value per row of ``a``; ``col_scale``
    and ``bias`` a scalar or one value per column of ``b``. The integer part is exact; the result
    is the fp32 rounding of ``float32(exact int32) · s_row · s_col + bias`` (one fused multiply-add
    on the vector paths).
    """
    a, a_unsigned = _as_operand(a)
    m, k = a.shape
    if k != b.k:
        raise ValueError(f"shapes ({m}, {k}) and ({b.k}, {b.n}) do not chain")
    out = _out(out, (m, b.n), np.float32)
    _gemm.gemm(ISA_IDS[b.isa], a, a_unsigned, m, k, k, b.data, b.n, b.colsum,
               _vector(a_zero_point, m, np.int32, "a_zero_point"), _vector(row_scale, m, np.float32, "row_scale"),
               _vector(col_scale, b.n, np.float32, "col_scale"), _vector(bias, b.n, np.float32, "bias"),
               out, True, threads or default_threads())
    return out


def quantize_per_token(x: np.ndarray, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's dynamic activation quantizer: per-row asymmetric u8 (ONNX DynamicQuantizeLinear per row).

    Returns ``(q uint8 M×K, scale float32 (M,), zero_point int32 (M,))`` with
    ``x ≈ scale · (q − zero_point)``. ``threads``: the most threads (rows are split; small inputs use one).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be M×K with K ≥ 1, got {x.shape}")
    m, k = x.shape
    q = aligned_array((m, k), np.uint8)  # on a cache line, as the amx tiles read it best
    scale = np.empty(m, np.float32)
    zp = np.empty(m, np.int32)
    _gemm.quantize_rows(x, m, k, k, q, scale, zp, threads or default_threads())
    return q, scale, zp


def quantize_per_token_reference(x: np.ndarray, qmax: int = 255) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy version of :func:`quantize_per_token`, operation for operation (for tests); ``qmax`` 127 gives the
    7-bit activations of avx2-saturating's linear layers.

    NaN elements do not widen a row's range (fmin/fmax skip them), as in the kernel; what they quantize
    to follows the platform's float-to-int conversion in both (0 on x86).
    """
    x = np.asarray(x, dtype=np.float32)
    lo = np.fmin.reduce(x, axis=1, initial=np.float32(0)) if x.shape[1] else np.zeros(len(x), np.float32)
    hi = np.fmax.reduce(x, axis=1, initial=np.float32(0)) if x.shape[1] else np.zeros(len(x), np.float32)
    # inf ranges, inf products and NaN -> int32 (INT_MIN on x86, clamped below) are handled as the kernel does
    with np.errstate(over="ignore", invalid="ignore"):
        scale = ((hi - lo) / np.float32(qmax)).astype(np.float32)
        ok = (scale > 0) & np.isfinite(scale)
        scale = np.where(ok, scale, np.float32(1)).astype(np.float32)
        zp = np.where(ok, np.clip(np.rint(-lo / scale), 0, qmax), 0).astype(np.int32)
        inv = (np.float32(1) / scale).astype(np.float32)
        q = np.clip(np.rint(x * inv[:, None]).clip(-512, 512).astype(np.int32) + zp[:, None], 0, qmax).astype(np.uint8)
    return q, scale, zp


# the epilogue's activation, as _gemm.linear numbers them
ACTIVATIONS = {None: 0, "gelu": 1}


def int8_linear(
    x: np.ndarray,
    w: PackedWeight,
    w_scale: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    threads: int | None = None,
    out: np.ndarray | None = None,
    openmp: bool = False,
    activation: str | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """``y = x · Wᵀ + bias`` with ``x`` quantized per row to u8 on the fly and ``W`` int8 per channel.

    On ``avx2-saturating`` weights, ``x`` is quantized to 7 bits (0..127: :func:`activation_qmax`), so that
    the saturating GEMM is exact on what it is given.

    ``x`` is float32 (M×K); ``w`` the packed int8 weight (K×N), ``w_scale`` its per-output-channel
    scales (N,). Quantization, GEMM and epilogue run in one C call. ``openmp``: on the avx512vnni path,
    run on the threads of the OpenMP runtime given to :func:`use_openmp` (``Int8Linear`` does this
    inside PyTorch, whose own OpenMP threads would otherwise compete with ours for the cores).
    ``activation="gelu"``: exact (erf) GELU applied in the epilogue (within ~1e-6 relative of it).
    ``residual`` (float32, M×N, not ``out``): added after the activation, as a transformer's skip
    connection (bit-identical to adding it afterwards).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.k:
        raise ValueError(f"x must be M×{w.k}, got {x.shape}")
    m = x.shape[0]
    out = _out(out, (m, w.n), np.float32)
    ws = _vector(w_scale, w.n, np.float32, "w_scale")
    if residual is not None:
        residual = np.ascontiguousarray(residual, dtype=np.float32)
        if residual.shape != (m, w.n):
            raise ValueError(f"residual must be {m}×{w.n} (the output's shape), got {residual.shape}")
    _gemm.linear(ISA_IDS[w.isa], x, m, w.k, w.k, w.data, w.n, w.colsum, ws,
                 _vector(bias, w.n, np.float32, "bias"), out, threads or default_threads(), None, None, openmp,
                 ACTIVATIONS[activation], residual)
    return out


def use_openmp(path: str | None) -> None:
    """Run ``int8_linear(..., openmp=True)`` on the GNU OpenMP runtime at ``path``.

    The runtime must already be loaded in this process (it is looked up, never loaded a second time);
    ``None`` goes back to costbench's own threads. Raises RuntimeError naming the path otherwise.
    """
    _gemm.use_openmp(path)


def _out(out: np.ndarray | None, shape: tuple[int, int], dtype) -> np.ndarray:
    if out is None:
        return aligned_array(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable C-contiguous {np.dtype(dtype).name} array of shape {shape}")
    return out


def peak_call(isa: str | None = None, threads: int = 1, seconds: float = 0.002) -> tuple[Callable[[], int], float]:
    """A call of the path's register-only multiply-add loop (no loads or stores) on ``threads`` threads that takes
    about ``seconds`` here, and the operations it performs (2 per multiply-accumulate)."""
    import time

    isa_id = ISA_IDS[_check_isa(isa)]
    iters = 1 << 10
    _gemm.peak(isa_id, iters, threads)  # the first call may start the pool's threads: not a timing
    while True:  # calibrate
        t0 = time.perf_counter()
        _gemm.peak(isa_id, iters, threads)
        if time.perf_counter() - t0 > seconds or iters > 1 << 34:
            break
        iters *= 2
    return (lambda: _gemm.peak(isa_id, iters, threads)), 2.0 * _gemm.peak(isa_id, iters, threads)


def peak_gops(isa: str | None = None, threads: int = 1, seconds: float = 0.2) -> float:
    """The int8 ceiling of a path on this CPU, in GOPS (2 ops per multiply-accumulate).

    Runs the path's register-only multiply-add loop (no loads or stores) on ``threads`` threads
    for about ``seconds`` and returns the best of three timings.
    """
    import time

    call, ops = peak_call(isa, threads, seconds / 4)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        call()
        best = max(best, ops / (time.perf_counter() - t0) / 1e9)
    return best
