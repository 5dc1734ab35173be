"""``costbench kernels validate|bench --device cuda``: the GPU kernels' commands, behind the CPU kernels' ones.

:mod:`costbench.commands.kernels` calls these when ``--device`` is not ``cpu``. Both print rich tables,
optionally write JSON, and return an exit code: 0 when ours is exact everywhere (validate) or the run
completed (bench); 1 when ours is wrong somewhere; 2 when the GPU path cannot run here (the reason is
printed).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _device_index(device: str) -> int:
    kind, _, index = device.partition(":")
    if kind != "cuda":
        raise ValueError(f"device must be 'cuda' or 'cuda:N', got {device!r}")
    return int(index or 0)


def _usable_gpu(device: str, console: Any, what: str) -> int | None:
    """The device index when the Triton kernels can run there; else print why and return None."""
    from costbench.kernels.gpu import probe

    index = _device_index(device)
    why = probe.triton_gemm_reason(index)
    if why:
        console.print(f"[yellow]GPU kernels not {what}[/]: {why}")
        return None
    return index


def cuda_c_engines(index: int, stack: contextlib.ExitStack, launchers: str = "all",
                   log: Any = print) -> list[Any]:
    """CudaInt8Gemm behind each launcher that is installed ('all'), or one ('pycuda', 'cupy', 'auto').

    Each engine is entered on ``stack``, so it is closed (PyCUDA's context popped) when the caller's
    ``with contextlib.ExitStack() as stack:`` ends, however it ends.
    """
    from costbench.kernels.gpu import probe
    from costbench.kernels.gpu.cuda_gemm import CudaInt8Gemm

    names = ["pycuda", "cupy"] if launchers == "all" else [launchers]
    engines = []
    for name in names:
        why = {"pycuda": probe.pycuda_reason, "cupy": probe.cupy_reason}.get(name, lambda: None)()
        if why:
            log(f"CUDA C through {name}: not run ({why})")
            continue
        try:
            engines.append(stack.enter_context(CudaInt8Gemm(name, index)))
        except Exception as exc:
            log(f"CUDA C through {name}: failed to build/load ({type(exc).__name__}: {exc})")
    return engines


def validate_gpu(device: str = "cuda", *, quick: bool = False, seed: int | None = None, console: Any = None,
                 json_out: Path | None = None, launchers: str = "all") -> int:
    """Exactness of every Triton configuration, the autotuned Triton path, the CUDA C kernel (each tile, each
    launcher) and torch._int_mm, on the full int8 range and odd shapes; the fused form in fp32/fp16/bf16."""
    from rich.console import Console
    from rich.table import Table

    from costbench.kernels.gpu import triton_gemm
    from costbench.kernels.gpu import validate as gv

    console = console or Console()
    index = _usable_gpu(device, console, "validated")
    if index is None:
        return 2
    impls: list[gv.Impl] = [gv.TritonImpl(triton_gemm, cfg) for cfg in triton_gemm.CONFIGS]
    impls.append(gv.TritonImpl(triton_gemm, None))
    shapes = gv.SHAPES[:6] if quick else gv.SHAPES
    with contextlib.ExitStack() as stack:
        engines = cuda_c_engines(index, stack, launchers, log=console.print)
        for engine in engines:
            impls += [gv.CudaCImpl(engine, tile) for tile in ("128x128", "64x64")]
        impls.append(gv.TorchIntMMImpl())
        results = gv.validate(impls, f"cuda:{index}", shapes, seed, log=None)
        engine_info = [e.info() for e in engines]
    table = Table(title=f"GPU int8 GEMM exactness on {__import__('torch').cuda.get_device_name(index)} "
                        "(int32 vs numpy int64; fused vs fp64, error as a fraction of the allowed)",
                  title_justify="left")
    for col in ("implementation", "check", "cases", "ok", "worst", "worst case", "notes"):
        table.add_column(col, overflow="fold")
    ours_ok = True
    for r in results:
        ours = not r.impl.startswith("torch")
        ours_ok &= r.ok or not ours
        notes = "; ".join([*r.unsupported, *r.errors])[:160]
        table.add_row(r.impl, r.kind, str(r.cases), "[green]yes[/]" if r.ok else "[red]NO[/]", f"{r.worst:.3g}",
                      r.worst_case if not r.ok or r.kind != "int32" else "-", notes)
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"device": device, "results": [r.as_dict() for r in results],
                                        "launchers": engine_info}, indent=1, default=str))
    console.print("[green]ours: exact in every case[/]" if ours_ok else "[bold red]ours is wrong somewhere[/]")
    return 0 if ours_ok else 1


def bench_gpu(device: str = "cuda", *, quick: bool = False, rounds: int = 5, reps: int = 20, console: Any = None,
              json_out: Path | None = None, launchers: str = "auto") -> int:
    """TOPS of ours and the peers per shape, interleaved; ratios to cuBLASLt; % of the measured int8 peak."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from costbench.kernels.gpu import bench as gb

    console = console or Console()
    index = _usable_gpu(device, console, "benchmarked")
    if index is None:
        return 2
    dev = torch.device("cuda", index)
    peak = gb.int8_peak_tops(dev)
    configs = gb.triton_config_report(dev)
    with contextlib.ExitStack() as stack:  # the engines are closed however the benchmark ends
        engines = cuda_c_engines(index, stack, launchers, log=console.print)
        impls = gb.implementations(dev, engines[0] if engines else None)
        timer = gb.Timer(dev)
        gen = torch.Generator(device=dev)
        gen.seed()
        rng = np.random.default_rng()
        record: dict[str, Any] = {"device": device, "gpu": torch.cuda.get_device_name(index), "peak": peak,
                                  "triton_configs": configs, "rounds": rounds, "reps": reps, "shapes": []}
        cfg_table = Table(title="Triton tile configurations: wgmma predicted vs found in the compiled PTX",
                          title_justify="left")
        for col in ("config", "wgmma predicted", "mma in PTX", "shared bytes", "registers", "spills"):
            cfg_table.add_column(col)
        for c in configs:
            cfg_table.add_row(c["config"], str(c["wgmma_predicted"]), c["mma"] if not c["error"] else c["error"][:40],
                              str(c["shared_bytes"]), str(c["registers"]), str(c["spills"]))
        console.print(cfg_table)
        console.print(f"int8 peak (measured): {peak['tops']:.0f} TOPS ({peak['method']}; {peak['mma']})")
        table = Table(title=f"int8 GEMM on {record['gpu']}: TOPS (2·M·N·K / median time), {rounds} interleaved rounds",
                      title_justify="left")
        for col in ("shape", "M", "K", "N", "triton", "triton fused", "cuda-c", "cuBLASLt", "_int_mm+deq", "fp16 mm",
                    "triton/cuBLASLt", "cuda-c/cuBLASLt", "fused vs _int_mm+deq", "triton % peak"):
            table.add_column(col, overflow="fold")
        for label, m, k, n in (gb.QUICK_SHAPES if quick else gb.SHAPES):
            series = gb.bench_shape(m, k, n, impls, timer, rounds, reps, gen, rng)
            ops = 2.0 * m * n * k

            def tops(prefix: str) -> float:
                s = next((x for x in series if x.name.startswith(prefix)), None)
                return ops / (s.median_us * 1e-6) / 1e12 if s and s.round_medians_us else float("nan")

            t_tri, t_trf = tops("triton int8 (int32"), tops("triton int8 fused")
            t_cc, t_mm = tops("cuda-c mma.sync int8 (int32"), tops("cuBLASLt")
            t_deq, t_h = tops("torch._int_mm + separate"), tops("cuBLAS fp16")
            f = lambda x: "-" if math.isnan(x) else f"{x:.0f}"  # noqa: E731
            r = lambda a, b: "-" if math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"  # noqa: E731
            table.add_row(label, str(m), str(k), str(n), f(t_tri), f(t_trf), f(t_cc), f(t_mm), f(t_deq), f(t_h),
                          r(t_tri, t_mm), r(t_cc, t_mm), r(t_trf, t_deq), f"{100 * t_tri / peak['tops']:.0f}%")
            record["shapes"].append({"label": label, "m": m, "k": k, "n": n, "series": [
                {"name": s.name, "out": s.out, "ours": s.ours, "median_us": s.median_us, "round_medians_us":
                 s.round_medians_us, "method": s.method, "note": s.note, "error": s.error} for s in series]})
            for s in series:
                if s.error:
                    console.print(f"  {label} {m}x{k}x{n} {s.name}: {s.error}")
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(record, indent=1, default=str))
    return 0
