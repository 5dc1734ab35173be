"""The NVIDIA path where there is no NVIDIA GPU: every probe names exactly what is missing, the plan keeps
GPU cases as skipped with those reasons, TensorRT refuses asymmetric Q/DQ before building, and the option
plumbing (ORT providers, torch.compile) works. Checks that need a GPU are in scripts/gpu_check.py.
"""

from __future__ import annotations

import sys

import numpy as np
import pydantic
import pytest
import torch

from costbench.backends import load_registry
from costbench.backends.onnxruntime_backend import OnnxRuntimeBackend, gpu_providers
from costbench.backends.tensorrt_backend import TensorRTBackend, TensorRTOptions, qdq_report
from costbench.backends.torch_backend import TorchBackend
from costbench.backends.base import Session
from costbench.core.artifacts import FORMAT_ONNX, FORMAT_TORCH, Artifact
from costbench.kernels.gpu import probe

NO_CUDA = torch.version.cuda is None or not torch.cuda.is_available()
needs_no_gpu = pytest.mark.skipif(not NO_CUDA, reason="this machine has a usable CUDA GPU")


def test_tensorrt_registers_through_its_entry_point():
    entry = load_registry()["tensorrt"]
    assert entry.load_error == ""
    assert type(entry.backend) is TensorRTBackend
    assert entry.backend.capabilities.devices == ("cuda",)


def test_tensorrt_probe_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if never installed
    cuda = torch.version.cuda.split(".")[0] if torch.version.cuda else "12"
    assert TensorRTBackend().probe().reason == f"tensorrt is not installed: pip install tensorrt-cu{cuda}"


@needs_no_gpu
def test_gpu_probes_give_the_exact_reason_here():
    expected = (f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
                if torch.version.cuda is None else "no CUDA device is visible (torch.cuda.is_available() is False)")
    assert probe.torch_cuda_reason() == expected
    assert TensorRTBackend().probe_device("cuda").reason == expected
    torch_reason = TorchBackend().probe_device("cuda").reason
    assert torch_reason == (f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch"
                            if torch.version.cuda is None else expected)
    assert probe.triton_gemm_reason() == (probe.triton_reason() or expected)
    assert probe.cuda_gemm_reason() == expected
    assert probe.summary()["int8 tensor cores"] == expected


def test_onnxruntime_cuda_probe_names_the_gpu_build():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime is a GPU build")
    reason = OnnxRuntimeBackend().probe_device("cuda").reason
    assert reason == f"onnxruntime {ort.__version__} is the CPU build: pip install onnxruntime-gpu"
    assert OnnxRuntimeBackend().probe_device("cpu").available


def test_launcher_probes_name_the_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert probe.pycuda_reason().startswith("pycuda is not installed: pip install pycuda")
    assert probe.cupy_reason() == "cupy is not installed: pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13)"
    assert probe.launcher_reason().startswith("no launcher for the CUDA C kernel: pycuda is not installed")
    from costbench.kernels.gpu import cuda_gemm

    with pytest.raises(RuntimeError, match="the pycuda launcher is unavailable: pycuda is not installed"):
        cuda_gemm.make_launcher("pycuda")


def test_probe_summary_never_raises_and_names_every_piece():
    summary = probe.summary()
    assert set(summary) == {"torch CUDA", "int8 tensor cores", "triton", "nvcc", "pycuda", "cupy"}
    assert all(isinstance(v, str) and v for v in summary.values())


GPU_SUITE = """
name = "gpu"
models = ["digits-cnn"]
variants = ["fp32", {name = "int8-sym", recipe = "int8", activation_symmetric = true}]
backends = [
  {name = "tensorrt", device = "cuda"},
  {name = "onnxruntime", label = "ort-trt", device = "cuda", provider = "tensorrt"},
  {name = "torch", label = "torch-cuda", device = "cuda", cuda_graph = true, compile = true},
]
scenarios = ["single_stream"]
batch_sizes = [1]
"""


