"""GPU state through NVML: clocks, temperature, power and throttle reasons, read at the start and end of a case.

A case whose GPU throttled (thermal, power, or hardware slowdown) while it measured is flagged,
so a slow result can be told apart from a slow variant. Without NVML (no NVIDIA GPU, or the
``nvidia-ml-py`` package missing) every function returns an empty answer and says why.
"""

from __future__ import annotations

from typing import Any

# Throttle reasons that mean the GPU ran slower than it could (NVML's nvmlClocksEventReasons /
# nvmlClocksThrottleReasons bit values). Idle and application-clock settings are not slowdowns.
_SLOWDOWN_REASONS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
    0x0000000000000100: "display_clock_setting",
}


def _nvml(module: Any = None) -> tuple[Any | None, str]:
    if module is not None:
        return module, ""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded...: no usable NVIDIA driver
        return None, f"NVML unavailable: {exc}"
    return pynvml, ""


def decode_throttle(mask: int) -> list[str]:
    """The slowdown reasons set in an NVML throttle-reason bit mask."""
    return [name for bit, name in _SLOWDOWN_REASONS.items() if mask & bit]


def snapshot(nvml: Any = None) -> dict[str, Any]:
    """Per-GPU clocks, temperature, power and active slowdown reasons; ``{"gpus": [], "reason": ...}`` without NVML."""
    nv, why = _nvml(nvml)
    if nv is None:
        return {"gpus": [], "reason": why}
    gpus = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mask = int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))
        name = nv.nvmlDeviceGetName(h)
        gpus.append({
            "index": i,
            "name": name.decode() if isinstance(name, bytes) else name,
            "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
            "temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "memory_used_bytes": int(nv.nvmlDeviceGetMemoryInfo(h).used),
            "throttle_mask": mask,
            "slowdowns": decode_throttle(mask),
        })
    return {"gpus": gpus, "reason": ""}


def throttled(start: dict[str, Any], end: dict[str, Any]) -> list[str]:
    """Human-readable slowdowns seen at either end of a case, e.g. ``['GPU0: sw_thermal_slowdown at end']``."""
    found = []
    for when, snap in (("start", start), ("end", end)):
        for g in snap.get("gpus", []):
            found += [f"GPU{g['index']}: {r} at {when}" for r in g["slowdowns"]]
    return found
