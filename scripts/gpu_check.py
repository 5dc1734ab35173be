"""The NVIDIA check in one run: validate, benchmark and exercise everything GPU-side, and record it.

Run by scripts/gpu_check.sh (which installs what the GPU image lacks and builds PyCUDA in the
background); stages run in priority order under a time budget, each recorded as ok, failed (with the
error) or skipped (with why), and the JSON is rewritten after every stage so a run cut short keeps
what it measured:

1. environment: GPU, driver, CUDA, library versions, costbench's fingerprint (env_id)
2. Triton: every tile configuration and the autotuned path, exact on the full range and odd shapes,
   fused fp32/fp16/bf16 within tolerance; which configurations compiled to wgmma
3. CUDA C: nvcc build for the card, SASS checked for IMMA, validated through CuPy
4. benchmark: Triton and CUDA C against cuBLASLt (torch._int_mm), _int_mm + separate dequantize and
   fp16 GEMM, interleaved, with the measured int8 peak
5. PyCUDA: the CUDA C kernel validated (and timed) through the PyCUDA launcher once its build is done
6. MiniLM through Int8Linear on CUDA: parity with fp32, paraphrase retrieval, latency
7. the smoke models on the torch CUDA backend (fp32/fp16/bf16; eager, CUDA graph, torch.compile) and
   the ONNX Runtime / TensorRT cases this image can run, through the harness worker

Usage: ``python scripts/gpu_check.py --out DIR [--budget SECONDS] [--quick] [--reference-image]``.

``--reference-image`` (what scripts/gpu_check.sh passes unless told ``--with-tensorrt``): the reference GPU
image cannot install TensorRT or onnxruntime-gpu, so their cases are skipped up front with the reason
"not installable on the reference image". Without it they run, or are skipped with the probe's reason.

Exit status (also in gpu_check.json under "exit", with every failure named):

- 0: every stage ran and passed: our kernels exact everywhere, no stage raised, no model case failed;
- 1: a real failure: a kernel wrong somewhere, a stage that raised (the PyCUDA build included), a failed case;
- 2: no CUDA GPU here;
- 7: nothing failed, but the time budget cut a stage or a case (incomplete: not a pass).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ROOT / ".gpu-offline"  # what scripts/gpu_check_prepare.py wrote
PYCUDA_SITE = Path(os.environ.get("COSTBENCH_PYCUDA_SITE", "/tmp/pycuda-site"))
PYCUDA_DONE = PYCUDA_SITE / ".build-finished"
BUDGET_SKIP = "time budget of the GPU check ran out"
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU, EXIT_INCOMPLETE = 0, 1, 2, 7
# stage -> the flag in its result that says our kernels were right everywhere
CORRECTNESS_FLAGS = {"triton: validate every config": "all_ours_ok", "cuda-c: validate via cupy": "all_ok",
                     "pycuda: build, validate": "all_ok"}


class Run:
    """Stages under a deadline; results written after each stage."""

    def __init__(self, out: Path, budget_s: float, only: list[str] | None = None):
        self.out = out
        self.only = only or []  # stage-name prefixes to run; empty: all
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.record: dict[str, Any] = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       "budget_s": budget_s, "stages": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage(self, name: str, fn: Callable[[], Any], needs_s: float = 0.0) -> Any:
        if self.only and not any(name.startswith(p) for p in self.only):
            self.record["stages"][name] = {"status": "not selected", "why": f"--stages {','.join(self.only)}"}
            return None
        if self.left() < needs_s:
            self.record["stages"][name] = {"status": "skipped", "why": f"time budget: {self.left():.0f} s left, "
                                                                         f"stage needs ~{needs_s:.0f} s"}
            print(f"== {name}: skipped (time budget)", flush=True)
            self.save()
            return None
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        t = time.monotonic()
        try:
            result = fn()
            status = {"status": "ok", "result": result}
        except Exception as exc:
            traceback.print_exc()
            status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(limit=8)[-3000:]}
            result = None
        status["seconds"] = round(time.monotonic() - t, 1)
        self.record["stages"][name] = status
        self.save()
        return result

    def save(self) -> None:
        self.record["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=1, default=_json_default))
        os.replace(tmp, self.out / "gpu_check.json")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as exc:
        return f"({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------------------------------------ stages


def environment() -> dict[str, Any]:
    import torch

    from costbench.harness.machine.env import fingerprint
    from costbench.kernels.gpu import probe

    versions = {}
    for mod in ("torch", "triton", "cupy", "numpy", "onnxruntime", "tensorrt", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as exc:
            versions[mod] = f"not available ({type(exc).__name__})"
    props = torch.cuda.get_device_properties(0)
    return {
        "fingerprint": fingerprint(),
        "gpu": {"name": props.name, "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
                "l2_bytes": getattr(props, "L2_cache_size", None)},
        "nvidia_smi": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                                          "temperature.gpu,power.draw,power.limit", "--format=csv"]),
        "nvcc": _cmd(["nvcc", "--version"]).splitlines()[-1:] if _cmd(["which", "nvcc"]) else "not found",
        "torch_cuda": torch.version.cuda,
        "versions": versions,
        "python": platform.python_version(),
        "probes": probe.summary(),
    }


def _validate_configs(names: list[str], shapes: list, kinds: list[str]) -> list[dict[str, Any]]:
    """In a worker process: the named Triton configurations on the given shapes (fresh inputs)."""
    from costbench.kernels.gpu import triton_gemm as tg
    from costbench.kernels.gpu import validate as gv

    impls = [gv.TritonImpl(tg, c) for c in tg.CONFIGS if c.name in names]
    return [r.as_dict() for r in gv.validate(impls, "cuda:0", shapes, kinds=kinds)]


def triton_validation(quick: bool) -> dict[str, Any]:
    """Every tile configuration, each in its own process (Triton compiles one configuration at a time, so
    compiling 11 in parallel is what keeps this stage in budget), then the autotuned path in this one."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from costbench.kernels.gpu import triton_gemm as tg
    from costbench.kernels.gpu import validate as gv

    shapes = gv.CONFIG_SHAPES[:4] + gv.CONFIG_SHAPES[-2:] if quick else gv.CONFIG_SHAPES
    names = [c.name for c in tg.CONFIGS]
    # int32 and fused fp16 for every configuration; fp32/bf16 outputs (only the final cast differs) on
    # one wgmma tile and one small-M tile
    jobs = [([n], shapes, ["int32", "fused float16"]) for n in names]
    jobs.append(([names[0], names[-1]], shapes, ["fused float32", "fused bfloat16"]))
    workers = max(1, min(len(jobs), (os.cpu_count() or 2) - 1))
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        results = [r for rs in pool.map(_validate_configs, *zip(*jobs)) for r in rs]
    for r in results:
        print(f"{r['impl']:<40} {r['kind']:<15} {'ok' if r['ok'] else 'FAIL'}  cases={r['cases']} worst={r['worst']:.3g}"
              + (f"  errors: {r['errors'][:2]}" if r["errors"] else ""), flush=True)
    # the autotuned path and edge shapes (1x1x1 ...) in this process; then cuBLASLt for reference
    edge = [(1, 1, 1), (1, 7, 33), (33, 1000, 7), (255, 300, 257), (512, 4096, 512)]
    more = gv.validate([gv.TritonImpl(tg, None)], "cuda:0", edge, log=print)
    more += gv.validate([gv.TorchIntMMImpl()], "cuda:0", gv.SHAPES, log=print)
    results += [r.as_dict() for r in more]
    ours = [r for r in results if r["impl"].startswith("triton")]
    return {"all_ours_ok": all(r["ok"] for r in ours), "results": results,
            "autotuned_choices": {"int32": tg.best_config(False)}}


