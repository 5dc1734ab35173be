"""Triton int8 GEMM on tensor cores: ``C_int32 = A · B`` and the fused dequantizing form.

- ``A`` is int8, M×K, row-major. ``B`` is int8 and **K-major**: it is passed as the N×K matrix
  ``Bᵀ`` (the ``nn.Linear`` weight layout), so each B tile is contiguous along K. Hopper's
  ``wgmma`` takes 8-bit operands only with K-major shared-memory tiles; a weight is transposed
  once (:func:`pack_weight`), never per call.
- Accumulation is int32 (``tl.dot(..., out_dtype=tl.int32)``), exact for K < 2**17.
- The fused epilogue writes ``Y = float32(A·B) · s_row ⊗ s_col + bias`` in fp32, fp16 or bf16 (the
  dtype of ``out``) straight from the accumulator registers: no int32 round trip through memory.
- :func:`quantize_rows` is the activation side of ``Int8Linear`` on CUDA: symmetric per-row int8
  (``s = max|x| / 127``, ``q = round_half_away(x / s)``), one program per row.

Tile configurations (:data:`CONFIGS`) are autotuned per (M, N, K). Triton emits ``wgmma`` for int8
on Hopper only when the tile allows it (:func:`wgmma_eligible`: BLOCK_M a multiple of 64, warps a
multiple of 4, BLOCK_K ≥ 32); other tiles fall back to ``mma.sync`` silently, which is why small-M
tiles are in the list anyway (they win at M ≤ 64, where a 64-row tile wastes most of its work).
Every configuration is validated on its own (:func:`run_config`), not only the autotuner's pick.

With ``TRITON_INTERPRET=1`` set before triton is first imported, the kernels run on CPU tensors under
Triton's interpreter (exact for the integer part; the tests do this on small shapes, in a child process).
:func:`compile_for_target` compiles them ahead of time for a GPU architecture without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class TileConfig:
    """One tile configuration: block sizes, L2 grouping, warps and pipeline stages."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    @property
    def name(self) -> str:
        return (f"{self.block_m}x{self.block_n}x{self.block_k}"
                f"_w{self.num_warps}_s{self.num_stages}")

    def kwargs(self) -> dict[str, int]:
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k, "GROUP_M": self.group_m}

    def triton_config(self) -> "triton.Config":
        return triton.Config(self.kwargs(), num_warps=self.num_warps, num_stages=self.num_stages)

    def smem_bytes(self) -> int:
        """Shared memory the operand pipeline needs (1-byte elements, one A and one B tile per stage)."""
        return (self.block_m + self.block_n) * self.block_k * self.num_stages


def wgmma_eligible(cfg: TileConfig) -> bool:
    """Whether Triton can lower this tile's int8 ``tl.dot`` to Hopper ``wgmma``.

    Conditions (Triton's Hopper MMA-v3 path for 8-bit operands): a warpgroup of 4 warps owns
    at least 64 rows, so BLOCK_M % 64 == 0 and num_warps % 4 == 0; one wgmma consumes K=32
    for 8-bit types, so BLOCK_K ≥ 32; N per instruction is a multiple of 8. Otherwise the
    compiler emits ``mma.sync.m16n8k32`` without saying so.
    """
    return (cfg.block_m % 64 == 0 and cfg.num_warps % 4 == 0 and cfg.block_k >= 32
            and cfg.block_k % 32 == 0 and cfg.block_n % 8 == 0)


# Hopper-sized tiles first (wgmma), then small-M tiles for decode-like shapes (mma.sync).
CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 256, 128, 8, 8, 3),
    TileConfig(256, 128, 128, 8, 8, 3),
    TileConfig(128, 128, 128, 8, 8, 4),
    TileConfig(128, 128, 64, 8, 4, 4),
    TileConfig(64, 128, 128, 8, 4, 4),
    TileConfig(64, 64, 256, 8, 4, 4),
    TileConfig(64, 256, 128, 8, 4, 3),
    TileConfig(16, 64, 256, 1, 4, 4),
    TileConfig(16, 128, 128, 1, 4, 4),
    TileConfig(32, 64, 256, 1, 4, 4),
    TileConfig(32, 128, 128, 4, 4, 4),
)

# The interpreter cannot benchmark (no device), so it runs one configuration unless told otherwise.
INTERPRETER_DEFAULT = TileConfig(32, 32, 32, 1, 4, 1)


