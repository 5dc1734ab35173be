"""The CUDA C int8 GEMM (``int8_mma_gemm.cu``, tensor-core ``mma.sync.m16n8k32`` s8·s8→s32): build and launch.

Building: ``nvcc -cubin`` for the device's architecture (``sm_90a`` on Hopper, through
``-gencode=arch=compute_90a,code=sm_90a``), cached by the hash of the source, the flags and the
nvcc version under ``$COSTBENCH_CACHE_DIR/kernels``. Where nvcc is missing and CuPy is installed,
CuPy's NVRTC compiles the same source.

Launching is a thin layer with two implementations of one interface (:class:`Launcher`):
PyCUDA (``module_from_buffer`` + ``prepared_call``, in the primary context that PyTorch uses,
on the legacy default stream) and CuPy (``RawModule`` + ``RawKernel``, on PyTorch's current
stream). Tensors are PyTorch CUDA tensors; only their device pointers cross to the launcher.

Operand rules the kernel relies on: A (M×K) and Bᵀ (N×K) rows start on 16-byte boundaries
(row pitch a multiple of 16, base pointers 16-byte aligned). :func:`pack_weight` pads Bᵀ once;
an activation that does not qualify is copied into a padded buffer per call.
"""

from __future__ import annotations

import abc
import atexit
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from costbench.kernels.gpu import probe
from costbench.kernels.gpu.probe import find_nvcc  # the lookup lives in probe (which imports nothing of ours)

SOURCE = Path(__file__).with_name("int8_mma_gemm.cu")
ALIGN = 16
STAGE_K = 64  # bytes of K per pipeline stage (kStageK in the source)


@dataclass(frozen=True)
class Tile:
    """A compiled tile variant of the kernel: CTA tile, threads, pipeline stages."""

    name: str
    block_m: int
    block_n: int
    threads: int
    stages: int = 4

    @property
    def smem_bytes(self) -> int:
        return self.stages * (self.block_m + self.block_n) * STAGE_K


TILES = {"128x128": Tile("128x128", 128, 128, 256), "64x64": Tile("64x64", 64, 64, 128)}
OUT_KINDS = ("i32", "f32", "f16", "bf16")


def kernel_name(out: str, tile: str) -> str:
    """The extern "C" entry point for an output kind and a tile."""
    return f"cb_int8_gemm_{out}_{tile}"


def kernel_names() -> list[str]:
    return [kernel_name(o, t) for o in OUT_KINDS for t in TILES]


# ------------------------------------------------------------------------------------------------ build


def find_cuobjdump(nvcc: str | None = None) -> str | None:
    """cuobjdump beside nvcc, on PATH, or the copy Triton's NVIDIA backend ships; None if absent."""
    candidates = []
    if nvcc:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump"))
        candidates.append(os.path.join(os.path.dirname(nvcc), "cuobjdump"))
    candidates.append(shutil.which("cuobjdump"))
    try:
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except Exception:  # triton is optional
        pass
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return match.group(2) if match else out.strip().splitlines()[-1]


def arch_flags(capability: tuple[int, int]) -> list[str]:
    """nvcc target flags for a compute capability: the arch-specific target (sm_90a) on Hopper.

    The ``-gencode`` form is used because ``-arch=sm_90a`` has been seen to also run a plain sm_90
    pass with some nvcc versions. The kernel needs sm_80+ (mma.m16n8k32 with s8 operands, cp.async).
    """
    major, minor = capability
    if (major, minor) < (8, 0):
        raise ValueError(f"compute capability {major}.{minor}: the int8 mma.m16n8k32 kernel needs 8.0 or newer")
    arch = f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")
    return [f"-gencode=arch=compute_{arch},code=sm_{arch}"]


BASE_FLAGS = ("-O3", "-std=c++17", "-lineinfo", "-Xptxas=-v", "-Werror=all-warnings")


def default_cache_dir() -> Path:
    from costbench.core.artifacts import default_cache_dir as root

    return root() / "kernels"


@dataclass
class BuildResult:
    """A compiled cubin or PTX and what the compiler said about it."""

    path: Path
    kind: str  # "cubin" or "ptx"
    command: list[str]
    nvcc: str
    nvcc_version: str
    resources: dict[str, dict[str, int]]  # per kernel: registers, spill bytes, stack, shared
    cached: bool