def triton_configs() -> list[dict[str, Any]]:
    from costbench.kernels.gpu.bench import triton_config_report

    rows = triton_config_report("cuda:0")
    for r in rows:
        print(f"{r['config']:<24} wgmma predicted={r['wgmma_predicted']!s:<5} PTX: {r['mma']:<9} "
              f"smem={r['shared_bytes']} regs={r['registers']} spills={r['spills']} {r['error']}")
    return rows


def cuda_c_build() -> dict[str, Any]:
    import torch

    from costbench.kernels.gpu import cuda_gemm

    cap = torch.cuda.get_device_capability(0)
    built = cuda_gemm.build("cubin", cap)
    sass = cuda_gemm.sass(built.path)
    counts = {name: {"IMMA.16832.S8.S8": cuda_gemm.count_instructions(body, r"IMMA\.16832\.S8\.S8"),
                     "HGMMA": body.count("HGMMA"), "LDL/STL": cuda_gemm.count_instructions(body, r"\b(LDL|STL)\b")}
              for name, body in ((b.split()[0], b) for b in sass.split("Function : ")[1:])}
    return {"command": " ".join(built.command), "nvcc": built.nvcc_version, "resources": built.resources,
            "sass_counts": counts, "cubin_bytes": built.path.stat().st_size}