# M is not specialized (its value only feeds masks and the modulo): one compilation serves every M,
# where specializing on M == 1 and M % 16 would double the variants per configuration.
@triton.jit(do_not_specialize=["M"])
def _int8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, srow_ptr, scol_ptr, bias_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    FUSED: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped launch order: GROUP_M row blocks share the same column blocks while they are in L2.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows/columns past the edge wrap around (modulo) instead of being masked, so operand loads
    # stay unmasked and vectorized; the wrapped results are never stored.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_am = offs_m % M
    offs_bn = offs_n % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    # B is K-major (N×K in memory): the (BLOCK_K, BLOCK_N) tile is contiguous along K.
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if FUSED:
        s_row = tl.load(srow_ptr + offs_m, mask=offs_m < M, other=0.0)
        s_col = tl.load(scol_ptr + offs_n, mask=offs_n < N, other=0.0)
        y = acc.to(tl.float32) * s_row[:, None] * s_col[None, :]
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        tl.store(c_ptrs, y.to(c_ptr.dtype.element_ty), mask=c_mask)
    else:
        tl.store(c_ptrs, acc, mask=c_mask)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_K)
    mask = offs < K
    x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=0)
    # Correctly rounded divisions (div_rn), so the result matches numpy's bit for bit.
    scale = tl.math.div_rn(amax, 127.0)
    scale = tl.where(scale > 0.0, scale, 1.0)  # an all-zero row: q = 0, scale 1
    y = tl.math.div_rn(x, scale)
    q = tl.where(y >= 0.0, tl.floor(y + 0.5), tl.ceil(y - 0.5))  # round half away from zero
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)
    tl.store(q_ptr + row * stride_qm + offs, q.to(tl.int8), mask=mask)
    tl.store(s_ptr + row, scale)


_autotuned = triton.autotune(
    configs=[c.triton_config() for c in CONFIGS],
    key=["M", "N", "K", "FUSED", "HAS_BIAS", "EVEN_K"],
)(_int8_gemm_kernel)


def pack_weight(b: torch.Tensor) -> torch.Tensor:
    """``B`` (K×N int8) as the K-major operand the kernel reads: ``Bᵀ`` contiguous (N×K). Do it once per weight."""
    if b.dtype != torch.int8 or b.ndim != 2:
        raise TypeError(f"B must be a 2-D int8 tensor, got {b.dtype} {tuple(b.shape)}")
    return b.t().contiguous()


def _check(a: torch.Tensor, b_nk: torch.Tensor) -> tuple[int, int, int]:
    if a.dtype != torch.int8 or b_nk.dtype != torch.int8:
        raise TypeError(f"operands must be int8, got {a.dtype} and {b_nk.dtype}")
    if a.ndim != 2 or b_nk.ndim != 2 or a.shape[1] != b_nk.shape[1]:
        raise ValueError(f"A {tuple(a.shape)} and Bᵀ {tuple(b_nk.shape)} do not chain as (M,K)·(N,K)ᵀ")
    if a.device != b_nk.device:
        raise ValueError(f"A is on {a.device}, B on {b_nk.device}")
    m, k = a.shape
    n = b_nk.shape[0]
    if k >= 1 << 17:
        raise ValueError(f"K={k}: an exact int32 result needs K < 2**17")
    if 0 in (m, n, k):
        raise ValueError(f"empty problem {m}x{n}x{k}")
    return m, n, k


def _launch(a, b_nk, out, s_row, s_col, bias, fused: bool, config: TileConfig | None) -> Any:
    m, n, k = a.shape[0], b_nk.shape[0], a.shape[1]
    args = (a, b_nk, out, s_row, s_col, bias, m, n, k,
            a.stride(0), a.stride(1), b_nk.stride(0), b_nk.stride(1), out.stride(0), out.stride(1))
    if config is None and INTERPRETED:
        config = INTERPRETER_DEFAULT
    if config is None:
        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        # EVEN_K is part of the autotune key: the unmasked K loop needs K % BLOCK_K == 0 for every
        # config, so it is set only when K is a multiple of the largest BLOCK_K in the list.
        even_k = k % max(c.block_k for c in CONFIGS) == 0
        return _autotuned[grid](*args, FUSED=fused, HAS_BIAS=bias is not None, EVEN_K=even_k)
    grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
    return _int8_gemm_kernel[grid](*args, FUSED=fused, HAS_BIAS=bias is not None,
                                   EVEN_K=k % config.block_k == 0, num_warps=config.num_warps,
                                   num_stages=config.num_stages, **config.kwargs())


def int8_gemm(a: torch.Tensor, b_nk: torch.Tensor, *, out: torch.Tensor | None = None,
              config: TileConfig | None = None) -> torch.Tensor:
    """``C_int32 = A · B`` for ``a`` int8 (M×K) and ``b_nk = Bᵀ`` int8 (N×K, see :func:`pack_weight`).

    ``config`` runs one tile configuration; None lets the autotuner pick (on a GPU).
    """
    m, n, _ = _check(a, b_nk)
    if out is None:
        out = torch.empty((m, n), dtype=torch.int32, device=a.device)
    elif out.shape != (m, n) or out.dtype != torch.int32:
        raise ValueError(f"out must be int32 of shape {(m, n)}, got {out.dtype} {tuple(out.shape)}")
    _launch(a, b_nk, out, None, None, None, False, config)
    return out


