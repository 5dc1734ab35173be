"""The torch, onnxruntime and openvino backends against real runtimes and a tiny real model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pydantic
import pytest
import torch

from costbench.backends import load_registry
from costbench.backends.base import BackendOptions
from costbench.backends.onnxruntime_backend import OnnxRuntimeBackend
from costbench.backends.openvino_backend import OpenVinoBackend
from costbench.backends.torch_backend import TorchBackend
from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH, Artifact, InputSpec

BACKENDS = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend}

# (backend, artifact format, options) for the numerical checks. OpenVINO is pinned to f32 because
# its CPU plugin otherwise runs fp32 models in bf16 on AMX/avx512_bf16 CPUs (tested separately).
RUNS = [
    ("torch", FORMAT_TORCH, {}),
    ("onnxruntime", FORMAT_ONNX, {}),
    ("openvino", FORMAT_OPENVINO, {"inference_precision": "f32"}),
    ("openvino", FORMAT_ONNX, {"inference_precision": "f32"}),
]


@pytest.fixture
def restore_torch_threads():
    """The torch backend sets process-global threads (fine in a per-case child, not in pytest)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _prepare(name: str, artifact: Artifact, options: dict, batch_size: int):
    backend = BACKENDS[name]()
    return backend.prepare(artifact, backend.parse_options(options), batch_size)


