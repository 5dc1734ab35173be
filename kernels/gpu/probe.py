"""What the NVIDIA path needs, and exactly what is missing: each function returns None when the piece is
usable here, else the reason with what to install. None of them raises, and none needs a GPU to answer.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from typing import Any


def _import(name: str) -> tuple[Any | None, str | None]:
    """(module, None) or (None, why) for an optional package; 'is not installed' vs 'failed to import (...)'."""
    if importlib.util.find_spec(name.split(".")[0]) is None:
        return None, "is not installed"
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # a broken native library: ImportError, OSError, RuntimeError...
        return None, f"failed to import ({type(exc).__name__}: {exc})"


def torch_cuda_reason(device_index: int = 0) -> str | None:
    """None when torch is a CUDA build and sees GPU ``device_index``."""
    torch, why = _import("torch")
    if torch is None:
        return f"torch {why}: pip install torch"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    try:
        if not torch.cuda.is_available():
            return "no CUDA device is visible (torch.cuda.is_available() is False)"
        if device_index >= torch.cuda.device_count():
            return f"cuda:{device_index}: only {torch.cuda.device_count()} CUDA device(s) visible"
    except Exception as exc:
        return f"CUDA initialisation failed ({type(exc).__name__}: {exc})"
    return None


def capability(device_index: int = 0) -> tuple[int, int] | None:
    """The GPU's compute capability, or None without a usable CUDA device."""
    if torch_cuda_reason(device_index) is not None:
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(device_index))  # type: ignore[return-value]


def int8_tensor_core_reason(device_index: int = 0) -> str | None:
    """None when the GPU has int8 tensor cores with mma.m16n8k32 (compute capability 8.0+)."""
    why = torch_cuda_reason(device_index)
    if why:
        return why
    cap = capability(device_index)
    if cap is not None and cap < (8, 0):
        return f"compute capability {cap[0]}.{cap[1]}: the int8 kernels need 8.0 or newer (Ampere, Hopper, ...)"
    return None


def triton_reason() -> str | None:
    """None when Triton imports (it compiles for the GPU; without one it still runs under TRITON_INTERPRET=1)."""
    _, why = _import("triton")
    return None if why is None else f"triton {why}: pip install triton"


def find_nvcc() -> str | None:
    """nvcc from $CUDACXX, $CUDA_HOME/$CUDA_PATH, PATH, or /usr/local/cuda; None if absent."""
    candidates = [os.environ.get("CUDACXX")]
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def nvcc_reason() -> str | None:
    """None when nvcc is found (CUDA_HOME, PATH or /usr/local/cuda)."""
    if find_nvcc() is None:
        return "nvcc not found: install the CUDA toolkit and put nvcc on PATH (or set CUDA_HOME)"
    return None


def pycuda_reason() -> str | None:
    """None when PyCUDA's driver module imports."""
    _, why = _import("pycuda.driver")
    if why is None:
        return None
    return (f"pycuda {why}: pip install pycuda (builds from source against the CUDA toolkit: "
            "needs nvcc, the CUDA headers and a C++ compiler)")


def cupy_reason() -> str | None:
    """None when CuPy imports."""
    _, why = _import("cupy")
    if why is None:
        return None
    return f"cupy {why}: pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13)"


def launcher_reason() -> str | None:
    """None when at least one launcher for the CUDA C kernel is installed (PyCUDA preferred, CuPy otherwise)."""
    reasons = [pycuda_reason(), cupy_reason()]
    if any(r is None for r in reasons):
        return None
    return "no launcher for the CUDA C kernel: " + "; ".join(r for r in reasons if r)


def triton_gemm_reason(device_index: int = 0) -> str | None:
    """None when the Triton int8 GEMM can run on the GPU here."""
    return triton_reason() or int8_tensor_core_reason(device_index)


def cuda_gemm_reason(device_index: int = 0) -> str | None:
    """None when the CUDA C int8 GEMM can be built and launched here."""
    why = int8_tensor_core_reason(device_index) or launcher_reason()
    if why:
        return why
    if nvcc_reason() is not None and cupy_reason() is not None:
        return nvcc_reason()  # PyCUDA alone needs nvcc for the cubin; CuPy could fall back to NVRTC
    return None


def summary(device_index: int = 0) -> dict[str, str]:
    """Every piece and its state ('ok' or the reason), for reports and `costbench kernels` listings."""
    checks = {
        "torch CUDA": torch_cuda_reason(device_index),
        "int8 tensor cores": int8_tensor_core_reason(device_index),
        "triton": triton_reason(),
        "nvcc": nvcc_reason(),
        "pycuda": pycuda_reason(),
        "cupy": cupy_reason(),
    }
    return {k: "ok" if v is None else v for k, v in checks.items()}