@needs_no_gpu
def test_plan_keeps_gpu_cases_as_skipped_with_the_reason(tmp_path):
    from costbench.harness.execute.plan import SKIPPED, make_plan
    from costbench.harness.execute.load import load_suite

    path = tmp_path / "gpu.toml"
    path.write_text(GPU_SUITE)
    cases = make_plan(load_suite(path))
    assert len(cases) == 6 and all(c.status == SKIPPED for c in cases)
    reasons = {(c.backend, c.variant): c.reason for c in cases}
    for variant in ("fp32", "int8-sym"):
        assert reasons[("tensorrt", variant)].startswith("backend tensorrt unavailable: tensorrt is not installed") or \
            reasons[("tensorrt", variant)].startswith("backend tensorrt cannot use cuda:")
        assert reasons[("ort-trt", variant)].startswith("backend onnxruntime cannot use cuda: onnxruntime ")
    assert reasons[("torch-cuda", "fp32")].startswith("backend torch cannot use cuda: ")
    # An ONNX Q/DQ variant can never run on torch, GPU or not: that is said first, on every machine.
    assert reasons[("torch-cuda", "int8-sym")].startswith("variant built by 'int8' comes as onnx")


# ------------------------------------------------------------------------------------------------ TensorRT


def _quantized(tmp_path, tiny, symmetric: bool):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self._it = iter([{"input": rng.standard_normal((2, *tiny.input_shape)).astype(np.float32)}
                             for _ in range(4)])

        def get_next(self):
            return next(self._it, None)

    out = tmp_path / f"q{int(symmetric)}.onnx"
    quantize_static(str(tiny.artifacts[FORMAT_ONNX].path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    base = tiny.artifacts[FORMAT_ONNX]
    return Artifact(FORMAT_ONNX, out, "test", base.inputs, base.outputs)


def test_qdq_report_accepts_symmetric_int8_and_names_asymmetric_nodes(tmp_path, tiny):
    sym = qdq_report(_quantized(tmp_path, tiny, True).path)
    asym = qdq_report(_quantized(tmp_path, tiny, False).path)
    assert sym["qdq_nodes"] > 0 and sym["problems"] == []
    assert asym["qdq_nodes"] > 0 and asym["problems"]
    assert any("uint8 zero point" in p for p in asym["problems"])
    assert qdq_report(tiny.artifacts[FORMAT_ONNX].path) == {"qdq_nodes": 0, "int32_bias_dequantize": 0, "problems": []}


def test_tensorrt_refuses_asymmetric_qdq_before_building(tmp_path, tiny):
    artifact = _quantized(tmp_path, tiny, False)
    with pytest.raises(ValueError, match=r"symmetric int8 Q/DQ.*activation_symmetric = true"):
        TensorRTBackend().build_engine(None, artifact, TensorRTOptions(), 1)  # fails before touching TensorRT


def test_tensorrt_engine_key_covers_what_changes_the_engine(tmp_path, tiny):
    backend = TensorRTBackend()
    art = tiny.artifacts[FORMAT_ONNX]
    base = dict(trt_version="10.0", artifact=art, opts=TensorRTOptions(), batch_size=1, gpu="H200", capability=(9, 0))
    key = backend.engine_material(**base)
    for change in (dict(batch_size=8), dict(opts=TensorRTOptions(typing="weak", fp16=True)), dict(gpu="H100"),
                   dict(trt_version="10.1"), dict(artifact=_quantized(tmp_path, tiny, True))):
        assert backend.engine_material(**{**base, **change}) != key, change
    assert backend.engine_material(**base) == key


def test_tensorrt_options_and_device_checks(tiny):
    backend = TensorRTBackend()
    with pytest.raises(ValueError, match=r"^tensorrt backend: device 'cpu' is not supported; supported: cuda$"):
        backend.prepare(tiny.artifacts[FORMAT_ONNX], TensorRTOptions(), 1, "cpu")
    with pytest.raises(pydantic.ValidationError,
                       match=r"for TensorRTOptions\ntyping\n  Input should be 'strong' or 'weak'"):
        backend.parse_options({"typing": "loose"})
    assert backend.probe_device("cpu").reason == "tensorrt runs on CUDA GPUs, not 'cpu'"


# ------------------------------------------------------------------------------------------------ ONNX Runtime


def test_onnxruntime_provider_lists():
    backend = OnnxRuntimeBackend()
    trt = gpu_providers(backend.parse_options({"provider": "tensorrt", "trt_fp16": True,
                                               "trt_engine_cache_dir": "/tmp/e"}), "cuda:1")
    assert trt == [("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True,
                                                  "trt_engine_cache_enable": True, "trt_engine_cache_path": "/tmp/e"}),
                   ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert gpu_providers(backend.parse_options({}), "cuda") == [("CUDAExecutionProvider", {"device_id": 0}),
                                                                "CPUExecutionProvider"]


def test_onnxruntime_gpu_options_are_refused_on_cpu_and_cuda_needs_the_gpu_build(tiny):
    import onnxruntime as ort

    backend = OnnxRuntimeBackend()
    with pytest.raises(ValueError, match="provider apply to device='cuda' only"):
        backend.prepare(tiny.artifacts[FORMAT_ONNX], backend.parse_options({"provider": "tensorrt"}), 1, "cpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="is the CPU build: pip install onnxruntime-gpu"):
            backend.prepare(tiny.artifacts[FORMAT_ONNX], backend.parse_options({}), 1, "cuda")


# ------------------------------------------------------------------------------------------------ torch


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_torch_compile_option_wraps_the_module(tiny, restore_torch_threads, rng):
    backend = TorchBackend()
    # The 'eager' dynamo backend traces without code generation: the wiring, in seconds.
    session = backend.prepare(tiny.artifacts[FORMAT_TORCH], backend.parse_options(
        {"compile": True, "compile_backend": "eager"}), 2, "cpu")
    x = rng.standard_normal((2, *tiny.input_shape)).astype(np.float32)
    with torch.inference_mode():
        expected = tiny.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run({"input": x})[0], expected, rtol=1e-5, atol=1e-5)
    assert session.info()["mode"] == "torch.compile(backend=eager, mode=default)"
    with pytest.raises(ValueError, match="compile_mode applies to the inductor backend"):
        backend.prepare(tiny.artifacts[FORMAT_TORCH], backend.parse_options(
            {"compile": True, "compile_backend": "eager", "compile_mode": "max-autotune"}), 1, "cpu")


def test_torch_precisions_include_half_types():
    assert TorchBackend.capabilities.precisions == ("fp32", "fp16", "bf16")
    assert TensorRTBackend.capabilities.precisions == ("fp32", "fp16", "int8")


# ------------------------------------------------------------------------------------------------ the GPU check


def test_gpu_check_suite_file_plans(tmp_path):
    from pathlib import Path

    from costbench.harness.execute.plan import PLANNED, make_plan
    from costbench.harness.execute.load import load_suite

    suite = load_suite(Path(__file__).resolve().parents[2] / "scripts" / "gpu_check_suite.toml")
    cases = make_plan(suite)
    assert {c.backend for c in cases} == {"torch-cuda", "torch-cuda-graph", "torch-compile", "ort-cuda",
                                          "ort-tensorrt", "tensorrt"}
    assert all(c.device == "cuda" for c in cases)
    if NO_CUDA:
        assert not any(c.status == PLANNED for c in cases)
        assert all(c.reason for c in cases)


@needs_no_gpu
def test_gpu_check_without_a_gpu_exits_2_and_records_the_probes(tmp_path):
    import json
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["stages"]["environment"]["probes"]["torch CUDA"] == probe.torch_cuda_reason()


# ------------------------------------------------------------------------------------------------ ORT on CUDA: device time


def test_onnxruntime_gpu_providers_compute_on_the_sessions_stream():
    from costbench.backends.onnxruntime_backend import gpu_providers

    backend = OnnxRuntimeBackend()
    cuda = gpu_providers(backend.parse_options({}), "cuda:1", stream=0x7F00)
    assert cuda == [("CUDAExecutionProvider", {"device_id": 1, "user_compute_stream": str(0x7F00)}),
                    "CPUExecutionProvider"]
    trt = gpu_providers(backend.parse_options({"provider": "tensorrt"}), "cuda", "/cache/engines", 0x7F00)
    assert trt[0] == ("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": False,
                                                    "user_compute_stream": str(0x7F00), "trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": "/cache/engines"})
    assert trt[1] == ("CUDAExecutionProvider", {"device_id": 0, "user_compute_stream": str(0x7F00)})
    # Stream 0 is torch's default stream, which ONNX Runtime reads as "no user stream": never passed.
    assert gpu_providers(backend.parse_options({}), "cuda", stream=0)[0] == ("CUDAExecutionProvider", {"device_id": 0})


def test_onnxruntime_gpu_session_times_on_the_device_and_the_host_fallback_says_why_not(tiny):
    import onnxruntime as ort

    from costbench.backends import onnxruntime_backend as ob

    # The I/O-binding session's convention names the device clock on its own stream; the fallback's does not.
    assert "CUDA events recorded on the session's stream" in ob.OnnxRuntimeGpuSession.timing.clock
    assert "run_with_iobinding on device buffers" in ob.OnnxRuntimeGpuSession.timing.boundary
    assert ob.OnnxRuntimeGpuHostSession.timing.clock.startswith("host time.perf_counter_ns")
    assert ob.OnnxRuntimeGpuSession.device_timer is not Session.device_timer
    stream, why = ob.device_stream("cuda")
    if NO_CUDA:
        assert stream is None and "has no usable CUDA" in why
    # The fallback runs (shown here on a CPU InferenceSession) and records why there is no device timer.
    art = tiny.artifacts[FORMAT_ONNX]
    cpu = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    session = ob.OnnxRuntimeGpuHostSession(cpu, art, 2, OnnxRuntimeBackend().parse_options({}), "no CUDA torch here")
    out = session.run(ob.zero_inputs(art, 2))
    assert out[0].shape[0] == 2 and session.device_timer() is None
    assert session.info()["device_timer"] == "none: no CUDA torch here"


def test_io_binding_element_types_and_device_buffer_dtypes():
    from costbench.backends import onnxruntime_backend as ob

    assert ob.binding_element_type("tensor(float)") is np.float32
    assert ob.binding_element_type("tensor(float16)") is np.float16
    assert ob.binding_element_type("tensor(bfloat16)") == 16  # onnx.TensorProto.BFLOAT16: numpy has none
    assert ob.torch_dtype(torch, "tensor(bfloat16)") is torch.bfloat16
    assert ob.torch_dtype(torch, "tensor(int64)") is torch.int64
    with pytest.raises(TypeError, match=r"tensor\(string\)"):
        ob.binding_element_type("tensor(string)")


def test_build_hooks_need_the_gpu_and_say_so(tiny):
    from pathlib import Path

    if not NO_CUDA:
        pytest.skip("a usable GPU is here: scripts/gpu_check.py runs these hooks for real")
    art = tiny.artifacts[FORMAT_ONNX]
    with pytest.raises(RuntimeError, match=r"^tensorrt backend: "):
        TensorRTBackend().build_cache(art, TensorRTOptions(), 1, "cuda", Path("/nonexistent"))
    ort_backend = OnnxRuntimeBackend()
    with pytest.raises(RuntimeError, match=r"^onnxruntime backend: "):
        ort_backend.build_cache(art, ort_backend.parse_options({"provider": "tensorrt"}), 1, "cuda",
                                Path("/nonexistent"))
    assert ort_backend.build_cache(art, ort_backend.parse_options({}), 1, "cpu", Path("/nonexistent")) is None
