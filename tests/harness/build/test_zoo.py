"""The model zoo: built-in models with real data, user ONNX files and torch factories, and their errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from costbench.core.artifacts import InputSpec, file_sha256
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo import digits as digits_mod
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH
from costbench.harness.build.zoo.images import imagenet_samples
from costbench.harness.build.zoo.registry import load_bundle, source_kind, zoo_names

# ImageNet classes for buildings like the temple in china.jpg.
BUILDINGS = {442: "bell cote", 483: "castle", 497: "church", 538: "dome", 663: "monastery", 698: "palace",
             832: "stupa", 449: "boathouse", 668: "mosque"}


def _predict(bundle, samples=None):
    import torch

    samples = samples or bundle.evaluation
    with torch.no_grad():
        out = bundle.torch_module()(*(torch.from_numpy(samples.inputs[i.name]) for i in bundle.inputs))
    return out.numpy()


# ------------------------------------------------------------------------------------------- registry


def test_zoo_names_and_source_kinds():
    assert {"digits-cnn", "efficientnet-lite0"} <= set(zoo_names())
    assert source_kind(ModelSpec(id="digits-cnn")) == SOURCE_TORCH
    assert source_kind(ModelSpec(id="x", source="onnx", path="/nowhere/m.onnx")) == SOURCE_ONNX
    assert source_kind(ModelSpec(id="x", source="torch", factory="a.b:c",
                                 inputs=[{"name": "input", "shape": [3]}])) == SOURCE_TORCH


def test_unknown_zoo_name_lists_known_ones():
    with pytest.raises(KeyError, match="digits-cnn.*efficientnet-lite0"):
        source_kind(ModelSpec(id="resnet-9000"))


def test_planning_imports_nothing_heavy():
    code = ("import sys; from costbench.harness.build.zoo.registry import source_kind, zoo_names; "
            "from costbench.harness.suite.schema import ModelSpec; zoo_names(); source_kind(ModelSpec(id='digits-cnn')); "
            "print([m for m in ('torch', 'sklearn', 'onnx', 'onnxruntime', 'openvino', 'PIL') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------------- digits


def test_digits_trains_once_then_loads_from_cache(tmp_path):
    spec = ModelSpec(id="digits-cnn")
    first = load_bundle(spec, tmp_path)
    weights = digits_mod.weights_path(tmp_path)
    assert weights.is_file() and weights.parent == tmp_path / "models"
    assert first.details["weights_cached"] is False
    mtime = weights.stat().st_mtime_ns

    second = load_bundle(spec, tmp_path)
    assert second.details["weights_cached"] is True
    assert weights.stat().st_mtime_ns == mtime  # not retrained, not rewritten
    assert second.source_hash == first.source_hash
    np.testing.assert_array_equal(_predict(first), _predict(second))
    assert not list(weights.parent.glob(".*"))  # no temp files left behind


def test_digits_accuracy_and_split(digits):
    assert digits.task == "classification"
    assert digits.inputs == [InputSpec("input", (1, 8, 8), "float32")] and digits.outputs == ["logits"]
    x = digits.evaluation.inputs["input"]
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert (len(digits.calibration), len(digits.evaluation)) == (1437, 360)  # 80/20 of 1797
    assert digits.calibration.labels is not None and digits.evaluation.labels is not None
    assert np.bincount(digits.evaluation.labels).min() >= 35  # stratified: every digit ~36 times
    accuracy = float((_predict(digits).argmax(1) == digits.evaluation.labels).mean())
    assert accuracy >= 0.95
    assert digits.details["fp32_test_accuracy"] == pytest.approx(accuracy)


def test_digits_details_count_parameters_and_flops(digits):
    d = digits.details
    assert d["parameters"] == 160 + 4640 + 5130
    # MACs of one sample: conv1 64*16*9, conv2 64*32*144, linear 10*512.
    assert d["flops"] == 2 * (64 * 16 * 9 + 64 * 32 * 144 + 10 * 512)
    assert d["data"]["evaluation"]["labels"] is True and "test split" in d["data"]["evaluation"]["description"]


def test_caps_apply(shared_cache_dir):
    bundle = load_bundle(ModelSpec(id="digits-cnn", eval_samples=10, calibration_samples=5), shared_cache_dir)
    assert (len(bundle.calibration), len(bundle.evaluation), len(bundle.evaluation.labels)) == (5, 10, 10)
    assert bundle.details["data"]["evaluation"]["samples"] == 10


def test_digits_cnn_class_pickles_by_public_name(tmp_path):
    import torch

    model = digits_mod.DigitsCNN()
    assert type(model).__qualname__ == "DigitsCNN" and type(model).__module__ == "costbench.harness.build.zoo.digits"
    torch.save(model, tmp_path / "m.pt")
    assert type(torch.load(tmp_path / "m.pt", weights_only=False)) is digits_mod.DigitsCNN


# --------------------------------------------------------------------------------------------- images


def test_image_crops_are_real_distinct_and_disjoint():
    s = imagenet_samples()
    assert len(s.calibration) == len(s.calibration_crops) >= 32
    assert len(s.evaluation) == len(s.evaluation_crops) >= 32
    assert not set(s.calibration_crops) & set(s.evaluation_crops)
    assert {c.image for c in s.evaluation_crops} >= {"china.jpg", "flower.jpg"}
    cal, ev = s.calibration.inputs["input"], s.evaluation.inputs["input"]
    assert cal.shape[1:] == ev.shape[1:] == (3, 224, 224) and cal.dtype == np.float32
    flat = np.concatenate([cal, ev]).reshape(len(cal) + len(ev), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)  # every crop differs
    assert abs(float(flat.mean())) < 1.0 and 0.5 < float(flat.std()) < 2.0  # ImageNet-normalized photos
    np.testing.assert_array_equal(ev, imagenet_samples().evaluation.inputs["input"])  # deterministic


def test_efficientnet_recognises_the_photos(effnet):
    assert effnet.inputs == [InputSpec("input", (3, 224, 224), "float32")] and effnet.outputs == ["logits"]
    assert effnet.details["parameters"] == 4_652_008 and effnet.details["flops"] > 7e8
    crops = imagenet_samples().evaluation_crops
    top1 = _predict(effnet).argmax(1)
    china = [int(p) for p, c in zip(top1, crops) if c.image == "china.jpg"]
    flower = [int(p) for p, c in zip(top1, crops) if c.image == "flower.jpg"]
    assert sum(p in BUILDINGS for p in china) >= 0.6 * len(china), china
    assert not any(p in BUILDINGS for p in flower), flower


def test_efficientnet_module_copies_are_independent(effnet):
    a, b = effnet.torch_module(), effnet.torch_module()
    assert a is not b and not a.training
    next(a.parameters()).data.zero_()
    assert next(b.parameters()).abs().sum() > 0


# ------------------------------------------------------------------------------------------ user ONNX


def test_onnx_inputs_read_from_graph(tiny_onnx, tmp_path):
    bundle = load_bundle(ModelSpec(id="mine", source="onnx", path=tiny_onnx), tmp_path)
    assert bundle.source_kind == SOURCE_ONNX and bundle.onnx_path == tiny_onnx
    assert bundle.inputs == [InputSpec("input", (3, 8, 8), "float32")] and bundle.outputs == ["logits"]
    assert bundle.task == "classification"
    assert bundle.source_hash == file_sha256(tiny_onnx)
    assert bundle.details["synthetic_data"] is True
    assert bundle.details["parameters"] == 8 * 3 * 9 + 8 + 10 * 512 + 10
    assert bundle.details["flops"] == 2 * (64 * 8 * 27 + 10 * 512)
    assert len(bundle.calibration) == len(bundle.evaluation) == 32


def test_onnx_symbolic_non_batch_dim_asks_for_inputs(tmp_path, factory_path):
    import torch

    from tiny_factory import make_tiny

    path = tmp_path / "m.onnx"
    torch.onnx.export(make_tiny().eval(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 2: "height"}, "logits": {0: "batch"}})
    with pytest.raises(ValueError, match=r"'input'.*height.*inputs"):
        load_bundle(ModelSpec(id="mine", source="onnx", path=path), tmp_path)
    # Given explicitly, the suite's shapes win.
    spec = ModelSpec(id="mine", source="onnx", path=path, inputs=[{"name": "input", "shape": [3, 8, 8]}])
    assert load_bundle(spec, tmp_path).inputs == [InputSpec("input", (3, 8, 8))]


def test_onnx_declared_inputs_must_match_graph(tiny_onnx, tmp_path):
    spec = ModelSpec(id="mine", source="onnx", path=tiny_onnx, inputs=[{"name": "pixels", "shape": [3, 8, 8]}])
    with pytest.raises(ValueError, match=r"\['pixels'\].*\['input'\]"):
        load_bundle(spec, tmp_path)


def test_corrupt_onnx_file_names_the_path(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a valid ONNX file") as err:
        load_bundle(ModelSpec(id="broken", source="onnx", path=path), tmp_path)
    assert str(path) in str(err.value) and "'broken'" in str(err.value)


def test_missing_onnx_file_names_the_path(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ValueError, match="does not exist") as err:
        load_bundle(ModelSpec(id="gone", source="onnx", path=path), tmp_path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------------------------- torch factory


def test_torch_factory(tmp_path, factory_path):
    spec = ModelSpec(id="tiny", source="torch", factory="tiny_factory:make_tiny",
                     inputs=[{"name": "input", "shape": [3, 8, 8]}])
    bundle = load_bundle(spec, tmp_path)
    assert bundle.source_kind == SOURCE_TORCH and bundle.task == "classification"
    assert bundle.outputs == ["output"] and bundle.details["synthetic_data"] is True
    assert bundle.details["flops"] == 2 * (64 * 8 * 27 + 10 * 512)
    assert load_bundle(spec, tmp_path).source_hash == bundle.source_hash
    changed = ModelSpec(id="tiny", source="torch", factory="tiny_factory:make_unseeded",
                        inputs=[{"name": "input", "shape": [3, 8, 8]}])
    assert load_bundle(changed, tmp_path).source_hash != bundle.source_hash


def test_unseeded_factory_still_gives_one_model_per_load(tmp_path, factory_path):
    spec = ModelSpec(id="u", source="torch", factory="tiny_factory:make_unseeded",
                     inputs=[{"name": "input", "shape": [3, 8, 8]}])
    bundle = load_bundle(spec, tmp_path)
    assert bundle.task == "classification"
    np.testing.assert_array_equal(_predict(bundle), _predict(bundle))


@pytest.mark.parametrize("factory, message", [
    ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
    ("tiny_factory:missing", "has no attribute 'missing'"),
    ("tiny_factory:not_a_module", "returned str, not a torch.nn.Module"),
])
def test_bad_factories_say_what_is_wrong(tmp_path, factory_path, factory, message):
    spec = ModelSpec(id="bad", source="torch", factory=factory, inputs=[{"name": "input", "shape": [3, 8, 8]}])
    with pytest.raises(ValueError, match=message):
        load_bundle(spec, tmp_path)


# ------------------------------------------------------------------------------------------- npz data


def test_npz_data_is_split_in_half(tiny_onnx, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "data.npz"
    np.savez(data, input=rng.standard_normal((20, 3, 8, 8)), labels=np.arange(20) % 10)
    bundle = load_bundle(ModelSpec(id="mine", source="onnx", path=tiny_onnx, data=data), tmp_path)
    assert (len(bundle.calibration), len(bundle.evaluation)) == (10, 10)
    assert bundle.evaluation.inputs["input"].dtype == np.float32
    np.testing.assert_array_equal(bundle.evaluation.labels, np.arange(10, 20) % 10)
    assert bundle.details["synthetic_data"] is False


@pytest.mark.parametrize("arrays, message", [
    ({"pixels": np.zeros((4, 3, 8, 8))}, r"lacks arrays for inputs \['input'\].*has arrays \['pixels'\]"),
    ({"input": np.zeros((4, 3, 7, 7))}, r"array 'input' has shape \(4, 3, 7, 7\); expected \(N, 3, 8, 8\)"),
    ({"input": np.zeros((4, 3, 8, 8)), "labels": np.zeros(3)}, "differ in length"),
    ({"input": np.zeros((1, 3, 8, 8))}, "at least 2"),
])
def test_bad_npz_says_what_is_wrong(tiny_onnx, tmp_path, arrays, message):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        load_bundle(ModelSpec(id="mine", source="onnx", path=tiny_onnx, data=data), tmp_path)
    assert str(data) in str(err.value)


def test_zoo_model_takes_suite_data(shared_cache_dir, tmp_path, digits):
    data = tmp_path / "digits.npz"
    x = digits.evaluation.inputs["input"][:40]
    np.savez(data, input=x, labels=digits.evaluation.labels[:40])
    bundle = load_bundle(ModelSpec(id="digits-cnn", data=data), shared_cache_dir)
    assert (len(bundle.calibration), len(bundle.evaluation)) == (20, 20)
    np.testing.assert_array_equal(bundle.evaluation.inputs["input"], x[20:])
    assert bundle.details["data_file"] == str(data)
