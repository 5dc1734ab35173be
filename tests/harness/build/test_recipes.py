"""Recipes on real models: fp32 exports match torch, int8 artifacts really are int8 and keep accuracy."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH, ArtifactCache, content_key
from costbench.harness.build.compress.registry import get_recipe, recipe_names
from costbench.harness.build.compress.onnx_export import ExportError, export_onnx
from costbench.harness.build.compress.ort_int8 import decide_reduce_range
from costbench.harness.machine.env import has_vnni
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH
from costbench.harness.build.zoo.flops import onnx_flops
from costbench.harness.build.zoo.registry import load_bundle


def build(bundle, recipe_name, fmt, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), fmt, cache)


def ort_outputs(path, samples, batch_size=64):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, b)[0][:n] for b, n in samples.batches(batch_size)])


def ov_outputs(path, samples, batch_size=64):
    import openvino as ov

    # f32 for the ops left in floating point: the CPU plugin would pick bf16 on AMX machines.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(b)[0][:n] for b, n in samples.batches(batch_size)])


def torch_outputs(bundle, samples):
    import torch

    with torch.no_grad():
        return bundle.torch_module()(*(torch.from_numpy(samples.inputs[i.name]) for i in bundle.inputs)).numpy()


def accuracy(logits, labels):
    return float((logits.argmax(1) == labels).mean())


def test_builtin_recipes_registered():
    assert {"fp32", "int8", "int8-nncf"} <= set(recipe_names())
    assert get_recipe("fp32").formats_for(SOURCE_TORCH) == (FORMAT_TORCH, FORMAT_ONNX, FORMAT_OPENVINO, "executorch-pte")
    assert get_recipe("fp32").formats_for(SOURCE_ONNX) == (FORMAT_ONNX, FORMAT_OPENVINO)
    assert get_recipe("int8").formats_for(SOURCE_TORCH) == get_recipe("int8").formats_for(SOURCE_ONNX) == (FORMAT_ONNX,)
    assert get_recipe("int8-nncf").formats_for(SOURCE_TORCH) == (FORMAT_OPENVINO,)


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="per_chanel"):
        get_recipe("int8").parse_config({"per_chanel": False})


# ------------------------------------------------------------------------------------------------ fp32


def test_a_torch_models_key_names_where_its_class_is_defined(digits):
    """A pickled module names its class's module: moving that module must not serve the old pickle."""
    import dataclasses

    recipe = get_recipe("fp32")
    config = recipe.parse_config({})
    here = recipe.cache_material(digits, config)
    assert here["torch_code"] == digits.module_factory.__module__ == "costbench.harness.build.zoo.digits"
    moved = dataclasses.replace(digits, module_factory=lambda: digits.torch_module())  # defined in this test module
    assert recipe.cache_material(moved, config)["torch_code"] == __name__ != here["torch_code"]
    assert content_key(recipe.cache_material(moved, config)) != content_key(here)


def test_fp32_onnx_matches_torch_on_real_inputs(digits, tmp_path):
    art = build(digits, "fp32", FORMAT_ONNX, ArtifactCache(tmp_path))
    got, ref = ort_outputs(art.path, digits.evaluation, batch_size=7), torch_outputs(digits, digits.evaluation)
    assert np.max(np.abs(got - ref)) < 1e-4  # every test sample, at a batch size the export never saw
    p = art.provenance
    assert p["opset"] == 17 and p["export_max_abs_error"] < 1e-4
    assert (p["parameters"], p["flops"], p["source_format"]) == (9930, digits.details["flops"], "torch module")
    # The torch counting and the ONNX graph counting agree on this model.
    assert onnx_flops(art.path)["flops"] == digits.details["flops"]


def test_fp32_torch_and_openvino_artifacts_match_torch(digits, tmp_path):
    import torch

    cache = ArtifactCache(tmp_path)
    ref = torch_outputs(digits, digits.evaluation)
    module = torch.load(build(digits, "fp32", FORMAT_TORCH, cache).path, weights_only=False)
    with torch.no_grad():
        np.testing.assert_array_equal(module(torch.from_numpy(digits.evaluation.inputs["input"])).numpy(), ref)
    ir = build(digits, "fp32", FORMAT_OPENVINO, cache)
    assert ir.path.name == "model.xml" and ir.path.with_suffix(".bin").is_file()
    assert np.max(np.abs(ov_outputs(ir.path, digits.evaluation) - ref)) < 1e-4


def test_export_catches_a_batch_dependent_trace(tmp_path, digits):
    import torch

    class ScalesByBatch(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1) * float(x.shape[0])  # the trace bakes in the export batch size

    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(ScalesByBatch(), digits.inputs, ["out"], digits.evaluation, tmp_path / "m.onnx")


