"""fp16 and bf16 variants: the artifacts really hold half-precision weights, stay close to fp32, and say what
they are on an x86 CPU."""

from __future__ import annotations

import numpy as np
import pytest

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH


def build(bundle, recipe_name, fmt, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), fmt, cache)


def torch_reference(bundle):
    import torch

    with torch.no_grad():
        return bundle.torch_module()(*(torch.from_numpy(bundle.evaluation.inputs[i.name]) for i in bundle.inputs)).numpy()


def test_formats():
    assert get_recipe("fp16").formats_for(SOURCE_TORCH) == (FORMAT_TORCH, FORMAT_ONNX, FORMAT_OPENVINO)
    assert get_recipe("fp16").formats_for(SOURCE_ONNX) == (FORMAT_ONNX, FORMAT_OPENVINO)
    assert get_recipe("bf16").formats_for(SOURCE_TORCH) == (FORMAT_TORCH,)
    assert get_recipe("bf16").formats_for(SOURCE_ONNX) == ()


def test_fp16_onnx_holds_fp16_weights_and_matches_fp32(digits, shared_cache):
    import onnx
    import onnxruntime as ort

    art = build(digits, "fp16", FORMAT_ONNX, shared_cache)
    model = onnx.load(str(art.path))
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    # The interface stays float32, so every backend feeds it the same inputs as fp32.
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    fp32 = build(digits, "fp32", FORMAT_ONNX, shared_cache)
    assert art.size_bytes < 0.6 * fp32.size_bytes
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": digits.evaluation.inputs["input"]})[0]
    ref = torch_reference(digits)
    assert np.max(np.abs(got - ref)) < 0.05 and (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
    p = art.provenance
    assert p["fp16_initializers"] >= 3 and p["fp32_initializers_left"] == 0
    assert p["cpu_compute"].startswith("storage-size variant")


def test_fp16_openvino_ir_stores_fp16_constants(digits, shared_cache):
    import openvino as ov

    art = build(digits, "fp16", FORMAT_OPENVINO, shared_cache)
    model = ov.Core().read_model(str(art.path))
    f16 = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16]
    assert len(f16) >= 3 and art.provenance["fp16_weight_constants"] == len(f16)
    assert "storage-size" in art.provenance["cpu_compute"]


@pytest.mark.parametrize("recipe,dtype", [("fp16", "float16"), ("bf16", "bfloat16")])
def test_torch_half_module(digits, shared_cache, recipe, dtype):
    import torch

    art = build(digits, recipe, FORMAT_TORCH, shared_cache)
    module = torch.load(art.path, weights_only=False)
    assert all(p.dtype == getattr(torch, dtype) for p in module.parameters())
    with torch.no_grad():
        got = module(torch.from_numpy(digits.evaluation.inputs["input"]))
    assert got.dtype == torch.float32  # cast back: the interface is unchanged
    ref = torch_reference(digits)
    assert (got.numpy().argmax(1) == ref.argmax(1)).mean() >= 0.98
    p = art.provenance
    assert p["weights_dtype"] == dtype and p["half_precision_tensors"] == p["float_tensors"] == 6
    assert recipe in p["cpu_compute"]
