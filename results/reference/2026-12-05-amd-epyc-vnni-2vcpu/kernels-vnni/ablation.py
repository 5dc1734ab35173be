"""What each change to the avx512vnni path was worth, measured side by side in one process.

The C module of each listed commit (``git show COMMIT:kernels/csrc/gemm.c``) is compiled into its own
folder and loaded under its own name, weights are packed by each module for itself, and every module
(and ONNX Runtime's ``MatMulInteger``) is timed on the same operands in interleaved rounds, in a fresh
random order every round (``costbench.kernels.bench.time_interleaved``). Then all-MiniLM-L6-v2 end to
end through ``Int8Linear`` at HEAD, once on torch's OpenMP threads and once on costbench's own, beside
torch's dynamic int8, interleaved the same way.

    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni/ablation.py --processes 3 --json ablation.json

A process draws its own thread placement on the VM, and two threads' speed differs from one process to
the next here (one thread's does not); ``--processes N`` repeats the comparison in N fresh
processes and prints, per shape, the median over processes with the smallest and largest.

Ratios are of medians with a bootstrap 95% interval (``costbench.core.stats.ratio_of_medians_ci``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[4]
# (commit, what it changed); the first is the kernel as it was before this work (only its peak loop fixed)
COMMITS = [
    ("6b3a2ad", "before: 8x32 tile on 32-column panels, pool threads sleep between calls"),
    ("6af97a2", "6x64 tile on 64-column panels, N-or-M split, L2 row blocks; pool threads spin 100 us"),
    ("97cd6ae", "threads take over each other's unstarted tasks (dynamic job)"),
    ("ace06a9", "a run of row tiles per call, epilogue vectors loaded as stored"),
]
SHAPES = [(32, 384, 384), (128, 384, 384), (512, 384, 384), (2048, 384, 384), (32, 384, 1536), (512, 384, 1536),
          (32, 1536, 384), (512, 1536, 384), (12544, 32, 16), (3136, 24, 144), (784, 40, 240), (49, 672, 192)]


def build(commit: str, folder: Path) -> Path:
    """Compile gemm.c as of ``commit`` into ``folder``/_gemm.so, with the package build's flags."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "gemm.c"
    src.write_bytes(subprocess.run(["git", "show", f"{commit}:kernels/csrc/gemm.c"], cwd=ROOT, check=True,
                                   capture_output=True).stdout)
    so = folder / "_gemm.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O3", "-std=gnu11", "-pthread", "-Wno-unused-function",
                    f"-I{sysconfig.get_paths()['include']}", str(src), "-o", str(so), "-lm"], check=True)
    return so