def _reference(tiny, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return tiny.module(torch.from_numpy(x)).numpy()


def _fresh_input(rng: np.random.Generator, shape: tuple[int, ...], batch_size: int) -> np.ndarray:
    return rng.standard_normal((batch_size, *shape)).astype(np.float32)


def test_registry_loads_builtins_through_entry_points():
    registry = load_registry()
    for name, cls in BACKENDS.items():
        entry = registry[name]
        assert entry.load_error == ""
        assert type(entry.backend) is cls
        assert entry.backend.name == name


@pytest.mark.parametrize("name", list(BACKENDS))
def test_probe_reports_available_with_versions(name):
    availability = BACKENDS[name]().probe()
    assert availability.available, availability.reason
    assert availability.versions[name]  # each reports its runtime's version under the runtime's name


def test_probe_lists_runtime_providers_and_devices():
    assert "CPUExecutionProvider" in OnnxRuntimeBackend().probe().versions["providers"].split(",")
    assert "CPU" in OpenVinoBackend().probe().versions["devices"].split(",")


@pytest.mark.parametrize("name, module", [("torch", "torch"), ("onnxruntime", "onnxruntime"), ("openvino", "openvino")])
def test_probe_says_what_to_install_when_the_runtime_is_missing(monkeypatch, name, module):
    # None in sys.modules makes `import module` raise ModuleNotFoundError, as if never installed.
    monkeypatch.setitem(sys.modules, module, None)
    availability = BACKENDS[name]().probe()
    assert not availability.available
    assert availability.reason == f"{module} is not installed: pip install {module}"


def test_registry_import_does_not_load_runtimes():
    code = (
        "import sys; from costbench.backends import load_registry; load_registry(); "
        "print(','.join(m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name, fmt, options", RUNS, ids=[f"{n}-{f}" for n, f, _ in RUNS])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_outputs_match_torch_eager(tiny, restore_torch_threads, name, fmt, options, batch_size, rng):
    session = _prepare(name, tiny.artifacts[fmt], options, batch_size)
    for _ in range(2):  # fresh inputs each time: a stale or cached output cannot pass
        x = _fresh_input(rng, tiny.input_shape, batch_size)
        outputs = session.run({"input": x})
        assert len(outputs) == 1
        assert isinstance(outputs[0], np.ndarray)
        assert outputs[0].shape == (batch_size, 10)
        np.testing.assert_allclose(outputs[0], _reference(tiny, x), atol=1e-4, rtol=0)
    session.close()


@pytest.mark.parametrize("name, fmt, options", RUNS, ids=[f"{n}-{f}" for n, f, _ in RUNS])
def test_inputs_of_another_dtype_are_cast(tiny, restore_torch_threads, name, fmt, options, rng):
    session = _prepare(name, tiny.artifacts[fmt], options, 2)
    x = _fresh_input(rng, tiny.input_shape, 2)
    out = session.run({"input": x.astype(np.float64)})
    np.testing.assert_allclose(out[0], _reference(tiny, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, fmt, options", RUNS, ids=[f"{n}-{f}" for n, f, _ in RUNS])
def test_missing_input_names_the_expected_inputs(tiny, restore_torch_threads, name, fmt, options, rng):
    session = _prepare(name, tiny.artifacts[fmt], options, 1)
    with pytest.raises(KeyError, match="'input'"):
        session.run({"image": _fresh_input(rng, tiny.input_shape, 1)})


@pytest.mark.parametrize("name, fmt", [("onnxruntime", FORMAT_ONNX), ("openvino", FORMAT_OPENVINO)])
def test_inputs_fall_back_to_order_when_names_differ(tiny, name, fmt, rng):
    src = tiny.artifacts[fmt]
    renamed = Artifact(
        format=fmt, path=src.path, key="test", inputs=[InputSpec("pixels", tiny.input_shape)], outputs=["logits"]
    )
    session = _prepare(name, renamed, {"inference_precision": "f32"} if name == "openvino" else {}, 2)
    x = _fresh_input(rng, tiny.input_shape, 2)
    np.testing.assert_allclose(session.run({"pixels": x})[0], _reference(tiny, x), atol=1e-4, rtol=0)


def test_openvino_outputs_of_consecutive_runs_do_not_alias(tiny, rng):
    # OpenVINO writes every inference into the same output tensor; a returned view would
    # silently change under the caller when the next query runs.
    session = _prepare("openvino", tiny.artifacts[FORMAT_OPENVINO], {"inference_precision": "f32"}, 2)
    x1, x2 = _fresh_input(rng, tiny.input_shape, 2), _fresh_input(rng, tiny.input_shape, 2)
    first = session.run({"input": x1})[0]
    kept = first.copy()
    second = session.run({"input": x2})[0]
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(first, _reference(tiny, x1), atol=1e-4, rtol=0)


def test_openvino_reused_input_arrays_are_read_afresh_every_call(tiny, rng):
    # The session wraps each array the caller keeps feeding in one shared-memory tensor: a rotated batch,
    # an array changed in place, a non-contiguous view and more arrays than it keeps must all be read as
    # they are at the call.
    session = _prepare("openvino", tiny.artifacts[FORMAT_OPENVINO], {"inference_precision": "f32"}, 2)
    batches = [_fresh_input(rng, tiny.input_shape, 2) for _ in range(3)]
    for _ in range(2):  # the second pass hits the kept tensors
        for x in batches:
            np.testing.assert_allclose(session.run({"input": x})[0], _reference(tiny, x), atol=1e-4, rtol=0)
    batches[1][:] = _fresh_input(rng, tiny.input_shape, 2)  # in place: same object, new values
    np.testing.assert_allclose(session.run({"input": batches[1]})[0], _reference(tiny, batches[1]), atol=1e-4, rtol=0)
    wide = _fresh_input(rng, tiny.input_shape, 4)[::2]  # a strided view
    np.testing.assert_allclose(session.run({"input": wide})[0], _reference(tiny, np.ascontiguousarray(wide)),
                               atol=1e-4, rtol=0)
    many = [_fresh_input(rng, tiny.input_shape, 2) for _ in range(40)]  # past what the session keeps
    for x in many:
        np.testing.assert_allclose(session.run({"input": x})[0], _reference(tiny, x), atol=1e-4, rtol=0)
    assert len(session._tensors) <= 32


class _MultiOutput(torch.nn.Module):
    """Returns a dict holding a tensor and a tuple, to exercise output flattening."""

    def forward(self, x):
        return {"sum": x.sum(dim=(1, 2, 3)), "pair": (x * 2, x.mean(dim=1))}


def test_torch_flattens_dict_and_tuple_outputs(tmp_path, rng):
    path = tmp_path / "multi.pt"
    torch.save(_MultiOutput(), path)
    artifact = Artifact(format=FORMAT_TORCH, path=path, key="test", inputs=[InputSpec("input", (3, 4, 5))], outputs=[])
    x = _fresh_input(rng, (3, 4, 5), 2)
    out = _prepare("torch", artifact, {}, 2).run({"input": x})
    assert [o.shape for o in out] == [(2,), (2, 3, 4, 5), (2, 4, 5)]
    np.testing.assert_allclose(out[1], x * 2)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_options_reject_unknown_keys_and_zero_threads(name):
    backend = BACKENDS[name]()
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        backend.parse_options({"bogus": 1})
    with pytest.raises(pydantic.ValidationError, match="threads"):
        backend.parse_options({"threads": 0})
    assert isinstance(backend.parse_options({}), BackendOptions)


def test_backend_specific_options_validate():
    with pytest.raises(pydantic.ValidationError):
        OnnxRuntimeBackend().parse_options({"graph_optimization": "max"})
    with pytest.raises(pydantic.ValidationError):
        OnnxRuntimeBackend().parse_options({"execution_mode": "async"})
    with pytest.raises(pydantic.ValidationError):
        OpenVinoBackend().parse_options({"hint": "fast"})
    with pytest.raises(pydantic.ValidationError):
        OpenVinoBackend().parse_options({"inference_precision": "fp32"})
    with pytest.raises(pydantic.ValidationError):
        OpenVinoBackend().parse_options({"num_streams": 0})
    with pytest.raises(pydantic.ValidationError):
        TorchBackend().parse_options({"interop_threads": 0})


def test_torch_threads_applied(tiny, restore_torch_threads):
    wanted = 1 if torch.get_num_threads() != 1 else 2
    session = _prepare("torch", tiny.artifacts[FORMAT_TORCH], {"threads": wanted}, 1)
    assert torch.get_num_threads() == wanted
    assert session.info()["threads"] == wanted


def test_torch_interop_threads_applied_once_per_process(tiny):
    # torch accepts set_num_interop_threads once per process, so this runs in a child, as cases do.
    code = textwrap.dedent(
        f"""
        import torch
        from pathlib import Path
        from costbench.backends.torch_backend import TorchBackend
        from costbench.core.artifacts import Artifact, InputSpec
        b = TorchBackend()
        a = Artifact(format="torch-module", path=Path({str(tiny.artifacts[FORMAT_TORCH].path)!r}), key="t",
                     inputs=[InputSpec("input", {tiny.input_shape!r})], outputs=["logits"])
        s = b.prepare(a, b.parse_options({{"interop_threads": 1}}), 1)
        print(torch.get_num_interop_threads(), s.info()["interop_threads"])
        try:
            b.prepare(a, b.parse_options({{"interop_threads": 3}}), 1)
        except RuntimeError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, second = out.splitlines()[:2]
    assert first == "1 1"
    assert second.startswith("refused: torch backend: cannot set interop_threads=3") and "once per process" in second


def test_onnxruntime_options_applied(tiny):
    options = {"threads": 1, "inter_op_threads": 2, "graph_optimization": "basic", "execution_mode": "parallel",
               "spinning": False}
    info = _prepare("onnxruntime", tiny.artifacts[FORMAT_ONNX], options, 1).info()
    assert info["providers"] == ["CPUExecutionProvider"] and info["allow_spinning"] is False
    assert info["intra_op_num_threads"] == 1
    assert info["inter_op_num_threads"] == 2
    assert info["graph_optimization_level"] == "ORT_ENABLE_BASIC"
    assert info["execution_mode"] == "ORT_PARALLEL"


def test_onnxruntime_default_info(tiny):
    info = _prepare("onnxruntime", tiny.artifacts[FORMAT_ONNX], {}, 1).info()
    assert info["graph_optimization_level"] == "ORT_ENABLE_ALL" and info["allow_spinning"] is True
    assert info["execution_mode"] == "ORT_SEQUENTIAL"


def test_openvino_threads_hint_and_precision_applied(tiny):
    options = {"threads": 1, "hint": "throughput", "num_streams": 1, "inference_precision": "f32"}
    info = _prepare("openvino", tiny.artifacts[FORMAT_OPENVINO], options, 2).info()
    assert info["INFERENCE_NUM_THREADS"] == 1
    assert info["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert info["NUM_STREAMS"] == 1
    assert info["INFERENCE_PRECISION_HINT"] == "f32"
    assert info["OPTIMAL_NUMBER_OF_INFER_REQUESTS"] >= 1


def test_openvino_defaults_to_true_fp32_and_records_plugin_default(tiny):
    import openvino as ov

    info = _prepare("openvino", tiny.artifacts[FORMAT_OPENVINO], {}, 1).info()
    assert info["PERFORMANCE_HINT"] == "LATENCY"
    assert info["INFERENCE_PRECISION_HINT"] == "f32"
    # 'plugin-default' keeps the plugin's choice (bf16 on avx512_bf16/AMX CPUs) and the result says so.
    plugin_default = ov.Core().get_property("CPU", ov.properties.hint.inference_precision).get_type_name()
    info = _prepare("openvino", tiny.artifacts[FORMAT_OPENVINO], {"inference_precision": "plugin-default"}, 1).info()
    assert info["INFERENCE_PRECISION_HINT"] == plugin_default


@pytest.mark.parametrize("name", list(BACKENDS))
def test_wrong_device_raises(tiny, name):
    backend = BACKENDS[name]()
    fmt = backend.capabilities.formats[0]
    with pytest.raises(ValueError, match=r"device 'npu9' is not supported; supported: cpu"):
        backend.prepare(tiny.artifacts[fmt], backend.parse_options({}), 1, device="npu9")


def test_torch_cuda_without_a_gpu_says_why(tiny):
    import torch

    backend = BACKENDS["torch"]()
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    why = backend.probe_device("cuda")
    assert not why.available and ("CPU-only build" in why.reason or "no CUDA device" in why.reason)
    with pytest.raises(RuntimeError, match="CPU-only build|no CUDA device"):
        backend.prepare(tiny.artifacts[FORMAT_TORCH], backend.parse_options({"cuda_graph": True}), 1, device="cuda")
    with pytest.raises(ValueError, match="cuda_graph applies to device='cuda' only"):
        backend.prepare(tiny.artifacts[FORMAT_TORCH], backend.parse_options({"cuda_graph": True}), 1, device="cpu")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_unsupported_format_raises(tiny, name):
    backend = BACKENDS[name]()
    foreign = next(a for fmt, a in tiny.artifacts.items() if fmt not in backend.capabilities.formats)
    with pytest.raises(ValueError, match=f"format {foreign.format!r} is not supported"):
        backend.prepare(foreign, backend.parse_options({}), 1)


def test_accepts_prefers_ir_for_openvino():
    assert OpenVinoBackend().accepts([FORMAT_ONNX, FORMAT_OPENVINO]) == FORMAT_OPENVINO
    assert OpenVinoBackend().accepts([FORMAT_ONNX]) == FORMAT_ONNX
    assert OnnxRuntimeBackend().accepts([FORMAT_OPENVINO]) is None
