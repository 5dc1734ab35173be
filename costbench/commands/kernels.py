"""``costbench kernels``: validate the int8 GEMMs reachable here, and benchmark ours against them."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="costbench's int8 GEMM kernels: validate and benchmark against the vendors'.")
console = Console(width=None if sys.stdout.isatty() else 160)


def _quiet() -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)


def _threads(threads: Optional[int]) -> int:
    from costbench.kernels.gemm import default_threads

    return threads or default_threads()


@app.command()
def validate(
    threads: Optional[int] = typer.Option(None, help="Threads for every implementation (default: all cores)."),
    quick: bool = typer.Option(False, help="Fewer shapes."),
    seed: Optional[int] = typer.Option(None, help="Fix the random inputs (default: fresh every run)."),
    device: str = typer.Option("cpu", help="cpu: the C kernels; cuda[:N]: the Triton and CUDA C kernels on that GPU."),
) -> None:
    """Exact or not, and the largest error, for ours on every path and every vendor int8 GEMM here.

    Exits 1 if ours is ever inexact where it must be exact (an inexact path's full-range errors are reported).
    """
    _quiet()
    if device != "cpu":
        from costbench.commands.kernels_gpu import validate_gpu

        raise typer.Exit(validate_gpu(device, quick=quick, seed=seed, console=console))
    from costbench.kernels.gemm import inexact_isas, supported_isas
    from costbench.kernels.validate import run_validation

    t = _threads(threads)
    console.print(f"kernel paths on this CPU: {', '.join(supported_isas())}; threads {t}")
    tallies, fused, ok = run_validation(t, quick=quick, seed=seed)
    table = Table(title="int8 GEMM exactness on the full range (vs numpy int64)", title_justify="left")
    for col in ("implementation", "cases", "exact", "largest |error|", "worst case", "notes"):
        table.add_column(col, overflow="fold")
    for tl in tallies:
        if tl.skipped:
            table.add_row(tl.name, "-", "[yellow]not run[/]", "-", "-", tl.skipped)
            continue
        exact = "[green]yes[/]" if tl.inexact == 0 else f"[red]no[/] ({tl.inexact} of {tl.cases})"
        if tl.ours and not tl.exact_required and tl.inexact:
            exact = f"[yellow]no, by design[/] ({tl.inexact} of {tl.cases})"
        table.add_row(tl.name, str(tl.cases), exact, f"{tl.max_error:g}", tl.worst if tl.inexact else "-",
                      "; ".join(sorted(tl.notes))[:200])
    console.print(table)
    for isa in inexact_isas():
        console.print(f"{isa}: inexact on the full range by design (its u8×s8 pair sums saturate to int16), exact "
                      f"on activations in [0, 127], what its linear layers quantize to; never chosen by itself")
    f = Table(title="fused epilogue (A·B − zp⊗colsum)·s_row⊗s_col + bias vs fp64", title_justify="left")
    for col in ("path", "largest relative error", "tolerance", "ok"):
        f.add_column(col)
    for isa, err, tol in fused:
        f.add_row(isa, f"{err:.3g}", f"{tol:.3g}", "[green]yes[/]" if err <= tol else "[red]no[/]")
    console.print(f)
    if not ok:
        console.print("[bold red]ours is inexact[/]")
        raise typer.Exit(1)
    console.print("[green]ours: exact in every case[/]")


@app.command()
def bench(
    threads: Optional[int] = typer.Option(None, help="Threads for every implementation (default: all cores)."),
    rounds: int = typer.Option(7, min=2, help="Interleaved rounds per shape."),
    min_time: float = typer.Option(0.05, help="Seconds of back-to-back calls per sample."),
    quick: bool = typer.Option(False, help="Fewer shapes."),
    minilm: bool = typer.Option(True, help="Also MiniLM end to end: costbench-kernels vs torch dynamic int8."),
    minilm_batch: int = typer.Option(8, min=1, help="Sentences per MiniLM batch (64 tokens each)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every sample to this JSON file."),
    device: str = typer.Option("cpu", help="cpu: the C kernels; cuda[:N]: the Triton and CUDA C kernels on that GPU."),
) -> None:
    """GOPS of ours and every peer per shape, interleaved; ratio to each peer with a 95% interval; % of peak."""
    _quiet()
    if device != "cpu":
        from costbench.commands.kernels_gpu import bench_gpu

        raise typer.Exit(bench_gpu(device, quick=quick, rounds=rounds, console=console, json_out=json_out))
    import numpy as np

    from costbench.kernels.bench import measure_peaks

    t = _threads(threads)
    rng = np.random.default_rng()
    cpus = _process_cpus()
    load = {"before": _load_average()}
    console.print(f"load average (1, 5, 15 min) before: {_fmt_load(load['before'])}")
    peaks = measure_peaks(t)
    console.print(_peaks_table(peaks, t))
    shapes, handed = _bench_gemm_shapes(t, peaks, rounds, min_time, quick, rng)
    record = {"threads": t, "ratio": RATIO_PAIRED, "peaks": peaks, "shapes": shapes}
    if handed:
        record["vnni_max_k"] = handed
    if minilm:
        r = _bench_minilm(t, minilm_batch, rounds, max(min_time, 0.2), rng)
        if r is not None:
            record["minilm"] = r
    load["after"] = _load_average()
    console.print(f"load average (1, 5, 15 min) after: {_fmt_load(load['after'])}")
    record["load_average"] = load
    if cpus is not None:
        from costbench.kernels.bench import narrowed_threads

        narrowed = narrowed_threads(cpus)
        record["cpus"] = {"process": sorted(cpus), "narrowed_threads": narrowed}
        if narrowed:
            console.print(f"[red]{len(narrowed)} thread(s) of this process may run on fewer CPUs than the "
                          f"{len(cpus)} it started with[/] ({narrowed}): a peer whose threads are among them shared "
                          "those CPUs, and its times are not the hardware's")
    if json_out:
        _write_record(record, json_out)


def _process_cpus() -> Optional[set[int]]:
    """The CPUs this process may run on at the start (None where the OS does not say)."""
    import os

    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _load_average() -> Optional[list[float]]:
    """The machine's 1/5/15-minute load averages (other work on the cores skews every number), None if unknown."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _fmt_load(load: Optional[list[float]]) -> str:
    return "unknown" if load is None else ", ".join(f"{v:.2f}" for v in load)


def _peaks_table(peaks: dict[str, dict[int, float]], threads: int) -> Table:
    """Each path's register-only int8 multiply-add rate on 1 thread and on ``threads``."""
    pk = Table(title="int8 peak: register-only multiply-add loop per path (GOPS), at the start", title_justify="left")
    pk.add_column("path")
    for n in sorted({1, threads}):
        pk.add_column(f"{n} thread{'s' if n > 1 else ''}")
    for isa, by_t in peaks.items():
        pk.add_row(isa, *(f"{by_t[n]:.0f}" for n in sorted(by_t)))
    return pk


# The peers the GEMM table has a ratio column for: (column heading, series name).
_VS_COLUMNS = [("vs ORT MatMulInteger", "onnxruntime MatMulInteger"), ("vs torch _int_mm", "torch _int_mm"),
               ("vs torch dyn. linear", "torch linear_dynamic x86"), ("vs openvino", "openvino int8 MatMul")]


def _bench_gemm_shapes(threads: int, peaks: dict[str, dict[int, float]], rounds: int, min_time: float, quick: bool,
                       rng) -> tuple[list[dict], int]:
    """Time ours and every peer on each shape, print the per-shape table, and return the shapes' records and the
    K up to which ours ran the avx512vnni kernel instead of its own path's (amx's hand-over; 0: none)."""
    from costbench.kernels import gemm
    from costbench.kernels.bench import bench_peers, bench_shape, default_shapes

    peers = bench_peers()
    ours_name, best = peers[0].name, peers[0].isa
    peak = peaks[best][threads]
    table = Table(title=f"GEMM, {threads} thread(s), {rounds} interleaved rounds; GOPS from our median time; % peak: "
                        f"over the best rate of the {best} register-only loop, at the start and in the shape's rounds; "
                        f"ratio = median over rounds of peer time / our time in that round (>1: ours faster), 95% "
                        f"bootstrap interval", title_justify="left")
    for col in ("shape", "M", "K", "N", f"ours GOPS ({best})", "% peak", *(c for c, _ in _VS_COLUMNS),
                "other paths GOPS"):
        table.add_column(col, overflow="fold")
    shapes = []
    for label, m, k, n in default_shapes(quick):
        series = {s.name: s for s in bench_shape(m, k, n, peers, threads, rounds, min_time, rng, peak_isa=best)}
        table.add_row(label, str(m), str(k), str(n), *_gemm_cells(2.0 * m * k * n, series, ours_name, peak))
        shapes.append({"label": label, "m": m, "k": k, "n": n,
                       "series": {nm: {"a_type": s.a_type, "times_s": s.times, "note": s.note,
                                       **({"ops": s.ops} if s.ops else {})} for nm, s in series.items()}})
    console.print(table)
    handed = int(gemm.geometry(best)["vnni_max_k"])
    if handed:
        console.print(handed_over_note(best, handed))
    return shapes, handed


def handed_over_note(isa: str, vnni_max_k: int) -> str:
    """The line saying which shapes ours ran on the avx512vnni kernel, not on its own path's."""
    return (f"ours ({isa}): shapes with K ≤ {vnni_max_k} run the avx512vnni kernel, on a second packing the "
            f"weight carries (the tiles lose there)")


# The record's "ratio" for runs whose ratios pair each round's samples (earlier records: ratio of medians).
RATIO_PAIRED = "median of per-round ratios"


def time_ratio(den: list[float], num: list[float], paired: bool) -> tuple[float, float, float]:
    """num / den for two series of times from the same interleaved rounds, with its 95% interval.

    paired: the median over rounds of each round's num / den (a slow spell of the VM that both samples
    of a round shared cancels); else the ratio of the medians, each side resampled on its own (records
    written before the pairing).
    """
    import numpy as np

    from costbench.core.stats import paired_median_ratio, ratio_of_medians_ci

    if paired and len(den) == len(num):
        return paired_median_ratio(den, num)
    lo, hi = ratio_of_medians_ci(den, num)
    return float(np.median(num) / np.median(den)), lo, hi


def _gemm_cells(ops: float, series: dict, ours_name: str, peak: float, paired: bool = True) -> list[str]:
    """One shape's row after M, K, N: our GOPS, % of peak, the ratio to each peer, our other paths' GOPS.

    % of peak: our median GOPS over the ceiling, the best of ``peak`` (measured at the start of the run) and,
    where the path's register-only loop was timed beside the shape, its fastest round: a ceiling measured once
    can land in a slow spell of the VM, and a single slow sample of the loop cannot lower the best.
    """
    import numpy as np

    from costbench.kernels.bench import peak_name

    ours = series.get(ours_name)
    med = float(np.median(ours.times))
    loop = series.get(peak_name(ours_name.split()[-1]))
    ceiling = peak
    if loop is not None and loop.times and loop.ops:
        ceiling = max(peak, loop.ops / min(loop.times) / 1e9)
    share = ops / med / 1e9 / ceiling

    def vs(name: str) -> str:
        s = series.get(name)
        if s is None or not s.times:
            return "-" if s is None else s.note[:30]
        r, lo, hi = time_ratio(ours.times, s.times, paired)
        return f"{r:.2f} [{lo:.2f}–{hi:.2f}]"

    others = "  ".join(f"{nm.split()[-1]} {ops / np.median(s.times) / 1e9:.0f}" for nm, s in series.items()
                       if nm.startswith("costbench") and nm != ours_name and s.times)
    return [f"{ops / med / 1e9:.0f}", f"{100 * share:.0f}%", *(vs(nm) for _, nm in _VS_COLUMNS),
            others]


def _bench_minilm(threads: int, batch: int, rounds: int, min_time: float, rng) -> Optional[dict]:
    """all-MiniLM-L6-v2 from the zoo, end to end: print its table and return its record (None when skipped)."""
    from costbench.core.artifacts import default_cache_dir
    from costbench.harness.build.zoo.registry import zoo_model
    from costbench.kernels.bench import bench_minilm

    try:
        bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
        r = bench_minilm(bundle.torch_module(), bundle.evaluation.inputs, threads, batch, rounds, min_time, rng)
    except Exception as exc:
        console.print(f"[yellow]MiniLM skipped[/]: {type(exc).__name__}: {exc}")
        return None
    console.print(_minilm_table(r))
    return r


def _minilm_table(r: dict, paired: bool = True) -> Table:
    """MiniLM's median latency, speed-up over torch dynamic int8 and embedding parity with fp32, per model."""
    mt = Table(title=f"all-MiniLM-L6-v2 end to end: batch {r['batch']} x {r['seq_len']} tokens, "
                     f"{r['int8_layers']} Linear layers on {r['isa']}; parity over {r['sentences']} sentences",
               title_justify="left")
    speedup = "speed-up vs torch dynamic int8, " + ("median of per-round ratios" if paired else "ratio of medians")
    for col in ("model", "median ms", f"{speedup} [95%]", "mean cos vs fp32", "min cos vs fp32"):
        mt.add_column(col)
    for row in _minilm_rows(r, paired):
        mt.add_row(*row)
    return mt


def _minilm_rows(r: dict, paired: bool) -> list[tuple[str, str, str, str, str]]:
    """Per model of a MiniLM record: name, median ms, speed-up over torch dynamic int8 with its interval, and the
    mean and min cosine to fp32 (fp32 itself: 1)."""
    import numpy as np

    base = r["times"]["torch dynamic int8"]
    rows = []
    for name, ts in r["times"].items():
        x, lo, hi = time_ratio(ts, base, paired)
        par = r["parity"].get(name, {"mean_cos": 1.0, "min_cos": 1.0})
        rows.append((name, f"{1e3 * np.median(ts):.1f}", f"{x:.2f} [{lo:.2f}–{hi:.2f}]", f"{par['mean_cos']:.5f}",
                     f"{par['min_cos']:.5f}"))
    return rows


def _write_record(record: dict, json_out: Path) -> None:
    """Every sample of the run, as JSON."""
    json_out.write_text(json.dumps(record, indent=1, default=float))
    console.print(f"wrote {json_out}")