def load(so: Path):
    spec = importlib.util.spec_from_file_location("_gemm", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def prepare(mod, b: np.ndarray, threads: int):
    """A call of ``mod``'s VNNI GEMM on weight ``b`` (packed once), as ``costbench.kernels.gemm.int8_gemm`` makes it."""
    from costbench.kernels.gemm import aligned_empty

    isa = mod.ISA_AVX512VNNI
    k, n = b.shape
    data = aligned_empty(mod.packed_bytes(isa, k, n))
    mod.pack_b(isa, np.ascontiguousarray(b), n, k, n, data)
    colsum = b.sum(axis=0, dtype=np.int64).astype(np.int32)

    def run(a):
        out = np.empty((a.shape[0], n), np.int32)
        mod.gemm(isa, a, True, a.shape[0], k, k, data, n, colsum, None, None, None, None, out, False, threads)
        return out

    return run


def gemm_ablation(mods, threads: int, rounds: int, min_time: float, rng) -> list[dict]:
    from costbench.kernels.bench import time_interleaved
    from costbench.kernels.peers import OrtMatMulInteger
    from costbench.kernels.reference import int8_gemm_reference

    rows = []
    for m, k, n in SHAPES:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        exact = int8_gemm_reference(a, b)
        fns = {}
        for commit, mod in mods.items():
            run = prepare(mod, b, threads)
            assert (run(a) == exact).all(), f"{commit} is inexact at {m}x{k}x{n}"
            fns[commit] = (lambda run=run: run(a))
        ort = OrtMatMulInteger().prepare(b, "u8", threads).run
        fns["onnxruntime"] = lambda: ort(a)
        times = time_interleaved(fns, rounds, min_time, rng)
        rows.append({"m": m, "k": k, "n": n, "times_s": times})
        print(f"{m}x{k}x{n}: " + "  ".join(f"{c} {2 * m * k * n / np.median(t) / 1e9:.0f}" for c, t in times.items())
              + " GOPS", flush=True)
    return rows


def minilm_ablation(threads: int, rounds: int, min_time: float, rng) -> dict:
    import torch

    from costbench.core.artifacts import default_cache_dir
    from costbench.harness.build.zoo.registry import zoo_model
    from costbench.kernels import gemm
    from costbench.kernels.bench import first_batch, int8_variants, time_interleaved
    from costbench.kernels.linear import torch_openmp_runtime

    bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
    _, tq, ours, _ = int8_variants(bundle.torch_module(), threads)
    batch = {k: torch.from_numpy(v) for k, v in first_batch(bundle.evaluation.inputs, 8).items()}
    team = torch_openmp_runtime()

    def on(path):
        def run():
            gemm.use_openmp(path)
            return ours(**batch)
        return run

    with torch.inference_mode():
        fns = {"torch dynamic int8": lambda: tq(**batch), "costbench-kernels, torch's OpenMP threads": on(team),
               "costbench-kernels, own threads": on(None)}
        times = time_interleaved(fns, rounds, min_time, rng)
    gemm.use_openmp(team)
    for name, t in times.items():
        print(f"MiniLM {name}: {1e3 * np.median(t):.1f} ms", flush=True)
    return {"openmp_runtime": team, "times_s": times}


def summary(records: list[dict]) -> str:
    """Per shape and module: GOPS of each process (median of its rounds), then the median over processes."""
    lines = []
    for i, sh in enumerate(records[0]["shapes"]):
        ops = 2 * sh["m"] * sh["k"] * sh["n"]
        cells = []
        for name in sh["times_s"]:
            per = sorted(ops / np.median(r["shapes"][i]["times_s"][name]) / 1e9 for r in records)
            cells.append(f"{name.split()[0]} {np.median(per):.0f} [{per[0]:.0f}-{per[-1]:.0f}]")
        lines.append(f"{sh['m']}x{sh['k']}x{sh['n']} GOPS, median [min-max] of {len(records)} processes: " + "  ".join(cells))
    for name in records[0]["minilm"]["times_s"]:
        per = sorted(1e3 * np.median(r["minilm"]["times_s"][name]) for r in records)
        lines.append(f"MiniLM {name}: {np.median(per):.1f} ms [{per[0]:.1f}-{per[-1]:.1f}]")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05)
    ap.add_argument("--processes", type=int, default=1,
                    help="run the whole comparison in this many fresh processes, one after another")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    if args.processes > 1:  # a process draws its own thread placement: replicate over processes
        records = []
        with tempfile.TemporaryDirectory() as tmp:
            for p in range(args.processes):
                part = Path(tmp) / f"{p}.json"
                subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--rounds", str(args.rounds),
                                "--min-time", str(args.min_time), "--json", str(part)], check=True)
                records.append(json.loads(part.read_text()))
        args.json.write_text(json.dumps({"processes": records}, indent=1))
        print(summary(records))
        return
    rng = np.random.default_rng()
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        mods = {c: load(build(c, Path(tmp) / c)) for c, _ in COMMITS}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
        from costbench.kernels import _gemm

        mods[f"HEAD {head}"] = _gemm
        gemm_rows = gemm_ablation(mods, args.threads, args.rounds, args.min_time, rng)
    minilm = minilm_ablation(args.threads, args.rounds, max(args.min_time, 0.2), rng)
    record = {"threads": args.threads, "rounds": args.rounds, "commits": dict(COMMITS), "shapes": gemm_rows,
              "minilm": minilm, "load_average": {"before": load_before,
                                                 "after": [round(v, 2) for v in os.getloadavg()]}}
    args.json.write_text(json.dumps(record, indent=1))
    print(f"load average before {load_before}, after {record['load_average']['after']}; wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
