"""The litert backend on the real LiteRT interpreter, with tiny models converted by litert-torch for real."""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pydantic
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: pip install 'costbench[litert]'")
pytest.importorskip("litert_torch", reason="litert-torch is not installed: pip install 'costbench[litert]'")

import torch  # noqa: E402

from costbench.backends import load_registry  # noqa: E402
from costbench.backends.litert_backend import LiteRTBackend, LiteRTOptions  # noqa: E402
from costbench.core.artifacts import FORMAT_ONNX, FORMAT_TFLITE, Artifact, InputSpec  # noqa: E402
from costbench.core.tflite_files import dequantize, quantize  # noqa: E402
from costbench.harness.build.compress.litert_export import (convert_tflite, quantize_tflite,  # noqa: E402
                                                      signature_feeds)
from costbench.harness.build.zoo.base import SampleSet  # noqa: E402
from edge_helpers import SHAPE, prepare  # noqa: E402
from edge_helpers import eager as _eager, fresh as _fresh  # noqa: E402

HINT = "pip install 'costbench[litert]'"


class _ConvMean(torch.nn.Module):
    """Convolutions and a spatial mean: no reshape, so the converted graph resizes to any batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
                                        torch.nn.Conv2d(8, 10, 3, stride=2, padding=1))

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


class _Flatten(torch.nn.Module):
    """A flatten to (batch, features): the converted reshape bakes in the batch of 1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.linear = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).flatten(1))


def _samples(n: int = 16) -> SampleSet:
    return SampleSet({"input": np.random.default_rng(0).standard_normal((n, *SHAPE)).astype(np.float32)})


def _artifact(path) -> Artifact:
    return Artifact(format=FORMAT_TFLITE, path=path, key="test", inputs=[InputSpec("input", SHAPE)], outputs=["out"])


@pytest.fixture(scope="module")
def conv_tflite(tmp_path_factory):
    """(eager module, artifact): the resizable conv model converted at batch 1."""
    module = _ConvMean().eval()
    path = tmp_path_factory.mktemp("litert") / "conv.tflite"
    convert_tflite(module, [InputSpec("input", SHAPE)], _samples(), path, "conv")
    return module, _artifact(path)


@pytest.fixture(scope="module")
def int8_tflite(conv_tflite, tmp_path_factory):
    """The conv model quantized to full integer (int8 inputs and outputs) by AI Edge Quantizer."""
    path = tmp_path_factory.mktemp("litert") / "int8.tflite"
    recipe = [{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize",
               "op_config": {"weight_tensor_config": {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE"},
                             "activation_tensor_config": {"num_bits": 8, "symmetric": False},
                             "compute_precision": "INTEGER", "explicit_dequantize": False}}]
    feeds = signature_feeds(conv_tflite[1].path, conv_tflite[1].inputs, _samples(), 1)
    quantize_tflite(conv_tflite[1].path, path, recipe, feeds)
    return _artifact(path)


_prepare = functools.partial(prepare, LiteRTBackend)


def test_registered_through_the_entry_point():
    entry = load_registry()["litert"]
    assert entry.load_error == ""
    assert type(entry.backend) is LiteRTBackend
    assert entry.target == "costbench.backends.litert_backend:LiteRTBackend"


def test_probe_reports_the_version():
    availability = LiteRTBackend().probe()
    assert availability.available, availability.reason
    assert availability.versions["ai_edge_litert"]


def test_probe_says_what_to_install_when_litert_is_missing(monkeypatch):
    # None in sys.modules makes an import raise ModuleNotFoundError, as if never installed.
    for name in [m for m in sys.modules if m == "ai_edge_litert" or m.startswith("ai_edge_litert.")] + ["ai_edge_litert"]:
        monkeypatch.setitem(sys.modules, name, None)
    availability = LiteRTBackend().probe()
    assert not availability.available
    assert availability.reason == f"ai-edge-litert is not installed: {HINT}"


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin", "reference"])
def test_outputs_match_torch_eager_with_every_kind_of_kernel(conv_tflite, kernels, rng):
    module, artifact = conv_tflite
    session = _prepare(artifact, 1, kernels=kernels)
    info = session.info()
    assert info["kernels"] == kernels
    assert info["delegate"] == ("XNNPACK" if kernels == "xnnpack" else "none")
    assert (info["delegated_partitions"] >= 1) == (kernels == "xnnpack")
    for _ in range(2):  # fresh inputs each time: a stale output cannot pass
        x = _fresh(rng, 1)
        out = session.run({"input": x})
        assert len(out) == 1 and out[0].shape == (1, 10) and out[0].dtype == np.float32
        ref = _eager(module, x)
        np.testing.assert_allclose(out[0], ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), rtol=0)
    assert "quantized" not in session.timing.boundary


