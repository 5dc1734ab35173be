"""The machine fingerprint: a hashed comparability key (env_id) and everything else recorded beside it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# ISA features that decide int8 speed and exactness on x86 (see docs/architecture.md, "Numerics that matter").
INT8_ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_tile", "amx_int8", "amx_bf16")
# Everything that can change a measured number: runtimes, the code generators behind torch.compile and
# our kernels, what builds the variants, what defines the models. (Launch bindings such as PyCuda do not.)
LIBRARIES = ("costbench", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf",
             "executorch", "torchao", "triton", "tensorrt", "nvidia-cuda-runtime-cu12", "transformers",
             "scikit-learn", "duckdb", "pandas", "scipy")
# Runtimes added after env_ids were first recorded: they join the key only where installed, so a machine
# without them keeps its env_id, and one with them is told apart by their versions.
LIBRARIES_IF_INSTALLED = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer")
# Environment variables that change how a runtime runs without a run setting them (recorded when set, not
# hashed): huge pages for c10's allocator, oneDNN's instruction-set cap and floating-point mode, the OpenMP
# runtimes' wait policies and affinity, glibc's malloc arenas and tuning.
RUNTIME_VARS = ("THP_MEM_ALLOC_ENABLE", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
                "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_AFFINITY", "OMP_PROC_BIND", "OMP_PLACES",
                "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
# NVIDIA's wheels change names with CUDA and TensorRT majors: TensorRT 10/11 ship as tensorrt-cu12 and
# tensorrt-cu13 (plus -libs/-bindings, with `tensorrt` only a metapackage), and CUDA 13's libraries drop the
# suffix (nvidia-cuda-runtime, nvidia-cublas, nvidia-cudnn-cu13). Whichever of these families is installed
# joins the key under its own name, so a CUDA 12 and a CUDA 13 machine never share an env_id. Names that
# are not installed are left out (unlike LIBRARIES), so a machine without them keeps the env_id it had.
NVIDIA_WHEEL_FAMILIES = re.compile(
    r"^(tensorrt(-cu\d+)?(-libs|-bindings)?"
    r"|nvidia-(cuda-runtime|cuda-nvrtc|cublas|cudnn|nccl)(-cu\d+)?"
    r"|onnxruntime-gpu|cupy-cuda\w+|cuda-python|cuda-bindings)$")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_flags() -> set[str]:
    """All CPU feature flags the kernel reports."""
    return set(_cpuinfo().get("flags", "").split())


def int8_isa() -> dict[str, bool]:
    """The int8-relevant ISA flags, each present or not."""
    flags = cpu_flags()
    return {f: f in flags for f in INT8_ISA_FLAGS}


def has_vnni() -> bool:
    """True when the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8).

    Without one, u8*s8 kernels built on vpmaddubsw can saturate int16 on full-range inputs,
    so quantizers must use 7-bit weights (``reduce_range``).
    """
    isa = int8_isa()
    return isa["avx512_vnni"] or isa["avx_vnni"] or isa["amx_int8"]


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return 0


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of '-', '_' and '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def nvidia_wheels() -> dict[str, str]:
    """Installed NVIDIA wheels of the families in :data:`NVIDIA_WHEEL_FAMILIES`, by normalized name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = _normalized(dist.metadata.get("Name") or "")
        if name and NVIDIA_WHEEL_FAMILIES.match(name) and name not in LIBRARIES:
            found[name] = dist.version
    return dict(sorted(found.items()))


def library_versions() -> dict[str, str]:
    """Every name in :data:`LIBRARIES` (version or "not installed"), then those of
    :data:`LIBRARIES_IF_INSTALLED` and the NVIDIA wheels installed here."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    for lib in LIBRARIES_IF_INSTALLED:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    out.update(nvidia_wheels())
    return out


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs via nvidia-smi (model, memory, driver); empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    result = []
    for line in out.strip().splitlines():
        name, mem, driver = (s.strip() for s in line.split(","))
        result.append({"name": name, "memory": mem, "driver": driver})
    return result


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def comparability_key() -> dict[str, Any]:
    """What must match for two results to be compared: hardware, ISA, libraries, thread settings."""
    return {
        "cpu_model": cpu_model(),
        "isa": int8_isa(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "gpus": gpus(),
        "libraries": library_versions(),
        "python": platform.python_version(),
        "threads": {v: os.environ.get(v) for v in THREAD_VARS},
    }


def env_id_of(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _selected(path: str) -> str | None:
    """The bracketed choice of a sysfs setting such as ``always [madvise] never`` (None where unreadable)."""
    text = _read(path)
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else text


def fingerprint() -> dict[str, Any]:
    """The comparability key, its hash, and the facts recorded beside it but not hashed."""
    key = comparability_key()
    return {
        "env_id": env_id_of(key),
        "key": key,
        "recorded": {
            "hostname": socket.gethostname(),
            "os": platform.platform(),
            "memory_bytes": memory_bytes(),
            "python_executable": sys.executable,
            "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "cpu_max_khz": _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
            "cpu_mhz_now": _cpuinfo().get("cpu MHz"),
            # Controls that can move a measurement and that a run does not set itself (docs/replication.md):
            # transparent huge pages, a preloaded allocator, the OpenMP wait policy, where it may run, and every
            # runtime-behaviour variable that is set (RUNTIME_VARS).
            "transparent_hugepages": _selected("/sys/kernel/mm/transparent_hugepage/enabled"),
            "transparent_hugepages_defrag": _selected("/sys/kernel/mm/transparent_hugepage/defrag"),
            "ld_preload": os.environ.get("LD_PRELOAD"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "cpus_allowed": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "runtime_env": {name: os.environ[name] for name in RUNTIME_VARS if name in os.environ},
        },
    }