# ------------------------------------------------------------------------------------------------ int8


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weight_scales(model, init):
    """(int8 weight, its scale) for every DequantizeLinear reading an int8 initializer."""
    return [(init[n.input[0]], init[n.input[1]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8
            and init[n.input[0]].size > 1]


def test_int8_artifact_holds_int8_weights_per_channel(digits, tmp_path):
    art = build(digits, "int8", FORMAT_ONNX, ArtifactCache(tmp_path))
    model, init = _initializers(art.path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    weights = _weight_scales(model, init)
    assert sorted(w.shape for w, _ in weights) == [(10, 512), (16, 1, 3, 3), (32, 16, 3, 3)]
    for w, scale in weights:
        assert scale.shape == (w.shape[0],)  # one scale per output channel
    assert not any(v.dtype == np.float32 and v.size >= 144 for v in init.values())  # no fp32 weights left
    p = art.provenance
    assert p["method"] == "static PTQ (ONNX Runtime, QDQ)" and p["bits"] == 8
    assert p["weight_granularity"] == "per-channel" and p["int8_weight_tensors"] == 3
    assert p["calibration"]["samples"] == 64 and "train split" in p["calibration"]["description"]
    assert isinstance(p["reduce_range"], bool) and p["reduce_range_reason"]
    assert art.size_bytes < build(digits, "fp32", FORMAT_ONNX, ArtifactCache(tmp_path)).size_bytes / 2


def test_reduce_range_follows_the_isa_unless_set():
    decided, why = decide_reduce_range(None)
    if platform.machine().lower() in {"x86_64", "amd64"}:
        assert decided is (not has_vnni())
        assert "VNNI" in why
    assert decide_reduce_range(True) == (True, "set by suite")
    assert decide_reduce_range(False) == (False, "set by suite")


def test_reduce_range_from_suite_gives_7_bit_weights(digits, tmp_path):
    art = build(digits, "int8", FORMAT_ONNX, ArtifactCache(tmp_path), reduce_range=True, per_channel=False)
    assert art.provenance["reduce_range"] is True and art.provenance["reduce_range_reason"] == "set by suite"
    assert art.provenance["weight_bits"] == 7
    model, init = _initializers(art.path)
    for w, scale in _weight_scales(model, init):
        assert scale.size == 1  # per-tensor
        # ORT's symmetric 7-bit range is [-64, 64]: 2 * 255 * 64 = 32640 still fits vpmaddubsw's int16.
        assert np.abs(w.astype(np.int32)).max() <= 64


def test_artifact_cache_hit_and_new_key_for_new_config(digits, tmp_path):
    cache = ArtifactCache(tmp_path)
    first = build(digits, "int8", FORMAT_ONNX, cache)
    again = build(digits, "int8", FORMAT_ONNX, cache)
    assert (first.cached, again.cached) == (False, True)
    assert again.key == first.key and again.build_time_s is None and again.provenance == first.provenance
    other = build(digits, "int8", FORMAT_ONNX, cache, calibration_method="Percentile")
    assert other.key != first.key and other.cached is False
    fewer = build(digits, "int8", FORMAT_ONNX, cache, calibration_samples=32)
    assert fewer.key != first.key and fewer.provenance["calibration"]["samples"] == 32


def test_int8_keeps_digits_accuracy(digits, tmp_path):
    cache = ArtifactCache(tmp_path)
    labels = digits.evaluation.labels
    fp32 = accuracy(ort_outputs(build(digits, "fp32", FORMAT_ONNX, cache).path, digits.evaluation), labels)
    int8 = accuracy(ort_outputs(build(digits, "int8", FORMAT_ONNX, cache).path, digits.evaluation), labels)
    assert fp32 >= 0.95 and int8 >= fp32 - 0.02, (fp32, int8)


def test_int8_on_a_user_onnx_file(tiny_onnx, tmp_path):
    bundle = load_bundle(ModelSpec(id="mine", source="onnx", path=tiny_onnx), tmp_path)
    cache = ArtifactCache(tmp_path)
    fp32 = build(bundle, "fp32", FORMAT_ONNX, cache)
    assert fp32.path.read_bytes() == tiny_onnx.read_bytes()  # the user's file, as is
    art = build(bundle, "int8", FORMAT_ONNX, cache)
    assert art.provenance["int8_weight_tensors"] == 2
    ref, got = ort_outputs(fp32.path, bundle.evaluation), ort_outputs(art.path, bundle.evaluation)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------------------------- int8-nncf


def test_int8_nncf_is_low_precision_ir_and_keeps_accuracy(digits, tmp_path):
    import openvino as ov

    cache = ArtifactCache(tmp_path)
    art = build(digits, "int8-nncf", FORMAT_OPENVINO, cache)
    model = ov.Core().read_model(str(art.path))
    ops = [op.get_type_name() for op in model.get_ops()]
    assert ops.count("FakeQuantize") >= 3
    int8_constants = [op for op in model.get_ops()
                      if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8]
    assert len(int8_constants) >= 3  # the conv and linear weights
    p = art.provenance
    assert p["preset"] == "performance" and p["calibration"]["samples"] == 64 and p["nncf"]
    labels = digits.evaluation.labels
    fp32 = accuracy(ort_outputs(build(digits, "fp32", FORMAT_ONNX, cache).path, digits.evaluation), labels)
    int8 = accuracy(ov_outputs(art.path, digits.evaluation), labels)
    assert int8 >= fp32 - 0.02, (fp32, int8)


# ---------------------------------------------------------------------------------------- EfficientNet


def test_efficientnet_int8_stays_close_to_fp32(effnet, shared_cache):
    fp32 = build(effnet, "fp32", FORMAT_ONNX, shared_cache)
    assert fp32.provenance["export_max_abs_error"] < 1e-4
    int8 = build(effnet, "int8", FORMAT_ONNX, shared_cache)
    assert int8.provenance["int8_weight_tensors"] >= 50  # every conv and the classifier
    ref, got = ort_outputs(fp32.path, effnet.evaluation), ort_outputs(int8.path, effnet.evaluation)
    top5 = np.argsort(-ref, axis=1)[:, :5]
    in_top5 = np.mean([g in t for g, t in zip(got.argmax(1), top5)])
    # These photo crops give low-confidence predictions (top-1 p ~ 0.1-0.5), so top-1 flips are
    # common; the int8 top-1 staying within the fp32 top-5 is the robust check.
    assert in_top5 >= 0.9, in_top5