def test_threads_are_passed_to_the_interpreter(conv_tflite, rng):
    module, artifact = conv_tflite
    session = _prepare(artifact, 1, threads=1)
    assert session.info()["threads"] == 1
    assert _prepare(artifact, 1).info()["threads"] == len(os.sched_getaffinity(0))  # None: every usable core
    x = _fresh(rng, 1)
    np.testing.assert_allclose(session.run({"input": x})[0], _eager(module, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_size", [3, 8])
def test_inputs_are_resized_to_the_case_batch(conv_tflite, batch_size, rng):
    module, artifact = conv_tflite
    session = _prepare(artifact, batch_size)
    assert session.info()["resized_inputs"] is True
    x = _fresh(rng, batch_size)
    out = session.run({"input": x})[0]
    assert out.shape == (batch_size, 10)
    np.testing.assert_allclose(out, _eager(module, x), atol=1e-5, rtol=0)


def test_a_graph_with_its_batch_baked_in_is_refused_with_the_reason(tmp_path, rng):
    module = _Flatten().eval()
    path = tmp_path / "flat.tflite"
    convert_tflite(module, [InputSpec("input", SHAPE)], _samples(), path, "flat")
    x = _fresh(rng, 1)
    np.testing.assert_allclose(_prepare(_artifact(path), 1).run({"input": x})[0], _eager(module, x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=rf"{path}: LiteRT cannot prepare the model at batch 2 \(its inputs have a "
                                         r"static batch of 1: build the variant with batch_size = 2"):
        _prepare(_artifact(path), 2)


def test_outputs_of_consecutive_runs_do_not_alias(conv_tflite, rng):
    session = _prepare(conv_tflite[1], 2)
    first = session.run({"input": _fresh(rng, 2)})[0]
    kept = first.copy()
    session.run({"input": _fresh(rng, 2)})
    np.testing.assert_array_equal(first, kept)


def test_int8_io_is_quantized_at_the_boundary_with_the_models_scale(int8_tflite, conv_tflite, rng):
    from ai_edge_litert.interpreter import Interpreter

    session = _prepare(int8_tflite, 1)
    info = session.info()
    q_in = info["quantized_inputs"]["input"]
    assert q_in["dtype"] == "int8" and q_in["scale"] > 0 and info["quantized_outputs"] == 1
    assert "quantized to the model's integer input type" in session.timing.boundary
    x = _fresh(rng, 1)
    got = session.run({"input": x})[0]
    assert got.dtype == np.float32
    # The same model driven by hand: quantize with the file's scale/zero point, invoke, dequantize.
    raw = Interpreter(model_path=str(int8_tflite.path))
    raw.allocate_tensors()
    i, o = raw.get_input_details()[0], raw.get_output_details()[0]
    assert i["dtype"] == np.int8 and o["dtype"] == np.int8
    raw.set_tensor(i["index"], quantize(x, np.int8, *i["quantization"]))
    raw.invoke()
    np.testing.assert_array_equal(got, dequantize(raw.get_tensor(o["index"]), *o["quantization"]))
    # ...and it is a real int8 model of the fp32 one: close to eager, not equal.
    ref = _eager(conv_tflite[0], x)
    assert np.max(np.abs(got - ref)) < 0.1 * max(1.0, float(np.abs(ref).max()))
    # Inputs already in the model's integer type go in untouched.
    q = quantize(x, np.int8, *i["quantization"])
    np.testing.assert_array_equal(session.run({"input": q})[0], got)


def test_quantize_follows_the_affine_rule_and_saturates():
    x = np.array([-1e9, -1.0, 0.0, 0.26, 1e9], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x, np.int8, 0.5, 3), [-128, 1, 3, 4, 127])
    np.testing.assert_array_equal(quantize(x, np.uint8, 0.5, 3), [0, 1, 3, 4, 255])
    np.testing.assert_allclose(dequantize(np.array([1, 3], np.int8), 0.5, 3), [-1.0, 0.0])


def test_a_truncated_file_is_refused_naming_it(conv_tflite, tmp_path):
    data = conv_tflite[1].path.read_bytes()
    path = tmp_path / "truncated.tflite"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path}: LiteRT cannot load the model"):
        _prepare(_artifact(path), 1)


def test_a_file_that_is_not_a_tflite_is_refused_naming_it(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=rf"{path}: not a LiteRT/TensorFlow Lite model"):
        _prepare(_artifact(path), 1)
    with pytest.raises(ValueError, match="no such .tflite file"):
        _prepare(_artifact(tmp_path / "missing.tflite"), 1)


def test_an_op_the_interpreter_lacks_is_named(conv_tflite, tmp_path):
    from ai_edge_litert.schema_py_generated import BuiltinOperator
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(conv_tflite[1].path))
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = BuiltinOperator.CUSTOM
    code.customCode = "CostbenchNoSuchOp"
    path = tmp_path / "custom-op.tflite"
    flatbuffer_utils.write_model(model, str(path))
    with pytest.raises(ValueError, match=rf"{path}: LiteRT cannot (load|prepare) the model.*CostbenchNoSuchOp"):
        _prepare(_artifact(path), 1)