def cuda_c_validation(launcher: str, quick: bool) -> dict[str, Any]:
    from costbench.kernels.gpu import validate as gv
    from costbench.kernels.gpu.cuda_gemm import CudaInt8Gemm

    shapes = gv.SHAPES[:6] if quick else gv.SHAPES
    with CudaInt8Gemm(launcher, 0) as engine:  # closed (PyCUDA's context popped) however validation ends
        results = gv.validate([gv.CudaCImpl(engine, t) for t in ("128x128", "64x64")] + [gv.CudaCImpl(engine, None)],
                              "cuda:0", shapes, log=print)
        info = engine.info()
    return {"launcher": info, "all_ok": all(r.ok for r in results), "results": [r.as_dict() for r in results]}


def benchmark(quick: bool, launcher: str | None) -> dict[str, Any]:
    import torch

    from costbench.kernels.gpu import bench as gb
    from costbench.kernels.gpu.cuda_gemm import CudaInt8Gemm

    dev = torch.device("cuda", 0)
    peak = gb.int8_peak_tops(dev)
    print(f"int8 peak (Triton dot loop): {peak['tops']:.0f} TOPS via {peak['mma']}")
    with contextlib.ExitStack() as stack:  # the engine is closed (PyCUDA's context popped) however this ends
        engine = stack.enter_context(CudaInt8Gemm(launcher, 0)) if launcher else None
        impls = gb.implementations(dev, engine)
        timer = gb.Timer(dev)
        gen = torch.Generator(device=dev)
        gen.seed()
        rng = np.random.default_rng()
        shapes = []
        for label, m, k, n in (gb.QUICK_SHAPES if quick else gb.SHAPES):
            series = gb.bench_shape(m, k, n, impls, timer, rounds=3, reps=10, gen=gen, rng=rng)
            row = {"label": label, "m": m, "k": k, "n": n, "series": []}
            for s in series:
                tops = 2.0 * m * n * k / (s.median_us * 1e-6) / 1e12 if s.round_medians_us else None
                row["series"].append({"name": s.name, "out": s.out, "ours": s.ours, "median_us": s.median_us,
                                      "round_medians_us": s.round_medians_us, "tops": tops,
                                      "pct_of_peak": None if tops is None else 100 * tops / peak["tops"],
                                      "method": s.method, "note": s.note, "error": s.error})
                print(f"{label:<7} {m}x{k}x{n:<6} {s.name:<55} "
                      + (f"{s.median_us:9.1f} us {tops:7.1f} TOPS" if tops else f"-- {s.error}"), flush=True)
            shapes.append(row)
        engine_info = engine.info() if engine else None
    return {"peak": peak, "launcher": engine_info, "shapes": shapes,
            "autotuned_choices": __import__("costbench.kernels.gpu.triton_gemm", fromlist=["x"]).best_config(False)}


