"""int8 options and paths: symmetric activations for TensorRT, calibration choices recorded, dynamic int8
(ONNX Runtime and torch) really int8, NNCF accuracy control within its budget."""

from __future__ import annotations

import numpy as np

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH
from costbench.harness.build.compress.registry import get_recipe


def build(bundle, recipe_name, fmt, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), fmt, cache)


def ort_outputs(path, samples, batch_size=32):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, b)[0][:n] for b, n in samples.batches(batch_size)])


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# ------------------------------------------------------------------------------------------ static int8


def test_symmetric_activations_for_tensorrt(digits, shared_cache):
    art = build(digits, "int8", FORMAT_ONNX, shared_cache, activation_symmetric=True, calibration_method="Entropy",
                calibration_samples=48, calibration_batch_size=16)
    model, init = _initializers(art.path)
    activation_zero_points = [init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zero_points
    for zp in activation_zero_points:
        assert zp.dtype == np.int8 and not zp.any()  # signed, zero point 0: symmetric
    weight_zero_points = [init[n.input[2]] for n in model.graph.node
                          if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8]
    assert weight_zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in weight_zero_points)
    p = art.provenance
    assert p["activation_symmetric"] is True and p["activations"].startswith("symmetric int8")
    # Calibration choices are recorded as made: method, samples, batch size, batches, one batch per pass.
    assert p["calibration"] == {"description": p["calibration"]["description"], "samples": 48, "batch_size": 16,
                                "batches": 3, "batches_per_pass": 1, "method": "Entropy"}
    # TensorRT-bound: biases stay float (no int32 bias DequantizeLinear, which TensorRT's parser rejects)
    assert _int32_bias_dequantize(model, init) == []
    float_biases = [n.input[2] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert float_biases and all(init[b].dtype == np.float32 for b in float_biases)
    assert p["quantize_bias"] is False and p["bias"] == "float32 (not quantized)" and p["int32_bias_dequantize"] == 0
    assert "TensorRT" in p["quantize_bias_reason"]
    labels = digits.evaluation.labels  # and ONNX Runtime still runs it, accurately
    assert (ort_outputs(art.path, digits.evaluation).argmax(1) == labels).mean() >= 0.95


def _int32_bias_dequantize(model, init):
    return [n.name for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int32]


def test_default_activations_stay_asymmetric_uint8(digits, shared_cache):
    art = build(digits, "int8", FORMAT_ONNX, shared_cache)
    model, init = _initializers(art.path)
    assert {init[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"} == {np.dtype(np.uint8)}
    assert art.provenance["activation_symmetric"] is False
    # CPU variant: int32 biases, as ONNX Runtime quantizes them by default
    n_bias = len(_int32_bias_dequantize(model, init))
    assert n_bias > 0 and art.provenance["quantize_bias"] is True and art.provenance["int32_bias_dequantize"] == n_bias
    assert art.provenance["calibration"]["batches"] == 8  # 64 samples in batches of 8, one per pass


# ----------------------------------------------------------------------------------------- dynamic int8


def test_ort_dynamic_int8_on_minilm_is_int8_and_close(minilm, shared_cache):
    art = build(minilm, "int8-dynamic", FORMAT_ONNX, shared_cache)
    model, init = _initializers(art.path)
    ops = [n.op_type for n in model.graph.node]
    # 6 layers x (Q, K, V, attention output, FFN in, FFN out) MatMuls with weights.
    assert ops.count("MatMulInteger") == 36 and ops.count("DynamicQuantizeLinear") >= 1
    int8 = [v for v in init.values() if v.dtype == np.int8 and v.ndim == 2]
    assert len(int8) == 36 and {v.shape for v in int8} == {(384, 384), (384, 1536), (1536, 384)}
    assert not any(v.dtype == np.float32 and v.ndim == 2 and v.shape[1] in (384, 1536) and v.shape[0] in (384, 1536)
                   for v in init.values())  # no fp32 copies of those weights left
    p = art.provenance
    assert p["matmul_integer"] == 36 and p["calibration"] is None and p["op_types"] == ["MatMul", "Gemm"]
    fp32 = build(minilm, "fp32", FORMAT_ONNX, shared_cache)
    # 36 weight matrices shrink 4x; the 30522 x 384 word-embedding table (47 MB, a Gather) stays fp32.
    assert 0.6 * fp32.size_bytes < art.size_bytes < 0.7 * fp32.size_bytes
    sample = minilm.evaluation.take(24)
    ref, got = ort_outputs(fp32.path, sample), ort_outputs(art.path, sample)
    assert float(np.min(np.sum(ref * got, axis=1))) > 0.85  # unit vectors: the dot product is the cosine


def test_torch_dynamic_int8_on_minilm_packs_int8_weights(minilm, shared_cache):
    import torch

    art = build(minilm, "int8-dynamic-torch", FORMAT_TORCH, shared_cache)
    module = torch.load(art.path, weights_only=False)
    quantized = [m for m in module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == 36
    assert all(m.weight().dtype == torch.qint8 for m in quantized)
    assert not any(type(m) is torch.nn.Linear for m in module.modules())
    p = art.provenance
    assert p["quantized_linear_layers"] == p["linear_layers"] == 36 and "deprecated" in p["deprecation"]
    sample = minilm.evaluation.take(8)
    with torch.no_grad():
        args = [torch.from_numpy(sample.inputs[i.name]) for i in minilm.inputs]
        got, ref = module(*args).numpy(), minilm.torch_module()(*args).numpy()
    assert float(np.min(np.sum(ref * got, axis=1))) > 0.85


# ------------------------------------------------------------------------------------ NNCF accuracy control


def test_nncf_accuracy_control_keeps_the_drop_within_budget(digits, shared_cache):
    import openvino as ov

    art = build(digits, "int8-nncf-ac", FORMAT_OPENVINO, shared_cache, max_drop=0.01, validation_samples=200)
    model = ov.Core().read_model(str(art.path))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) >= 1
    assert any(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8 for op in model.get_ops())
    v = art.provenance["validation"]
    assert v["metric"] == "top-1 accuracy (labels)" and v["samples"] == 200 and v["overlaps_calibration"] is False
    assert "samples 64-263" in v["description"]  # held out of the 64 calibration samples
    assert v["drop"] <= 0.01 + 1e-9 and art.provenance["max_drop"] == 0.01
    assert art.provenance["calibration"]["samples"] == 64