def test_missing_input_names_the_expected_inputs(conv_tflite, rng):
    with pytest.raises(KeyError, match="'input'"):
        _prepare(conv_tflite[1], 1).run({"image": _fresh(rng, 1)})


def test_a_per_sample_shape_that_differs_is_refused(conv_tflite):
    art = Artifact(format=FORMAT_TFLITE, path=conv_tflite[1].path, key="t", inputs=[InputSpec("input", (3, 8, 8))],
                   outputs=[])
    with pytest.raises(ValueError, match=r"has shape \[1, 3, 16, 16\] in the model; the artifact declares"):
        _prepare(art, 1)


def test_fork_is_an_independent_interpreter(conv_tflite, rng):
    session = _prepare(conv_tflite[1], 1)
    other = session.fork()
    assert other is not session and other._runner.interpreter is not session._runner.interpreter
    x = _fresh(rng, 1)
    np.testing.assert_array_equal(other.run({"input": x})[0], session.run({"input": x})[0])


def test_options_reject_unknown_keys_and_kernels():
    backend = LiteRTBackend()
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        backend.parse_options({"bogus": 1})
    with pytest.raises(pydantic.ValidationError, match="kernels"):
        backend.parse_options({"kernels": "gpu"})
    assert isinstance(backend.parse_options({}), LiteRTOptions)


def test_other_formats_and_devices_are_refused(conv_tflite):
    backend = LiteRTBackend()
    onnx = Artifact(format=FORMAT_ONNX, path=conv_tflite[1].path, key="t", inputs=conv_tflite[1].inputs, outputs=[])
    with pytest.raises(ValueError, match="format 'onnx' is not supported"):
        backend.prepare(onnx, backend.parse_options({}), 1)
    with pytest.raises(ValueError, match="device 'cuda'"):
        backend.prepare(conv_tflite[1], backend.parse_options({}), 1, device="cuda")
    assert backend.accepts(["onnx", FORMAT_TFLITE]) == FORMAT_TFLITE