def wait_for_pycuda(timeout_s: float) -> str | None:
    """None once the background build installed PyCUDA, else why not (its log is in the output folder)."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if PYCUDA_DONE.exists():
            status = PYCUDA_DONE.read_text().strip()
            if status != "0":
                return f"the PyCUDA build failed (exit {status}; see pycuda_build.log)"
            import importlib

            # the folder did not exist when Python started: drop any cached "nothing here" finder
            sys.path_importer_cache.pop(str(PYCUDA_SITE), None)
            if str(PYCUDA_SITE) not in sys.path:
                sys.path.insert(0, str(PYCUDA_SITE))
            importlib.invalidate_caches()
            return None
        time.sleep(2)
    return f"the PyCUDA build did not finish within {timeout_s:.0f} s"


def pycuda_stage(quick: bool, run: Run) -> dict[str, Any]:
    why = wait_for_pycuda(max(10.0, min(180.0, run.left() - 120)))
    if why:
        raise RuntimeError(why)
    import pycuda  # noqa: F401

    out = cuda_c_validation("pycuda", quick)
    out["pycuda_version"] = __import__("pycuda").VERSION_TEXT
    return out


def _minilm_fp32(pack: Path) -> Any:
    """The fp32 embedder (eval mode, on the CPU) from the compact pack: fp16-rounded weights, and word
    embeddings restricted to the rows the bundled sentences use (every other row stays zero)."""
    import torch
    from transformers import BertConfig, BertModel

    from costbench.harness.build.zoo.minilm import _embedder_class

    weights = np.load(pack / "weights_fp16.npz")
    config = BertConfig.from_json_file(str(pack / "config.json"))
    bert = BertModel(config, add_pooling_layer=False)
    state = {}
    vocab = int(weights["word_embeddings_vocab"])
    emb = torch.zeros((vocab, config.hidden_size))
    emb[torch.from_numpy(weights["word_embeddings_ids"])] = torch.from_numpy(weights["word_embeddings_rows"]).float()
    state["embeddings.word_embeddings.weight"] = emb
    for key in weights.files:
        if key.startswith("param:"):
            state[key[6:]] = torch.from_numpy(weights[key]).float()
        elif key.startswith("buffer:"):
            state[key[7:]] = torch.from_numpy(weights[key])
    missing, unexpected = bert.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"MiniLM weights did not load: missing {missing}, unexpected {unexpected}")
    return _embedder_class()(bert).eval()


def _embed(model: Any, ids: Any, mask: Any) -> Any:
    """Embeddings of every sentence, 64 at a time, as fp32."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, ids.shape[0], 64):
            outs.append(model(ids[i:i + 64], mask[i:i + 64]).float())
    return torch.cat(outs)


def _retrieval(e: Any, labels: np.ndarray) -> float:
    """Share of sentences whose nearest other sentence (by dot product) carries the same label."""
    sim = e @ e.T
    sim.fill_diagonal_(-2)
    nearest = sim.argmax(1).cpu().numpy()
    return float(np.mean(labels[nearest] == labels))


def _parity(e: Any, ref: Any) -> dict[str, float]:
    """Mean and least cosine (dot product of the normalised embeddings) between ``e`` and ``ref``."""
    cos = (e * ref).sum(1)
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}