def parse_ptxas_report(text: str) -> dict[str, dict[str, int]]:
    """Registers, spills, stack and shared memory per entry function from ``-Xptxas -v`` output."""
    report: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            current = m.group(1)
            report.setdefault(current, {})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            report[current].update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                                   spill_load_bytes=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            report[current]["registers"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            report[current]["static_smem_bytes"] = int(m.group(1))
    return report


def build(kind: str = "cubin", capability: tuple[int, int] = (9, 0), *, nvcc: str | None = None,
          cache_dir: Path | None = None, extra_flags: Sequence[str] = ()) -> BuildResult:
    """Compile :data:`SOURCE` to a cubin (``kind='cubin'``) or PTX (``'ptx'``) for ``capability``.

    Raises FileNotFoundError when there is no nvcc, RuntimeError with nvcc's output when it fails.
    """
    if kind not in ("cubin", "ptx"):
        raise ValueError(f"kind must be 'cubin' or 'ptx', got {kind!r}")
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH; it ships with the CUDA toolkit)")
    version = nvcc_version(nvcc)
    flags = [*BASE_FLAGS, *arch_flags(capability), *extra_flags]
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode(), kind.encode()])).hexdigest()[:20]
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"int8_mma_gemm-{key}.{kind}"
    report_file = out.with_suffix(out.suffix + ".ptxas.txt")
    command = [nvcc, f"-{kind}", *flags, "-o", str(out), str(SOURCE)]
    if out.exists() and report_file.exists():
        return BuildResult(out, kind, command, nvcc, version, parse_ptxas_report(report_file.read_text()), True)
    with tempfile.TemporaryDirectory(prefix="costbench-nvcc-", dir=root) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [nvcc, f"-{kind}", *flags, "-o", str(tmp_out), str(SOURCE)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        report_text = proc.stdout + proc.stderr
        (Path(tmp) / report_file.name).write_text(report_text)
        os.replace(Path(tmp) / report_file.name, report_file)
        os.replace(tmp_out, out)
    return BuildResult(out, kind, command, nvcc, version, parse_ptxas_report(report_text), False)


def sass(cubin: Path, cuobjdump: str | None = None) -> str:
    """The SASS of a cubin (``cuobjdump -sass``)."""
    tool = cuobjdump or find_cuobjdump()
    if tool is None:
        raise FileNotFoundError("cuobjdump not found (it ships with the CUDA toolkit, and inside Triton's wheel)")
    return subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout


def count_instructions(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


# ------------------------------------------------------------------------------------------------ launch


class Launcher(abc.ABC):
    """Loads a cubin and launches its kernels on device pointers; one implementation per CUDA binding.

    A context manager: ``with make_launcher(...) as launcher:`` releases it however the block ends.
    :meth:`close` is idempotent (later calls do nothing) and runs :meth:`_release` once.
    """

    name: str
    _closed: bool = False

    @abc.abstractmethod
    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int], smem: int,
               args: Sequence[tuple[str, Any]]) -> None:
        """Launch ``kernel``; ``args`` are (kind, value) with kind 'ptr' (int address) or 'i32'."""

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the module and any context this launcher pushed; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """What :meth:`close` releases, once (nothing by default)."""

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# PyCUDA launchers not yet closed. PyCUDA aborts the process (SIGABRT, exit 134) at interpreter exit when
# its context stack is not empty ("PyCUDA ERROR: The context stack was not empty upon module cleanup"), so
# a launcher that was never closed is closed here, before that cleanup. The owners close them first
# (``with`` blocks); this only keeps a forgotten one from turning a finished run into a crash.
_OPEN_PYCUDA: "weakref.WeakSet[PyCudaLauncher]" = weakref.WeakSet()


@atexit.register
def _close_open_pycuda_launchers() -> None:
    for launcher in list(_OPEN_PYCUDA):
        try:
            launcher.close()
        except Exception as exc:  # at exit: say so, do not mask the process's own status
            print(f"costbench: closing a PyCUDA launcher at exit failed: {exc!r}", file=sys.stderr)


