"""GPU benchmarks of the int8 GEMMs: ours (Triton, CUDA C) against cuBLASLt, fp16 GEMM and ``_int_mm`` + dequantize.

How it times, and why (docs/architecture.md's measurement rules, on a GPU):

- CUDA events around each call, after warm-up (autotuning and compilation happen in warm-up).
- Cold L2: before each timed call a buffer twice the L2's size is cleared (outside the event pair),
  and a ~50 µs GPU sleep is queued ahead of the start event so the host's launch latency is hidden
  (the events then bracket device work only).
- Calls under ~20 µs are timed as a CUDA graph of many calls over rotated operand sets whose total
  size exceeds twice the L2 (each call finds its operands cold), divided by the number of calls;
  launches through PyCUDA (legacy default stream) cannot be captured and keep the per-call path.
- Interleaved: every implementation runs once per round, in a fresh random order each round, so a
  slow phase of the card (clocks, temperature, a neighbour) hits everyone alike. The result per
  implementation is the median over rounds of each round's median.
- Each implementation's output on the first operand set is checked (exact for int32, the fused
  tolerance for fp16) before it is timed; a wrong answer is reported, not timed.
- The int8 ceiling is measured on the card: a Triton loop of ``tl.dot`` on operands held on chip
  (no global-memory traffic), the tensor-core counterpart of the CPU kernel's register-only loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

SHAPES = [  # (label, M, K, N)
    ("decode", 1, 4096, 4096),
    ("decode", 16, 4096, 4096),
    ("decode", 64, 4096, 4096),
    ("minilm", 512, 384, 1536),
    ("minilm", 512, 1536, 384),
    ("square", 4096, 4096, 4096),
    ("square", 8192, 8192, 8192),
]
QUICK_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[5]]
GRAPH_BELOW_US = 20.0


@dataclass
class Series:
    """One implementation on one shape."""

    name: str
    out: str  # "int32", "fp16", ...
    ours: bool
    round_medians_us: list[float] = field(default_factory=list)
    method: str = ""
    note: str = ""
    error: str = ""

    @property
    def median_us(self) -> float:
        return float(np.median(self.round_medians_us)) if self.round_medians_us else float("nan")


@dataclass
class Impl:
    """A benchmarked implementation: ``make(ops, i)`` returns a no-argument call on operand set ``i``."""

    name: str
    out: str
    ours: bool
    make: Callable[[Any, int], Callable[[], Any]]
    check: Callable[[Any, Any], str]  # (ops, result of call on set 0) -> '' or what is wrong
    capturable: bool = True
    note: str = ""
    supports: Callable[[int, int, int], str] = lambda m, k, n: ""


class Operands:
    """Rotated operand sets for one shape: int8 A (M×K), B (K×N) and Bᵀ (N×K), fp16 copies, scales, bias."""

    def __init__(self, m: int, k: int, n: int, device: Any, l2_bytes: int, gen: torch.Generator):
        self.m, self.k, self.n, self.device = m, k, n, device
        per_set = m * k + k * n + 4 * m * n  # what one int8 call touches
        self.sets = max(1, min(16, math.ceil(2 * l2_bytes / per_set)))
        ri = lambda *s: torch.randint(-128, 128, s, dtype=torch.int8, device=device, generator=gen)  # noqa: E731
        self.a = [ri(m, k) for _ in range(self.sets)]
        self.b = [ri(k, n) for _ in range(self.sets)]
        self.b_nk = [b.t().contiguous() for b in self.b]
        # fp16 copies scaled by 1/128 (exact in fp16) so that sums over K stay inside fp16's range
        self.a16 = [(a.float() / 128).half() for a in self.a]
        self.b16 = [(b.float() / 128).half() for b in self.b]
        self.s_row = torch.rand(m, device=device, generator=gen) * (1.0 / (128 * math.sqrt(k))) + 1e-6
        self.s_col = torch.rand(n, device=device, generator=gen) * (1.0 / (128 * math.sqrt(k))) + 1e-6
        self.bias = torch.randn(n, device=device, generator=gen)
        self._exact: torch.Tensor | None = None
        self.scratch: dict[tuple, torch.Tensor] = {}  # per-implementation buffers made from these operands

    def exact(self) -> torch.Tensor:
        """A·B on set 0, exactly (float64 sums of int8 products are exact below 2**53)."""
        if self._exact is None:
            self._exact = (self.a[0].double() @ self.b[0].double()).round().to(torch.int64)
        return self._exact

    def fused_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        acc = self.exact().double()
        scale = self.s_row.double()[:, None] * self.s_col.double()[None, :]
        return acc * scale + self.bias.double()[None, :], acc.abs() * scale.abs() + self.bias.double().abs()[None, :]


def _check_int32(ops: Operands, y: torch.Tensor) -> str:
    y = y[: ops.m]
    if y.dtype != torch.int32 or y.shape != (ops.m, ops.n):
        return f"got {y.dtype} {tuple(y.shape)}"
    bad = int((y.to(torch.int64) != ops.exact()).sum())
    return f"{bad} of {y.numel()} elements inexact" if bad else ""


def _check_fp16(ops: Operands, y: torch.Tensor) -> str:
    from costbench.kernels.gpu.validate import TOLERANCE

    ref, bound = ops.fused_reference()
    rtol, atol = TOLERANCE["float16"]
    err = (y.double() - ref).abs()
    if torch.isnan(y).any():
        return "NaN in the output"
    worst = float((err / (rtol * bound + atol)).max())
    return "" if worst <= 1.0 else f"error {worst:.2f}x the fp16 tolerance"


def _check_fp16_gemm(ops: Operands, y: torch.Tensor) -> str:
    exact = ops.exact().double() / 16384.0  # the fp16 operands are A/128 and B/128
    rel = float((y.double() - exact).norm() / exact.norm().clamp_min(1e-30))
    return "" if rel < 1e-2 else f"relative error {rel:.3g}"


def _int_mm_support(m: int, k: int, n: int) -> str:
    return "" if k % 8 == 0 and n % 8 == 0 else "_int_mm needs K and N multiples of 8"


def implementations(device: Any, cuda_c: Any = None) -> list[Impl]:
    """Ours (Triton int32 and fused fp16; CUDA C when ``cuda_c`` is given) and the peers."""
    from costbench.kernels.gpu import triton_gemm as tg

    impls: list[Impl] = []

    # Buffers derived from an operand set live on that Operands object (``ops.scratch``) and die with it. Keyed
    # by id(ops) in a dict here they outlived it, and the next shape's Operands, given the same id, got the
    # last shape's output buffer and padded A (the H200 check's M=16 and 4096³ rows failed that way).
    def out(tag: str, ops: Operands, i: int, dtype, rows: int | None = None) -> torch.Tensor:
        key = ("out", tag, i)
        if key not in ops.scratch:
            ops.scratch[key] = torch.empty((rows or ops.m, ops.n), dtype=dtype, device=device)
        return ops.scratch[key]

    impls.append(Impl("triton int8 (int32 out)", "int32", True,
                      lambda ops, i: (lambda: tg.int8_gemm(ops.a[i], ops.b_nk[i], out=out("ti", ops, i, torch.int32))),
                      _check_int32))
    impls.append(Impl("triton int8 fused (fp16 out)", "fp16", True,
                      lambda ops, i: (lambda: tg.int8_gemm_fused(ops.a[i], ops.b_nk[i], ops.s_row, ops.s_col, ops.bias,
                                                                 out=out("tf", ops, i, torch.float16))),
                      _check_fp16))
    if cuda_c is not None:
        from costbench.kernels.gpu.cuda_gemm import pack_weight

        def w(ops: Operands, i: int) -> torch.Tensor:
            if ("packed", i) not in ops.scratch:
                ops.scratch[("packed", i)] = pack_weight(ops.b[i])
            return ops.scratch[("packed", i)]

        graphable = cuda_c.launcher.name != "pycuda"
        note = "" if graphable else "PyCUDA launches on the legacy stream: per-call events, no graph"
        impls.append(Impl(f"cuda-c mma.sync int8 (int32 out, {cuda_c.launcher.name})", "int32", True,
                          lambda ops, i: (lambda: cuda_c.gemm(ops.a[i], w(ops, i), out=out("ci", ops, i, torch.int32))),
                          _check_int32, graphable, note))
        impls.append(Impl(f"cuda-c mma.sync int8 fused (fp16 out, {cuda_c.launcher.name})", "fp16", True,
                          lambda ops, i: (lambda: cuda_c.gemm_fused(ops.a[i], w(ops, i), ops.s_row, ops.s_col, ops.bias,
                                                                    out=out("cf", ops, i, torch.float16))),
                          _check_fp16, graphable, note))

    # cuBLASLt through torch._int_mm needs M > 16: smaller M is padded to 32 rows (what a caller would do).
    def a_mm(ops: Operands, i: int) -> torch.Tensor:
        if ops.m > 16:
            return ops.a[i]
        if ("padded", i) not in ops.scratch:
            buf = torch.zeros((32, ops.k), dtype=torch.int8, device=device)
            buf[: ops.m] = ops.a[i]
            ops.scratch[("padded", i)] = buf
        return ops.scratch[("padded", i)]

    # B goes in column-major (a transposed view of the N×K copy): cuBLASLt's int8 tensor-core kernels want
    # the "TN" layout, and a row-major B sends it to a far slower kernel, which would flatter ours.
    def int_mm(ops, i):
        return lambda: torch._int_mm(a_mm(ops, i), ops.b_nk[i].t(), out=out("mm", ops, i, torch.int32,
                                                                            a_mm(ops, i).shape[0]))

    def int_mm_dequant(ops, i):
        def run():
            acc = torch._int_mm(a_mm(ops, i), ops.b_nk[i].t())[: ops.m]
            return (acc.float() * ops.s_row[:, None] * ops.s_col[None, :] + ops.bias).half()
        return run

    impls.append(Impl("cuBLASLt torch._int_mm (int32 out)", "int32", False, int_mm, _check_int32,
                      note="M <= 16 padded to 32 rows; B column-major", supports=_int_mm_support))
    impls.append(Impl("torch._int_mm + separate dequantize (fp16 out)", "fp16", False, int_mm_dequant, _check_fp16,
                      note="eager: _int_mm, then float/mul/mul/add/half kernels", supports=_int_mm_support))
    impls.append(Impl("cuBLAS fp16 GEMM torch.mm (fp16 out)", "fp16", False,
                      lambda ops, i: (lambda: torch.mm(ops.a16[i], ops.b16[i], out=out("hm", ops, i, torch.float16))),
                      _check_fp16_gemm))
    return impls


class Timer:
    """CUDA-event timing with a cold L2 (flush per call) or as a graph of calls over rotated operands."""

    def __init__(self, device: Any):
        self.device = torch.device(device)
        props = torch.cuda.get_device_properties(self.device)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 << 20)
        self.flush = torch.empty(2 * self.l2_bytes, dtype=torch.uint8, device=self.device)
        self.sleep_cycles = int(50e-6 * self._clock_hz(props))

    @staticmethod
    def _clock_hz(props: Any) -> float:
        rate_khz = getattr(props, "clock_rate", 0) or 1_800_000
        return rate_khz * 1e3

    def per_call(self, fn: Callable[[], Any], reps: int) -> list[float]:
        """µs of each of ``reps`` calls, each after an L2 flush, events around the call only."""
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in pairs:
            self.flush.zero_()
            torch.cuda._sleep(self.sleep_cycles)  # the GPU is busy while the host queues start, call, end
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [s.elapsed_time(e) * 1e3 for s, e in pairs]

    def graph(self, fns: list[Callable[[], Any]], reps: int, calls: int = 200) -> list[float]:
        """µs per call: a CUDA graph of ``calls`` calls cycling through ``fns`` (rotated operand sets), replayed."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for f in fns:
                f()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        per = max(1, calls // len(fns))
        with torch.cuda.graph(graph):
            for _ in range(per):
                for f in fns:
                    f()
        n = per * len(fns)
        graph.replay()
        torch.cuda.synchronize(self.device)
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in pairs:
            torch.cuda._sleep(self.sleep_cycles)
            start.record()
            graph.replay()
            end.record()
        torch.cuda.synchronize(self.device)
        return [s.elapsed_time(e) * 1e3 / n for s, e in pairs]


def bench_shape(m: int, k: int, n: int, impls: list[Impl], timer: Timer, rounds: int, reps: int,
                gen: torch.Generator, rng: np.random.Generator) -> list[Series]:
    """Every implementation on one shape, checked, then timed in interleaved rounds."""
    ops = Operands(m, k, n, timer.device, timer.l2_bytes, gen)
    series: dict[str, Series] = {}
    calls: dict[str, tuple[list[Callable[[], Any]], bool]] = {}
    probes: dict[str, float] = {}  # µs of one cold call of each implementation that runs
    for impl in impls:
        s = Series(impl.name, impl.out, impl.ours, note=impl.note)
        series[impl.name] = s
        why = impl.supports(m, k, n)
        if why:
            s.error = why
            continue
        try:
            fns = [impl.make(ops, i) for i in range(ops.sets)]
            for _ in range(3):  # warm-up: autotuning, compilation, cuBLAS handles
                y = fns[0]()
            y = fns[0]()
            torch.cuda.synchronize(timer.device)
            y = y if isinstance(y, torch.Tensor) else None
            problem = impl.check(ops, y) if y is not None else "returned no tensor"
        except Exception as exc:
            s.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        if problem:
            s.error = f"wrong result, not timed: {problem}"
            continue
        probes[impl.name] = float(np.median(timer.per_call(fns[0], 5)))
        calls[impl.name] = (fns, impl.capturable)
    # One method per shape, so that every implementation that can be captured is timed the same way: a
    # shape is "small" (graphed) when its fastest implementation runs under GRAPH_BELOW_US. Deciding per
    # implementation once timed a slow first call of ours cold and per call, and cuBLASLt's warm in a graph.
    small = bool(probes) and min(probes.values()) < GRAPH_BELOW_US
    for name, (fns, capturable) in list(calls.items()):
        use_graph = capturable and small
        series[name].method = (f"CUDA graph of calls over {ops.sets} rotated operand sets" if use_graph
                               else "per-call CUDA events, L2 flushed before each call")
        calls[name] = (fns, use_graph)
    names = list(calls)
    for r in range(rounds):
        for idx in rng.permutation(len(names)):
            name = names[idx]
            fns, use_graph = calls[name]
            try:
                times = timer.graph(fns, reps) if use_graph else timer.per_call(fns[r % len(fns)], reps)
            except Exception as exc:  # e.g. a launch path that refuses capture
                series[name].error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                calls[name] = (fns, False)
                continue
            series[name].round_medians_us.append(float(np.median(times)))
    return list(series.values())


def int8_peak_tops(device: Any, seconds: float = 0.3) -> dict[str, Any]:
    """The card's int8 tensor-core ceiling: a Triton ``tl.dot`` loop on operands held on chip."""
    import triton

    props = torch.cuda.get_device_properties(device)
    bm, bn, bk = 128, 256, 128
    a = torch.randint(-128, 128, (bm, bk), dtype=torch.int8, device=device)
    b = torch.randint(-128, 128, (bn, bk), dtype=torch.int8, device=device)
    programs = props.multi_processor_count * 2
    out = torch.empty((programs, bm, bn), dtype=torch.int32, device=device)
    iters = 256
    kernel = _mma_loop_kernel()

    def run():
        return kernel[(programs,)](a, b, out, iters, BM=bm, BN=bn, BK=bk, num_warps=8, num_stages=1)

    handle = run()
    torch.cuda.synchronize(device)
    from costbench.kernels.gpu.triton_gemm import compiled_ptx, mma_kind

    timer_start, timer_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        timer_start.record()
        run()
        timer_end.record()
        torch.cuda.synchronize(device)
        ms = timer_start.elapsed_time(timer_end)
        best = max(best, 2.0 * bm * bn * bk * iters * programs / (ms * 1e-3) / 1e12)
    return {"tops": best, "method": f"Triton tl.dot loop, {bm}x{bn}x{bk} tile held on chip, {iters} iterations, "
                                     f"{programs} programs; best of repeated launches",
            "mma": mma_kind(compiled_ptx(handle)), "triton": triton.__version__}


_LOOP_KERNEL = None


def _mma_loop_kernel():
    global _LOOP_KERNEL
    if _LOOP_KERNEL is None:
        import triton
        import triton.language as tl

        @triton.jit
        def mma_loop(a_ptr, b_ptr, out_ptr, ITERS, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
            pid = tl.program_id(0)
            rm = tl.arange(0, BM)
            rn = tl.arange(0, BN)
            rk = tl.arange(0, BK)
            a = tl.load(a_ptr + rm[:, None] * BK + rk[None, :])
            b = tl.load(b_ptr + rk[:, None] + rn[None, :] * BK)  # K-major, as wgmma wants 8-bit B
            acc = tl.zeros((BM, BN), dtype=tl.int32)
            for _ in range(ITERS):
                acc = tl.dot(a, b, acc, out_dtype=tl.int32)
            tl.store(out_ptr + pid * BM * BN + rm[:, None] * BN + rn[None, :], acc)

        _LOOP_KERNEL = mma_loop
    return _LOOP_KERNEL


def triton_config_report(device: Any, m: int = 512, k: int = 1024, n: int = 512) -> list[dict[str, Any]]:
    """Per tile configuration: whether wgmma was predicted and whether the compiled PTX has it."""
    from costbench.kernels.gpu import triton_gemm as tg

    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=device)
    c = torch.empty((m, n), dtype=torch.int32, device=device)
    rows = []
    for cfg in tg.CONFIGS:
        try:
            handle = tg.run_config(cfg, a, w, c)
            kind = tg.mma_kind(tg.compiled_ptx(handle))
            meta = getattr(handle, "metadata", None)
            shared = getattr(meta, "shared", None)
            regs = getattr(handle, "n_regs", None)
            spills = getattr(handle, "n_spills", None)
            error = ""
        except Exception as exc:
            kind, shared, regs, spills, error = "error", None, None, None, f"{type(exc).__name__}: {exc}"[:200]
        rows.append({"config": cfg.name, "wgmma_predicted": tg.wgmma_eligible(cfg), "mma": kind,
                     "shared_bytes": shared, "registers": regs, "spills": spills, "error": error})
    return rows