def _latency(model: Any, ids: Any, mask: Any) -> dict[str, float]:
    """Milliseconds per forward of one batch after 5 warm-ups: CUDA events over 30 runs on a GPU; one host-
    clock run elsewhere (a dry run on the CPU)."""
    import torch

    with torch.inference_mode():
        for _ in range(5):
            model(ids, mask)
        if ids.device.type != "cuda":
            t = time.perf_counter()
            model(ids, mask)
            return {"median_ms": (time.perf_counter() - t) * 1e3, "p90_ms": float("nan")}
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            model(ids, mask)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def minilm_stage(device: str = "cuda:0") -> dict[str, Any]:
    """all-MiniLM-L6-v2 (compact pack) on CUDA: fp32, fp16, and Int8Linear (the Triton int8 GEMM)."""
    import copy

    import torch

    from costbench.kernels.linear import swap_linear_layers

    pack = OFFLINE / "minilm"
    data = np.load(pack / "sentences.npz")
    fp32 = _minilm_fp32(pack)
    int8 = copy.deepcopy(fp32)
    swapped = swap_linear_layers(int8)  # CPU Int8Linear modules; on CUDA inputs they dispatch to Triton
    dev = torch.device(device)
    fp32 = fp32.to(dev)
    int8 = int8.to(dev)
    fp16 = copy.deepcopy(fp32).half()
    ids = torch.from_numpy(data["evaluation_input_ids"]).to(dev)
    mask = torch.from_numpy(data["evaluation_attention_mask"]).to(dev)
    labels = data["evaluation_labels"]
    e32, e16, e8 = _embed(fp32, ids, mask), _embed(fp16, ids, mask), _embed(int8, ids, mask)
    bi, bm = ids[:32], mask[:32]
    result = {
        "weights": json.loads((pack / "README.json").read_text()),
        "int8_layers": len(swapped),
        "sentences": int(ids.shape[0]),
        "retrieval_accuracy": {"fp32": _retrieval(e32, labels), "fp16": _retrieval(e16, labels),
                               "int8 (Int8Linear, Triton)": _retrieval(e8, labels)},
        "parity_vs_fp32": {"fp16": _parity(e16, e32), "int8 (Int8Linear, Triton)": _parity(e8, e32)},
        "latency_batch32_seq64": {"fp32 eager": _latency(fp32, bi, bm), "fp16 eager": _latency(fp16, bi, bm),
                                  "int8 Int8Linear (Triton) eager": _latency(int8, bi, bm)},
        "timing": "CUDA events around one forward of 32 sentences x 64 tokens, inputs on the device, after 5 warm-ups",
    }
    print(json.dumps(result, indent=1))
    return result


# Cases of these backends need a package the reference GPU image cannot install (no TensorRT wheel for its
# Python/CUDA, no onnxruntime-gpu built for CUDA 13 there, and no network during the run).
NOT_ON_REFERENCE_IMAGE = {"tensorrt": "tensorrt (TensorRT)", "onnxruntime": "onnxruntime-gpu"}
REFERENCE_IMAGE_REASON = ("not installable on the reference image: {pkg} (with it installed, run "
                          "bash scripts/gpu_check.sh --with-tensorrt)")


def reference_image_skip(case: Any) -> str | None:
    """Why a GPU case cannot run on the reference image, or None when it can."""
    pkg = NOT_ON_REFERENCE_IMAGE.get(case.backend_name)
    return REFERENCE_IMAGE_REASON.format(pkg=pkg) if pkg and case.device.startswith("cuda") else None


def model_cases(run: Run, reference_image: bool = False) -> dict[str, Any]:
    """The suite's cases through the harness's own per-case child processes, into a run file the reports read
    (``runs/RUN_ID.jsonl`` under the output folder; ``costbench store rebuild`` and the reports take it as is)."""
    import tempfile
    from datetime import datetime, timezone

    import costbench
    from costbench.core.metrics import DEVICE_LATENCY, LATENCY
    from costbench.harness.machine.env import fingerprint
    from costbench.harness.execute.plan import PLANNED, make_plan
    from costbench.harness.execute.executor import CaseOutcome, run_case_in_child
    from costbench.harness.execute.runner import git_commit, new_run_id
    from costbench.harness.results.store import RunFile
    from costbench.harness.execute.load import load_suite

    cache = Path(os.environ.get("COSTBENCH_CACHE_DIR", "/tmp/costbench-cache"))
    suite = load_suite(ROOT / "scripts" / "gpu_check_suite.toml")
    cases = make_plan(suite)
    order = {"torch-cuda": 0, "torch-cuda-graph": 1, "ort-cuda": 2, "tensorrt": 3, "ort-tensorrt": 4, "torch-compile": 5}
    cases.sort(key=lambda c: (order.get(c.backend, 9), c.model))
    env = fingerprint()
    run_id = new_run_id()
    header = {"run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(ROOT), "harness_version": costbench.__version__, "env_id": env["env_id"],
              "env": env, "suite": {"name": suite.name, "source": str(suite.source), "spec": suite.model_dump(mode="json")},
              "only": [], "timeout_override": None, "planned_cases": len(cases), "argv": sys.argv}
    run_file = RunFile.create(run.out, header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="costbench-gpu-check-") as tmp:
        for case in cases:
            unavailable = reference_image_skip(case) if reference_image else None
            if unavailable:
                outcome = CaseOutcome(case, "skipped", unavailable)
            elif case.status != PLANNED:
                outcome = CaseOutcome(case, case.status, case.reason)
            elif run.left() < 25:
                outcome = CaseOutcome(case, "skipped", BUDGET_SKIP)
            else:
                case.timeout_s = max(30.0, min(case.timeout_s, run.left() - 10))
                outcome = run_case_in_child(case, cache, Path(tmp))
            run_file.append(outcome.record(run_id))
            metrics = {m["metric"]: m["value"] for m in outcome.metrics}
            rows.append({**case.key(), "status": outcome.status, "reason": outcome.reason,
                         "seconds": round(outcome.elapsed_s, 1) if outcome.elapsed_s else None,
                         "metrics": {k: v for k, v in metrics.items()
                                     if k.endswith(("_p50", "_p99")) or k in ("throughput", "peak_device_memory",
                                                                               "first_inference", "load_time",
                                                                               "backend_build_time", "build_time",
                                                                               "top1_agreement", "min_cosine")},
                         "session": (outcome.info or {}).get("session")})
            p50, dev = metrics.get(LATENCY.p50), metrics.get(DEVICE_LATENCY.p50)
            print(f"{case.model:<20} {case.variant:<9} {case.backend:<18} {outcome.status:<8} "
                  + (f"p50 {p50:.3f} ms, device {dev:.3f} ms" if p50 is not None and dev is not None
                     else outcome.reason[:110]), flush=True)
    return {"run_file": str(run_file.path.relative_to(run.out)), "cases": rows}