def int8_gemm_fused(a: torch.Tensor, b_nk: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor,
                    bias: torch.Tensor | None = None, *, out_dtype: torch.dtype = torch.float16,
                    out: torch.Tensor | None = None, config: TileConfig | None = None) -> torch.Tensor:
    """``Y = float32(A·B) · s_row ⊗ s_col + bias``, written as ``out_dtype`` (fp32, fp16 or bf16).

    ``row_scale`` (M,), ``col_scale`` (N,) and ``bias`` (N,) are float32 on A's device.
    """
    m, n, _ = _check(a, b_nk)
    for name, v, size in (("row_scale", row_scale, m), ("col_scale", col_scale, n), ("bias", bias, n)):
        if v is not None and (v.shape != (size,) or v.dtype != torch.float32 or not v.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 vector of {size}, got {v.dtype} {tuple(v.shape)}")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    elif out.shape != (m, n) or out.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"out must be fp32/fp16/bf16 of shape {(m, n)}, got {out.dtype} {tuple(out.shape)}")
    _launch(a, b_nk, out, row_scale, col_scale, bias, True, config)
    return out


MAX_QUANT_K = 1 << 15


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``(q int8 M×K, scale float32 (M,))`` with ``x ≈ scale · q``."""
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must be M×K with K ≥ 1, got {tuple(x.shape)}")
    m, k = x.shape
    if k > MAX_QUANT_K:
        raise ValueError(f"K={k} is above the one-pass row quantizer's limit of {MAX_QUANT_K}")
    if x.stride(1) != 1:
        x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(k)
    _quantize_rows_kernel[(m,)](x, q, s, k, x.stride(0), q.stride(0), BLOCK_K=block,
                                num_warps=min(16, max(1, block // 512)))
    return q, s


def best_config(fused: bool, has_bias: bool = False) -> dict[str, Any] | None:
    """What the autotuner chose for each shape it has seen: {"M,N,K,...": config name}."""
    cache = getattr(_autotuned, "cache", {})
    if not cache:
        return None
    names = {c.triton_config().__str__(): c.name for c in CONFIGS}
    return {",".join(map(str, key)): names.get(str(cfg), str(cfg)) for key, cfg in cache.items()}


def compiled_ptx(handle: Any) -> str | None:
    """The PTX of a launch's compiled kernel (what ``kernel[grid](...)`` returned), or None (interpreter)."""
    asm = getattr(handle, "asm", None)
    if not asm:
        return None
    return asm.get("ptx")


def mma_kind(ptx: str | None) -> str:
    """Which tensor-core instruction a kernel's PTX uses: 'wgmma', 'mma.sync' or 'none'."""
    if ptx is None:
        return "unknown"
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if "mma.sync" in ptx:
        return "mma.sync"
    return "none"


def run_config(config: TileConfig, a: torch.Tensor, b_nk: torch.Tensor, out: torch.Tensor,
               row_scale: torch.Tensor | None = None, col_scale: torch.Tensor | None = None,
               bias: torch.Tensor | None = None) -> Any:
    """Launch one configuration explicitly (int32 out when ``row_scale`` is None, else fused); returns the handle."""
    _check(a, b_nk)
    return _launch(a, b_nk, out, row_scale, col_scale, bias, row_scale is not None, config)


def compile_for_target(config: TileConfig, *, fused: bool = False, out: str = "*i32", even_k: bool = True,
                       capability: tuple[int, int] = (9, 0)) -> Any:
    """Compile the GEMM kernel ahead of time for a GPU architecture, no GPU needed (Triton ships ptxas).

    Specialized as a launch on contiguous operands would be (unit strides as constants); ``out`` is the
    output pointer type ("*i32", "*fp32", "*fp16", "*bf16"). Returns Triton's CompiledKernel: its
    ``asm["ptx"]`` shows whether the tile compiled to ``wgmma`` (see :func:`mma_kind`).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature: dict[str, str] = {}
    constants: dict[str, Any] = {}
    for name in _int8_gemm_kernel.arg_names:
        if name in ("a_ptr", "b_ptr"):
            signature[name] = "*i8"
        elif name == "c_ptr":
            signature[name] = out
        elif name in ("srow_ptr", "scol_ptr", "bias_ptr"):
            signature[name] = "*fp32" if fused else "constexpr"
            if not fused:
                constants[name] = None
        elif name in ("stride_ak", "stride_bk", "stride_cn"):
            signature[name], constants[name] = "constexpr", 1
        elif name in ("M", "N", "K", "stride_am", "stride_bn", "stride_cm"):
            signature[name] = "i32"
        else:
            signature[name] = "constexpr"
    constants.update(FUSED=fused, HAS_BIAS=fused, EVEN_K=even_k, **config.kwargs())
    source = ASTSource(fn=_int8_gemm_kernel, signature=signature, constexprs=constants)
    return triton.compile(source, target=GPUTarget("cuda", capability[0] * 10 + capability[1], 32),
                          options={"num_warps": config.num_warps, "num_stages": config.num_stages})
