"""The exact reference for int8 GEMM: numpy int64 matmul, and the affine quantization in docs/architecture.md."""

from __future__ import annotations

import numpy as np

_INT8_TYPES = (np.int8, np.uint8)


def int8_gemm_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``C_int32 = A · B`` computed exactly in int64, for int8/uint8 ``a`` (M×K) and ``b`` (K×N).

    Raises if an operand is not 8-bit or the shapes do not chain, and if the exact result would
    not fit int32 (impossible for K < 2**17 with 8-bit operands, checked anyway).
    """
    if a.dtype.type not in _INT8_TYPES or b.dtype.type not in _INT8_TYPES:
        raise TypeError(f"operands must be int8/uint8, got {a.dtype} and {b.dtype}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not chain as (M,K)x(K,N)")
    c = a.astype(np.int64) @ b.astype(np.int64)
    info = np.iinfo(np.int32)
    if c.size and (c.min() < info.min or c.max() > info.max):
        raise OverflowError("exact result exceeds int32")
    return c.astype(np.int32)


def quantize_symmetric_per_channel(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights per output channel: ``q = clip(round(w / s), -127, 127)``, ``s = max|w| / 127``.

    Returns (q int8, scales float32 along ``axis``). An all-zero channel gets scale 1 so it dequantizes to 0.
    """
    w = np.asarray(w, dtype=np.float32)
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=reduce_axes, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.reshape(-1)