# ------------------------------------------------------------------------------------------------ main


def summary(record: dict[str, Any]) -> str:
    from costbench.core.metrics import DEVICE_LATENCY, LATENCY

    lines = ["# costbench GPU check", "", f"command: `{record['command']}`", ""]
    env = record["stages"].get("environment", {}).get("result") or {}
    if env:
        lines += [f"GPU: {env['gpu']['name']} (sm_{env['gpu']['capability'].replace('.', '')}, "
                  f"{env['gpu']['multiprocessors']} SMs), torch {env['versions'].get('torch')}, "
                  f"triton {env['versions'].get('triton')}, CUDA {env.get('torch_cuda')}", ""]
    lines += ["| stage | status | seconds | note |", "| --- | --- | --- | --- |"]
    for name, st in record["stages"].items():
        note = st.get("why") or st.get("error") or ""
        res = st.get("result")
        if isinstance(res, dict) and "all_ours_ok" in res:
            note = f"ours exact/within tolerance everywhere: {res['all_ours_ok']}"
        if isinstance(res, dict) and "all_ok" in res:
            note = f"exact/within tolerance everywhere: {res['all_ok']} ({res['launcher']['launcher']})"
        lines.append(f"| {name} | {st['status']} | {st.get('seconds', '-')} | {str(note)[:160]} |")
    verdict_ = record.get("exit")
    if verdict_:
        lines += ["", f"exit status: {verdict_['code']}"]
        lines += [f"- failure: {f}" for f in verdict_["failures"]]
        lines += [f"- cut by the time budget: {i}" for i in verdict_["incomplete"]]
    models = (record["stages"].get("models: torch CUDA backend (+ ORT/TensorRT where installed)") or {}).get("result")
    if isinstance(models, dict) and models.get("cases"):
        lines += ["", "| model | variant | backend | status | p50 ms | device p50 ms | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in models["cases"]:
            m = c.get("metrics") or {}
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {c.get('model')} | {c.get('variant')} | {c.get('backend')} | {c.get('status')} | "
                         f"{fmt(m.get(LATENCY.p50))} | {fmt(m.get(DEVICE_LATENCY.p50))} | "
                         f"{str(c.get('reason') or '')[:120]} |")
    bench = record["stages"].get("benchmark", {}).get("result")
    if bench:
        lines += ["", f"int8 peak (measured, {bench['peak']['mma']}): {bench['peak']['tops']:.0f} TOPS", "",
                  "| shape | implementation | µs | TOPS | % peak |", "| --- | --- | --- | --- | --- |"]
        for row in bench["shapes"]:
            for s in row["series"]:
                if s["tops"]:
                    lines.append(f"| {row['m']}x{row['k']}x{row['n']} | {s['name']} | {s['median_us']:.1f} | "
                                 f"{s['tops']:.0f} | {s['pct_of_peak']:.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/gpu-check)")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for all stages together")
    parser.add_argument("--quick", action="store_true", help="fewer shapes everywhere")
    parser.add_argument("--reference-image", action="store_true",
                        help="skip the TensorRT and onnxruntime-gpu cases: not installable on the reference image")
    parser.add_argument("--stages", default="", help="comma-separated stage-name prefixes to run (e.g. "
                        "'benchmark,models' to rerun those within a short budget); default: every stage")
    args = parser.parse_args()
    out = args.out or ROOT / "results" / "gpu-check"
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, args.budget, [p.strip() for p in args.stages.split(",") if p.strip()])

    import torch

    if not torch.cuda.is_available():
        from costbench.kernels.gpu.probe import summary as probe_summary

        run.record["stages"]["environment"] = {"status": "failed", "error": "no CUDA GPU", "probes": probe_summary()}
        run.save()
        print("no CUDA GPU here:", probe_summary())
        return EXIT_NO_GPU

    run.stage("environment", environment)
    run.stage("triton: validate every config", lambda: triton_validation(args.quick), needs_s=30)
    run.stage("triton: wgmma per config", triton_configs, needs_s=15)
    run.stage("cuda-c: nvcc build and SASS", cuda_c_build, needs_s=20)
    cupy_ok = run.stage("cuda-c: validate via cupy", lambda: cuda_c_validation("cupy", args.quick), needs_s=30)
    pycuda_ready = PYCUDA_DONE.exists() and PYCUDA_DONE.read_text().strip() == "0"
    launcher = "pycuda" if pycuda_ready and wait_for_pycuda(1) is None else ("cupy" if cupy_ok else None)
    run.stage("benchmark", lambda: benchmark(args.quick, launcher), needs_s=60)
    run.stage("pycuda: build, validate", lambda: pycuda_stage(args.quick, run), needs_s=20)
    run.stage("minilm: Int8Linear on CUDA", minilm_stage, needs_s=30)
    run.stage("models: torch CUDA backend (+ ORT/TensorRT where installed)",
              lambda: model_cases(run, args.reference_image), needs_s=30)
    code, failures, incomplete = verdict(run.record)
    run.record["exit"] = {"code": code, "failures": failures, "incomplete": incomplete}
    run.save()
    text = summary(run.record)
    (out / "summary.md").write_text(text)
    print(text)
    return code


