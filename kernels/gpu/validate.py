"""Validation of the GPU int8 GEMMs: exact int32 on the full range, and the fused form against fp64.

The same cases as the CPU kernel (:func:`costbench.kernels.validate.make_cases`: fresh random
full-range operands, then the four extremes ±128/127 products) on shapes that fit no tile, with
every output poisoned before the run (int32: 0xDEADBEEF; float: NaN), so an element a kernel
never writes cannot pass. Each implementation is one :class:`Impl`; every Triton tile
configuration is its own Impl, so a configuration the autotuner never picks is still checked.

Fused-form tolerance, per element, against ``ref = (A·B)_exact · s_row · s_col + bias`` in fp64:
``|y − ref| ≤ rtol · (|A·B| · |s_row · s_col| + |bias|) + atol`` with

- fp32 out: rtol 2⁻²¹ (int32→fp32, two products and an add, each ≤ ½ ulp: 4u with u = 2⁻²⁴), atol 0;
- fp16 out: rtol 2⁻¹⁰ (the final rounding to fp16, u = 2⁻¹¹, dominates), atol 2⁻²⁴ (fp16 subnormal step);
- bf16 out: rtol 2⁻⁷ (u = 2⁻⁸), atol 2⁻¹³³ (bf16 subnormal step).

Scales are drawn so that outputs stay inside fp16's range.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from costbench.kernels.reference import int8_gemm_reference

# (M, K, N), as in costbench.kernels.validate: sizes that are not multiples of any tile, K below,
# at and above one pipeline stage, and MiniLM's layer shapes.
SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 1000), (33, 1000, 7), (1000, 33, 7), (17, 65, 129), (1, 384, 1536),
          (64, 1536, 384), (129, 127, 31), (100, 3, 17), (255, 300, 257), (512, 4096, 512)]
# For checking every Triton configuration on the GPU: two specialization classes only (K and N not
# multiples of 16; K a multiple of 256 and N of 16), so each configuration compiles twice per output type.
CONFIG_SHAPES = [(1, 7, 33), (33, 1000, 7), (17, 65, 129), (129, 127, 31), (255, 300, 257), (64, 1536, 384),
                 (1, 512, 256), (512, 4096, 512)]
INTERPRETER_SHAPES = [(1, 1, 1), (1, 7, 33), (7, 33, 70), (33, 70, 7), (17, 65, 129), (1, 100, 3)]
POISON_I32 = np.int32(-0x21524111)  # 0xDEADBEEF
TOLERANCE = {"float32": (2.0**-21, 0.0), "float16": (2.0**-10, 2.0**-24), "bfloat16": (2.0**-7, 2.0**-133)}


class Impl(abc.ABC):
    """One GPU int8 GEMM to validate. ``b`` is K×N int8; ``prepare`` makes its device operand once."""

    name: str
    fused_dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")

    def supports(self, m: int, k: int, n: int) -> str | None:
        """None when this shape can run, else why not (recorded, not failed)."""
        return None

    @abc.abstractmethod
    def prepare(self, b: Any) -> Any: ...

    @abc.abstractmethod
    def int32(self, a: Any, w: Any, out: Any) -> None: ...

    def fused(self, a: Any, w: Any, s_row: Any, s_col: Any, bias: Any, out: Any) -> None:
        raise NotImplementedError(f"{self.name} has no fused form")


class TritonImpl(Impl):
    """The Triton kernel with one tile configuration (or the autotuner's pick when ``config`` is None)."""

    def __init__(self, module: Any, config: Any = None):
        self.module = module  # costbench.kernels.gpu.triton_gemm, or an interpreted copy of it
        self.config = config
        self.name = f"triton {config.name}" if config is not None else "triton autotuned"
        self.handles: list[Any] = []

    def prepare(self, b):
        return self.module.pack_weight(b)

    def int32(self, a, w, out):
        if self.config is None:
            self.module.int8_gemm(a, w, out=out)
        else:
            self.handles.append(self.module.run_config(self.config, a, w, out))

    def fused(self, a, w, s_row, s_col, bias, out):
        if self.config is None:
            self.module.int8_gemm_fused(a, w, s_row, s_col, bias, out=out)
        else:
            self.handles.append(self.module.run_config(self.config, a, w, out, s_row, s_col, bias))


class CudaCImpl(Impl):
    """The CUDA C kernel through its launcher, one tile variant (or the size-based pick when None)."""

    def __init__(self, engine: Any, tile: str | None = None):
        self.engine = engine  # costbench.kernels.gpu.cuda_gemm.CudaInt8Gemm
        self.tile = tile
        self.name = f"cuda-c {engine.launcher.name} {tile or 'auto'}"

    def prepare(self, b):
        from costbench.kernels.gpu.cuda_gemm import pack_weight

        return pack_weight(b)

    def int32(self, a, w, out):
        self.engine.gemm(a, w, out=out, tile=self.tile)

    def fused(self, a, w, s_row, s_col, bias, out):
        self.engine.gemm_fused(a, w, s_row, s_col, bias, out=out, tile=self.tile)


class TorchIntMMImpl(Impl):
    """``torch._int_mm`` on CUDA (cuBLASLt), the vendor reference; it has no fused form."""

    name = "torch._int_mm (cuBLASLt)"
    fused_dtypes = ()

    def supports(self, m, k, n):
        # cuBLASLt's int8 path as torch exposes it: M > 16, K and N multiples of 8.
        if m <= 16 or k % 8 or n % 8:
            return f"_int_mm needs M > 16 and K, N multiples of 8 (got {m}x{k}x{n})"
        return None

    def prepare(self, b):
        return b.contiguous()

    def int32(self, a, w, out):
        import torch

        torch._int_mm(a, w, out=out)


@dataclass
class Result:
    """One implementation over all cases of one kind ('int32' or 'fused <dtype>')."""

    impl: str
    kind: str
    cases: int = 0
    failures: int = 0
    worst: float = 0.0  # int32: largest |error|; fused: largest error / allowed error
    worst_case: str = ""
    unsupported: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failures == 0 and not self.errors

    def add(self, label: str, value: float, failed: bool) -> None:
        self.cases += 1
        self.failures += int(failed)
        if not self.worst_case or value > self.worst:
            self.worst, self.worst_case = value, label

    def as_dict(self) -> dict[str, Any]:
        return {"impl": self.impl, "kind": self.kind, "cases": self.cases, "failures": self.failures,
                "worst": self.worst, "worst_case": self.worst_case, "unsupported": self.unsupported,
                "errors": self.errors, "ok": self.ok}


def exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A·B`` exactly, as int64, through float64 BLAS: every int8 product (≤ 2¹⁴) and every partial sum
    (≤ 2¹⁴·K < 2³¹ for K < 2¹⁷) is an integer float64 holds exactly, in any summation order.

    Equal to :func:`costbench.kernels.reference.int8_gemm_reference` (numpy int64, checked in the tests),
    and orders of magnitude faster at K in the thousands.
    """
    if a.shape[1] >= 1 << 17:
        return int8_gemm_reference(a, b).astype(np.int64)
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def fused_reference(a: np.ndarray, b: np.ndarray, s_row: np.ndarray, s_col: np.ndarray,
                    bias: np.ndarray | None, exact: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fp64 reference, fp64 magnitude bound |A·B|·|s_row·s_col| + |bias|) of the fused form."""
    acc = (exact if exact is not None else exact_product(a, b)).astype(np.float64)
    scale = s_row.astype(np.float64)[:, None] * s_col.astype(np.float64)[None, :]
    ref = acc * scale
    bound = np.abs(acc) * np.abs(scale)
    if bias is not None:
        ref = ref + bias.astype(np.float64)[None, :]
        bound = bound + np.abs(bias.astype(np.float64))[None, :]
    return ref, bound


def fused_error_ratio(y: np.ndarray, ref: np.ndarray, bound: np.ndarray, dtype: str) -> float:
    """Largest |y − ref| / allowed over the elements (inf if any NaN, i.e. unwritten or invalid)."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return 0.0
    if np.isnan(y).any():
        return float("inf")
    rtol, atol = TOLERANCE[dtype]
    allowed = rtol * bound + atol
    return float(np.max(np.abs(y - ref) / np.where(allowed > 0, allowed, np.inf)))


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _attempt(result: Result, label: str, run: Callable[[], float], failed: Callable[[float], bool]) -> None:
    """Run one check; an exception counts as a failed case with its message."""
    try:
        value = run()
    except Exception as exc:
        result.errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        result.cases += 1
        result.failures += 1
        return
    result.add(label, value, failed(value))


def validate(impls: Sequence[Impl], device: Any, shapes: Sequence[tuple[int, int, int]] = SHAPES,
             seed: int | None = None, log: Callable[[str], None] | None = None,
             kinds: Sequence[str] | None = None) -> list[Result]:
    """Every implementation on every case: int32 exactness, then each fused output type it has.

    Cases are drawn once (fresh unless ``seed``), their exact product computed once, and every
    implementation runs on the same operands. ``kinds`` limits the checks ('int32', 'fused float16', ...).
    """
    import torch

    from costbench.kernels.validate import make_cases

    rng = np.random.default_rng(seed)
    results: dict[tuple[str, str], Result] = {}
    for impl in impls:
        for kind in ["int32", *(f"fused {d}" for d in impl.fused_dtypes)]:
            if kinds is None or kind in kinds:
                results[(impl.name, kind)] = Result(impl.name, kind)
    for case in make_cases(rng, shapes, "s8"):
        (m, k), n = case.a.shape, case.b.shape[1]
        exact = exact_product(case.a, case.b)
        a = torch.from_numpy(case.a).to(device)
        b = torch.from_numpy(case.b).to(device)
        # scales keep |y| inside fp16's range (|A·B| ≤ 16384·K); bias present three times in four
        span = 1.0 / (128.0 * np.sqrt(max(k, 1)))
        s_row = rng.uniform(0.1, 1.0, m).astype(np.float32) * np.float32(span)
        s_col = rng.uniform(0.1, 1.0, n).astype(np.float32) * np.float32(span)
        bias = rng.normal(size=n).astype(np.float32) if rng.random() < 0.75 else None
        ref, bound = fused_reference(case.a, case.b, s_row, s_col, bias, exact)
        sr, sc = torch.from_numpy(s_row).to(device), torch.from_numpy(s_col).to(device)
        bias_t = None if bias is None else torch.from_numpy(bias).to(device)
        for impl in impls:
            why = impl.supports(m, k, n)
            todo = [r for (name, _), r in results.items() if name == impl.name]
            if why:
                for r in todo:
                    if why not in r.unsupported:
                        r.unsupported.append(why)
                continue
            w = impl.prepare(b)
            for r in todo:
                if r.kind == "int32":
                    def run_int32(impl=impl, w=w) -> float:
                        out = torch.full((m, n), int(POISON_I32), dtype=torch.int32, device=device)
                        impl.int32(a, w, out)
                        _sync(device)
                        got = out.cpu().numpy().astype(np.int64)
                        return float(np.abs(got - exact).max()) if got.size else 0.0

                    _attempt(r, case.label, run_int32, lambda err: err != 0)
                else:
                    dtype = r.kind.split()[1]

                    def run_fused(impl=impl, w=w, dtype=dtype) -> float:
                        out = torch.full((m, n), float("nan"), dtype=getattr(torch, dtype), device=device)
                        impl.fused(a, w, sr, sc, bias_t, out)
                        _sync(device)
                        return fused_error_ratio(out.float().cpu().numpy(), ref, bound, dtype)

                    _attempt(r, case.label + ("" if bias is not None else " no-bias"), run_fused,
                             lambda ratio: not ratio <= 1.0)
    out = list(results.values())
    if log:
        for r in out:
            log(f"{r.impl:<40} {r.kind:<15} {'ok' if r.ok else 'FAIL'}  cases={r.cases} worst={r.worst:.3g}"
                + (f"  errors: {r.errors[:2]}" if r.errors else ""))
    return out


def quantize_rows_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of ``triton_gemm.quantize_rows`` (fp32 arithmetic, correctly rounded divisions)."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.abs(x).max(axis=1)
    scale = (amax / np.float32(127.0)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    y = (x / scale[:, None]).astype(np.float32)
    q = np.where(y >= 0, np.floor(y + np.float32(0.5)), np.ceil(y - np.float32(0.5)))
    return np.clip(q, -127, 127).astype(np.int8), scale