class PyCudaLauncher(Launcher):
    """PyCUDA: the cubin through ``driver.module_from_buffer``, launches through ``prepared_call``.

    Runs in the device's primary context (the one PyTorch's runtime uses), pushed once, so the
    PyTorch pointers are valid here; launches go to the legacy default stream, which orders with
    PyTorch's default stream.
    """

    name = "pycuda"

    def __init__(self, cubin: bytes, device_index: int = 0):
        import pycuda.driver as drv

        drv.init()
        self._drv = drv
        self._functions: dict[str, Any] = {}
        self._smem_set: dict[str, int] = {}
        self._module = None
        self._ctx = drv.Device(device_index).retain_primary_context()  # retained, not yet pushed
        self._ctx.push()
        try:
            self._module = drv.module_from_buffer(cubin)
        except BaseException:
            self.close()  # pop what was pushed: a failed load must not leave PyCUDA's stack non-empty
            raise
        _OPEN_PYCUDA.add(self)

    def _function(self, kernel: str, kinds: Sequence[str]) -> Any:
        fn = self._functions.get(kernel)
        if fn is None:
            fn = self._module.get_function(kernel)
            fn.prepare("".join("P" if k == "ptr" else "i" for k in kinds))
            self._functions[kernel] = fn
        return fn

    def launch(self, kernel, grid, block, smem, args):
        fn = self._function(kernel, [k for k, _ in args])
        if smem > 48 * 1024 and self._smem_set.get(kernel) != smem:
            fn.set_attribute(self._drv.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
            self._smem_set[kernel] = smem
        fn.prepared_call(grid, block, *[int(v) for _, v in args], shared_size=smem)

    def _release(self) -> None:
        """Pop the context pushed in ``__init__``, then release the retained primary context.

        PyCUDA's ``Context.pop()`` is static: it pops the top of this thread's context stack, which is
        ours (launches never push). The module is dropped first, while its context is still current.
        ``detach()`` on the (no longer current) primary context pushes it on the driver's stack and calls
        ``cuDevicePrimaryCtxRelease``, which does not pop: the primary context stays current on the driver's
        stack (as PyTorch's runtime had it), PyCUDA's own stack is empty, and PyTorch's retain keeps the
        context alive for PyTorch.
        """
        _OPEN_PYCUDA.discard(self)
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            self._functions.clear()
            self._module = None
            self._drv.Context.synchronize()  # launches still queued finish while their module exists
        finally:
            try:
                ctx.pop()
            finally:
                ctx.detach()


class CupyLauncher(Launcher):
    """CuPy: ``RawModule`` from the cubin (or NVRTC from the source), launches on PyTorch's current stream."""

    name = "cupy"

    def __init__(self, cubin_path: Path | None = None, device_index: int = 0,
                 nvrtc_options: Sequence[str] | None = None):
        import cupy

        self._cupy = cupy
        self._device = cupy.cuda.Device(device_index)
        with self._device:
            if cubin_path is not None:
                self._module = cupy.RawModule(path=str(cubin_path))
            else:  # no nvcc: NVRTC compiles the same source
                self._module = cupy.RawModule(code=SOURCE.read_text(), options=tuple(nvrtc_options or ()),
                                              backend="nvrtc")
        self._functions: dict[str, Any] = {}

    def launch(self, kernel, grid, block, smem, args):
        import numpy as np
        import torch

        cupy = self._cupy
        packed = tuple(np.uint64(v) if k == "ptr" else np.int32(v) for k, v in args)
        # RawModule loads (or NVRTC-compiles) lazily, per device, on the device current at
        # get_function / attribute time: do both under self._device so the launch finds them.
        with self._device, cupy.cuda.ExternalStream(torch.cuda.current_stream(self._device.id).cuda_stream):
            fn = self._functions.get(kernel)
            if fn is None:
                fn = self._module.get_function(kernel)
                if smem > 48 * 1024:
                    fn.max_dynamic_shared_size_bytes = smem
                self._functions[kernel] = fn
            fn(grid, block, packed, shared_mem=smem)  # on the current (PyTorch's) stream


def available_launchers() -> dict[str, str | None]:
    """{'pycuda': None or why not, 'cupy': None or why not}: importability only (no device needed)."""
    return {"pycuda": probe.pycuda_reason(), "cupy": probe.cupy_reason()}


def make_launcher(which: str = "auto", *, device_index: int = 0, build_result: BuildResult | None = None,
                  capability: tuple[int, int] | None = None) -> Launcher:
    """A launcher for the compiled kernel: 'pycuda', 'cupy', or 'auto' (PyCUDA when installed, else CuPy)."""
    reasons = available_launchers()
    if which == "auto":
        which = "pycuda" if reasons["pycuda"] is None else "cupy"
    if which not in reasons:
        raise ValueError(f"unknown launcher {which!r}; known: pycuda, cupy")
    if reasons[which] is not None:
        raise RuntimeError(f"the {which} launcher is unavailable: {reasons[which]}")
    if build_result is None:
        nvcc = find_nvcc()
        if nvcc is None and which == "cupy":
            # No -arch here: CuPy appends its own (-arch=sm_XY of the current device) to NVRTC's
            # options, and a second one makes NVRTC fail (NVRTC_ERROR_INVALID_OPTION). The
            # kernel needs only sm_80 features, so CuPy's plain sm_90 target on Hopper suffices.
            return CupyLauncher(None, device_index, ("-std=c++17",))
        if nvcc is None:
            raise RuntimeError(probe.nvcc_reason() or "nvcc not found")
        build_result = build("cubin", capability or (9, 0), nvcc=nvcc)
    if which == "pycuda":
        return PyCudaLauncher(build_result.path.read_bytes(), device_index)
    return CupyLauncher(build_result.path, device_index)


# ------------------------------------------------------------------------------------------------ GEMM


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def pack_weight(b: Any) -> Any:
    """``B`` (K×N int8, torch) as the kernel's operand: ``Bᵀ`` (N×K) with rows padded to 16 bytes (zeros)."""
    import torch

    if b.dtype != torch.int8 or b.ndim != 2:
        raise TypeError(f"B must be a 2-D int8 tensor, got {b.dtype} {tuple(b.shape)}")
    k, n = b.shape
    out = torch.zeros((n, _round_up(k, ALIGN)), dtype=torch.int8, device=b.device)
    out[:, :k] = b.t()
    return out[:, :k]  # a view: shape (N, K), row pitch round_up(K, 16)


def _aligned_operand(a: Any) -> Any:
    """``a`` itself when its rows are 16-byte aligned, else a padded copy (a view of shape M×K)."""
    import torch

    if a.stride(1) == 1 and a.stride(0) % ALIGN == 0 and a.data_ptr() % ALIGN == 0:
        return a
    m, k = a.shape
    buf = torch.zeros((m, _round_up(k, ALIGN)), dtype=torch.int8, device=a.device)
    buf[:, :k] = a
    return buf[:, :k]


class CudaInt8Gemm:
    """The CUDA C kernel behind a launcher: ``gemm`` (int32 out) and ``gemm_fused`` (fp32/fp16/bf16 out).

    Use it as a context manager (``with CudaInt8Gemm("pycuda") as engine:``) or close it in a ``finally``:
    the PyCUDA launcher pushes a CUDA context, and PyCUDA aborts the process at exit if it is still pushed.
    ``close()`` is idempotent. A launcher passed in is closed with the engine (the engine owns it).
    """

    def __init__(self, launcher: str | Launcher = "auto", device_index: int = 0):
        import torch

        self.device = torch.device("cuda", device_index)
        torch.cuda.init()
        with torch.cuda.device(self.device):
            torch.cuda.current_device()  # the primary context is current before PyCUDA pushes it
            props = torch.cuda.get_device_properties(self.device)
        self.capability = (props.major, props.minor)
        self.sm_count = props.multi_processor_count
        self.build = None
        if isinstance(launcher, Launcher):
            self.launcher = launcher
        else:
            nvcc = find_nvcc()
            if nvcc is not None:
                self.build = build("cubin", self.capability, nvcc=nvcc)
            self.launcher = make_launcher(launcher, device_index=device_index, build_result=self.build,
                                          capability=self.capability)

    def pick_tile(self, m: int, n: int) -> Tile:
        """The large tile unless it leaves most multiprocessors idle (small M or N), then the small one."""
        large = TILES["128x128"]
        blocks = -(-m // large.block_m) * -(-n // large.block_n)
        return large if m > 64 and blocks >= self.sm_count else TILES["64x64"]

    def _check(self, a: Any, b_nk: Any) -> tuple[int, int, int]:
        import torch

        if a.dtype != torch.int8 or b_nk.dtype != torch.int8:
            raise TypeError(f"operands must be int8, got {a.dtype} and {b_nk.dtype}")
        if a.ndim != 2 or b_nk.ndim != 2 or a.shape[1] != b_nk.shape[1]:
            raise ValueError(f"A {tuple(a.shape)} and Bᵀ {tuple(b_nk.shape)} do not chain as (M,K)·(N,K)ᵀ")
        if a.device != self.device or b_nk.device != self.device:
            raise ValueError(f"operands must be on {self.device}")
        if b_nk.stride(1) != 1 or b_nk.stride(0) % ALIGN or b_nk.data_ptr() % ALIGN:
            raise ValueError("Bᵀ rows must be 16-byte aligned: build it with cuda_gemm.pack_weight")
        m, k = a.shape
        if k >= 1 << 17:
            raise ValueError(f"K={k}: an exact int32 result needs K < 2**17")
        return m, b_nk.shape[0], k

    def _run(self, out_kind: str, a, b_nk, out, s_row, s_col, bias, tile: str | None) -> None:
        m, n, k = out.shape[0], out.shape[1], a.shape[1]
        t = TILES[tile] if tile else self.pick_tile(m, n)
        a = _aligned_operand(a)
        grid = (-(-n // t.block_n), -(-m // t.block_m), 1)
        args: list[tuple[str, Any]] = [("ptr", a.data_ptr()), ("ptr", b_nk.data_ptr()), ("ptr", out.data_ptr())]
        if out_kind != "i32":
            args += [("ptr", s_row.data_ptr()), ("ptr", s_col.data_ptr()),
                     ("ptr", 0 if bias is None else bias.data_ptr())]
        args += [("i32", m), ("i32", n), ("i32", k), ("i32", a.stride(0)), ("i32", b_nk.stride(0)),
                 ("i32", out.stride(0))]
        self.launcher.launch(kernel_name(out_kind, t.name), grid, (t.threads, 1, 1), t.smem_bytes, args)

    def gemm(self, a: Any, b_nk: Any, *, out: Any = None, tile: str | None = None) -> Any:
        """``C_int32 = A · B`` for ``a`` int8 (M×K) and ``b_nk`` from :func:`pack_weight`."""
        import torch

        m, n, _ = self._check(a, b_nk)
        if out is None:
            out = torch.empty((m, n), dtype=torch.int32, device=self.device)
        if out.shape != (m, n) or out.dtype != torch.int32 or out.stride(1) != 1:
            raise ValueError(f"out must be a row-major int32 ({m}, {n}) tensor")
        self._run("i32", a, b_nk, out, None, None, None, tile)
        return out

    def gemm_fused(self, a: Any, b_nk: Any, row_scale: Any, col_scale: Any, bias: Any = None, *,
                   out_dtype: Any = None, out: Any = None, tile: str | None = None) -> Any:
        """``Y = float32(A·B) · s_row ⊗ s_col + bias`` as fp32, fp16 or bf16 (scales and bias float32)."""
        import torch

        m, n, _ = self._check(a, b_nk)
        kinds = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
        if out is None:
            out = torch.empty((m, n), dtype=out_dtype or torch.float16, device=self.device)
        if out.shape != (m, n) or out.dtype not in kinds or out.stride(1) != 1:
            raise ValueError(f"out must be a row-major fp32/fp16/bf16 ({m}, {n}) tensor")
        for name, v, size in (("row_scale", row_scale, m), ("col_scale", col_scale, n), ("bias", bias, n)):
            if v is not None and (v.shape != (size,) or v.dtype != torch.float32 or not v.is_contiguous()
                                  or v.device != self.device):
                raise ValueError(f"{name} must be a contiguous float32 vector of {size} on {self.device}")
        self._run(kinds[out.dtype], a, b_nk, out, row_scale, col_scale, bias, tile)
        return out

    def info(self) -> dict[str, Any]:
        return {"launcher": self.launcher.name, "capability": ".".join(map(str, self.capability)),
                "cubin": str(self.build.path) if self.build else "NVRTC (CuPy)",
                "nvcc": self.build.nvcc_version if self.build else None,
                "resources": self.build.resources if self.build else None}

    def close(self) -> None:
        """Close the launcher (pops PyCUDA's context); a second call does nothing."""
        launcher = getattr(self, "launcher", None)
        if launcher is not None:
            launcher.close()

    def __enter__(self) -> "CudaInt8Gemm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