def verdict(record: dict[str, Any]) -> tuple[int, list[str], list[str]]:
    """(exit status, real failures, what the time budget cut) of a finished check; see the module docstring."""
    failures, incomplete = [], []
    for name, st in record["stages"].items():
        if st["status"] == "failed":
            failures.append(f"stage {name!r} failed: {st.get('error', '')}")
        elif st["status"] == "skipped":
            incomplete.append(f"stage {name!r}: {st.get('why', '')}")
        result = st.get("result")
        flag = CORRECTNESS_FLAGS.get(name)
        if flag and isinstance(result, dict) and result.get(flag) is False:
            wrong = sorted({f"{r['impl']} ({r['kind']})" for r in result.get("results", [])
                            if not r.get("ok") and not str(r.get("impl", "")).startswith("torch")})
            failures.append(f"stage {name!r}: not exact/within tolerance: {', '.join(wrong) or 'see results'}")
        if isinstance(result, dict) and isinstance(result.get("cases"), list):
            for c in result["cases"]:
                label = f"{c.get('model')} {c.get('variant')} {c.get('backend')}"
                if c.get("status") == "failed":
                    failures.append(f"case {label} failed: {c.get('reason', '')}"[:300])
                elif c.get("status") == "skipped" and c.get("reason") == BUDGET_SKIP:
                    incomplete.append(f"case {label}: {BUDGET_SKIP}")
    code = EXIT_FAILED if failures else EXIT_INCOMPLETE if incomplete else EXIT_OK
    return code, failures, incomplete


if __name__ == "__main__":
    sys.exit(main())
