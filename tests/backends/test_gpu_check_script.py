"""scripts/gpu_check.py's exit status means something: 0 only when every check ran and passed, non-zero on a
real failure (a kernel not exact, a stage that raised, a failed case) or when the budget cut something; the
TensorRT and onnxruntime-gpu cases are skipped on the reference image with that reason. The verdict is
computed from the record the script writes, so it is checked here on records, without a GPU."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from costbench.harness.execute.plan import make_plan
from costbench.harness.execute.load import load_suite

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_script", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ok(result=None):
    return {"status": "ok", "result": result, "seconds": 1.0}


def _record(**stages):
    return {"stages": {"environment": _ok({}), **stages}}


def test_all_passed_is_0(gpu_check):
    rec = _record(**{"triton: validate every config": _ok({"all_ours_ok": True, "results": []}),
                     "cuda-c: validate via cupy": _ok({"all_ok": True, "results": []}),
                     "pycuda: build, validate": _ok({"all_ok": True, "results": []}),
                     "models: torch CUDA backend (+ ORT/TensorRT where installed)": _ok({"cases": [
                         {"model": "digits-cnn", "variant": "fp32", "backend": "torch-cuda", "status": "ok"},
                         {"model": "digits-cnn", "variant": "fp32", "backend": "tensorrt", "status": "skipped",
                          "reason": gpu_check.REFERENCE_IMAGE_REASON.format(pkg="tensorrt (TensorRT)")}]})})
    assert gpu_check.verdict(rec) == (0, [], [])


def test_a_kernel_that_is_not_exact_is_1_and_named(gpu_check):
    rec = _record(**{"cuda-c: validate via cupy": _ok({"all_ok": False, "results": [
        {"impl": "cuda-c 64x64 (cupy)", "kind": "int32", "ok": False},
        {"impl": "torch._int_mm", "kind": "int32", "ok": False}]})})  # a peer's error is reported, not ours
    code, failures, _ = gpu_check.verdict(rec)
    assert code == 1 and failures == ["stage 'cuda-c: validate via cupy': not exact/within tolerance: "
                                      "cuda-c 64x64 (cupy) (int32)"]


def test_a_stage_that_raised_is_1_even_when_its_result_is_missing(gpu_check):
    # The old verdict read only the correctness flags: a PyCUDA stage that raised (no result) passed as 0.
    rec = _record(**{"pycuda: build, validate": {"status": "failed", "error": "RuntimeError: the PyCUDA build "
                                                 "failed (exit 1; see pycuda_build.log)", "seconds": 3.0}})
    code, failures, _ = gpu_check.verdict(rec)
    assert code == 1 and "PyCUDA build failed" in failures[0]


def test_a_failed_case_is_1_and_a_budget_cut_is_7(gpu_check):
    models = "models: torch CUDA backend (+ ORT/TensorRT where installed)"
    failed = _record(**{models: _ok({"cases": [{"model": "m", "variant": "fp16", "backend": "torch-compile",
                                                "status": "failed", "reason": "killed by signal 6"}]})})
    assert gpu_check.verdict(failed)[0] == 1
    cut = _record(**{models: _ok({"cases": [{"model": "m", "variant": "fp16", "backend": "torch-cuda",
                                             "status": "skipped", "reason": gpu_check.BUDGET_SKIP}]}),
                     "benchmark": {"status": "skipped", "why": "time budget: 10 s left, stage needs ~60 s"}})
    code, failures, incomplete = gpu_check.verdict(cut)
    assert code == 7 and failures == [] and len(incomplete) == 2


def test_reference_image_skips_tensorrt_and_onnxruntime_gpu_cases_with_that_reason(gpu_check):
    cases = make_plan(load_suite(ROOT / "scripts" / "gpu_check_suite.toml"))
    reasons = {c.backend: gpu_check.reference_image_skip(c) for c in cases}
    assert reasons["torch-cuda"] is None and reasons["torch-compile"] is None and reasons["torch-cuda-graph"] is None
    for label, pkg in (("tensorrt", "tensorrt"), ("ort-cuda", "onnxruntime-gpu"), ("ort-tensorrt", "onnxruntime-gpu")):
        assert reasons[label].startswith("not installable on the reference image: " + pkg), label
        assert "--with-tensorrt" in reasons[label]


def test_the_shell_script_parses_and_says_what_is_missing_without_the_offline_folder(tmp_path):
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0
    if (ROOT / ".gpu-offline" / "wheels").is_dir():
        pytest.skip("a prepared .gpu-offline is here: the script would install and run")
    out = tmp_path / "check"
    # OUT_DIR is relative to where the script starts, not to the checkout it cds into.
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "check"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, timeout=60)
    assert proc.returncode == 3 and "gpu_check_prepare.py" in proc.stderr and ".gpu-offline" in proc.stderr
    assert out.is_dir() and not (ROOT / "check").exists()
