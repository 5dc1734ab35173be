"""Builds stay out of the measured process: a backend's build_cache hook runs in the worker's build process, the
measured process's prepare reuses what it left, and the build is reported apart (backend_build_time) from
load_time. Shown on the CPU with torch.compile (inductor's on-disk caches); TensorRT engines and the ONNX
Runtime TensorRT provider's engine cache go through the same hook on a GPU (scripts/gpu_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from costbench.backends.base import Backend
from costbench.backends.onnxruntime_backend import OnnxRuntimeBackend
from costbench.backends.tensorrt_backend import TensorRTBackend
from costbench.backends.torch_backend import TorchBackend
from costbench.core.artifacts import FORMAT_TORCH, content_key
from costbench.harness.execute.plan import Case
from costbench.harness.measure.worker import _build_stamp

HERE = Path(__file__).resolve().parents[1]  # tests/harness: tiny_factory.py
MODEL = {"id": "factory-net", "source": "torch", "factory": "tiny_factory:make_tiny",
         "inputs": [{"name": "input", "shape": [3, 8, 8]}]}
SINGLE_STREAM = {"kind": "single_stream", "warmup_count": 1, "min_count": 3, "min_duration_s": 0.0}


def _case(backend_options: dict, backend: str = "torch", device: str = "cpu") -> Case:
    return Case(model="factory-net", variant="fp32", backend=backend, device=device, scenario="single_stream",
                batch_size=2, backend_name=backend, recipe="fp32", recipe_options={},
                backend_options=backend_options, model_spec=MODEL, scenario_spec=SINGLE_STREAM,
                artifact_format=FORMAT_TORCH, timeout_s=600, measure_accuracy=False)


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
               COSTBENCH_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", **extra)
    return env


def _worker(args: list[str], case: Case, cache: Path, tmp: Path) -> dict:
    job, result = tmp / "job.json", tmp / "result.json"
    job.write_text(json.dumps({"case": case.to_dict(), "cache_dir": str(cache)}))
    result.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "costbench.harness.measure.worker", *args, str(job), str(result)],
                          env=_env(cache), capture_output=True, text=True, timeout=900)
    assert result.exists(), proc.stderr[-3000:]
    payload = json.loads(result.read_text())
    assert payload["status"] == "ok", payload.get("traceback") or payload
    return payload


def test_which_backends_build_in_the_build_process():
    assert Backend.builds_for is not None  # the hook exists on the contract, off by default
    ort, trt, torch_ = OnnxRuntimeBackend(), TensorRTBackend(), TorchBackend()
    assert not ort.builds_for(ort.parse_options({}), "cpu")
    assert not ort.builds_for(ort.parse_options({}), "cuda")  # the CUDA provider builds nothing ahead
    assert ort.builds_for(ort.parse_options({"provider": "tensorrt"}), "cuda")
    assert trt.builds_for(trt.parse_options({}), "cuda")
    assert not torch_.builds_for(torch_.parse_options({}), "cpu")
    assert not torch_.builds_for(torch_.parse_options({"compile": True, "compile_backend": "eager"}), "cpu")
    assert torch_.builds_for(torch_.parse_options({"compile": True}), "cuda")


def test_the_build_stamp_covers_the_backend_only_where_it_builds(tmp_path):
    eager, compiled = _case({"threads": 1}), _case({"compile": True, "threads": 1})
    # Unchanged for backends that build nothing: stamps written before stay valid.
    plain = content_key({"model": MODEL, "recipe": "fp32", "options": {}, "format": FORMAT_TORCH, "reference": False})
    assert _build_stamp(eager, tmp_path) == tmp_path / "built" / plain
    assert _build_stamp(compiled, tmp_path) != _build_stamp(eager, tmp_path)
    other_batch = _case({"compile": True, "threads": 1})
    other_batch.batch_size = 4
    assert _build_stamp(other_batch, tmp_path) != _build_stamp(compiled, tmp_path)


def test_torch_compile_is_built_in_the_build_process_and_not_in_load_time(tmp_path):
    case = _case({"compile": True, "threads": 1})
    warm_cache, work = tmp_path / "warm", tmp_path / "work"
    work.mkdir()
    # The build process alone: the hook runs there and compiles (inductor cache misses, then written to disk).
    built = _worker(["--build"], case, warm_cache, work)
    hook = built["backend_build"]
    assert hook["backend"] == "torch" and hook["fxgraph_cache_miss"] >= 1 and hook["cached"] is False
    assert Path(hook["cache_dir"]) == warm_cache / "torchinductor" and any((warm_cache / "torchinductor").iterdir())

    # The measured process (its stamp holds: no second build) compiles from the cache, in load_time.
    measured = _worker([], case, warm_cache, work)
    metrics = {m["metric"]: m for m in measured["metrics"]}
    compiled = measured["info"]["session"]["compile"]
    assert compiled["fxgraph_cache_hit"] >= 1 and compiled["fxgraph_cache_miss"] == 0
    assert "backend_build_time" not in metrics  # built by an earlier build process, not by this case
    assert metrics["load_time"]["details"]["scope"].startswith("prepare, reusing what the build process built")
    warm_load_ms = metrics["load_time"]["value"]

    # A case whose build process runs in the same worker call reports the build apart from load_time.
    fresh = _worker([], case, tmp_path / "fresh", work)
    fresh_metrics = {m["metric"]: m for m in fresh["metrics"]}
    assert fresh_metrics["backend_build_time"]["details"]["fxgraph_cache_miss"] >= 1
    assert fresh["info"]["session"]["compile"]["fxgraph_cache_miss"] == 0

    # Without the build process (prepare on a cold inductor cache, in a fresh process) the compile is in load_time.
    artifact_path = measured["info"]["artifact"]["path"]
    probe = ("import json, sys, time\n"
             "from pathlib import Path\n"
             "from costbench.backends.torch_backend import TorchBackend\n"
             "from costbench.core.artifacts import FORMAT_TORCH, Artifact, InputSpec\n"
             "art = Artifact(FORMAT_TORCH, Path(sys.argv[1]), 'k', [InputSpec('input', (3, 8, 8))], ['logits'])\n"
             "b = TorchBackend()\n"
             "t = time.perf_counter(); s = b.prepare(art, b.parse_options({'compile': True, 'threads': 1}), 2, 'cpu')\n"
             "print(json.dumps({'load_ms': (time.perf_counter() - t) * 1e3, 'compile': s.info()['compile']}))\n")
    proc = subprocess.run([sys.executable, "-c", probe, artifact_path], capture_output=True, text=True, timeout=900,
                          env=_env(tmp_path / "cold", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cold-inductor")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cold = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cold["compile"]["fxgraph_cache_miss"] >= 1 and cold["compile"]["fxgraph_cache_hit"] == 0
    assert warm_load_ms < cold["load_ms"], (warm_load_ms, cold)
