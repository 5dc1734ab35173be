"""ExecuTorch recipes on real models and the real runtime: fp32 .pte matches eager, int8-xnnpack really is int8."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("executorch", reason="executorch is not installed: pip install 'costbench[edge]'")

import torch  # noqa: E402

from costbench.backends.executorch_backend import ExecuTorchBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_EXECUTORCH, ArtifactCache, InputSpec  # noqa: E402
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.compress.executorch_export import MAX_BATCH, ExecuTorchExportError  # noqa: E402
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH, ModelBundle, SampleSet  # noqa: E402
from tiny_factory import Branchy  # noqa: E402


def build(bundle, recipe_name, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), FORMAT_EXECUTORCH, cache)


def pte_outputs(artifact, samples, batch_size):
    """Every sample through the executorch backend at ``batch_size`` (the last batch padded, then trimmed)."""
    backend = ExecuTorchBackend()
    session = backend.prepare(artifact, backend.parse_options({}), batch_size)
    return np.concatenate([session.run(batch)[0][:n] for batch, n in samples.batches(batch_size)])


def eager(module, samples, batch_size=64, dtype=torch.float32):
    batch_size = min(batch_size, len(samples))  # batches() pads the last batch: do not compute padding
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(b["input"]).to(dtype))[:n].numpy()
                               for b, n in samples.batches(batch_size)])


def fresh_samples(rng, bundle, n):
    shape = bundle.inputs[0].shape
    return SampleSet({bundle.inputs[0].name: rng.standard_normal((n, *shape)).astype(np.float32)})


def tiny_bundle(module_factory, name="tiny", shape=(3, 16, 16), n=64):
    rng = np.random.default_rng(0)
    data = SampleSet({"input": rng.standard_normal((n, *shape)).astype(np.float32)}, None, "seeded gaussian")
    return ModelBundle(name=name, task="generic", inputs=[InputSpec("input", shape)], outputs=["out"],
                       calibration=data, evaluation=data, source_hash=f"test-{name}", module_factory=module_factory)


def test_formats():
    assert FORMAT_EXECUTORCH in get_recipe("fp32").formats_for(SOURCE_TORCH)
    assert FORMAT_EXECUTORCH not in get_recipe("fp32").formats_for(SOURCE_ONNX)  # torch.export needs the module
    assert get_recipe("int8-xnnpack").formats_for(SOURCE_TORCH) == (FORMAT_EXECUTORCH,)
    assert get_recipe("int8-xnnpack").formats_for(SOURCE_ONNX) == ()
    with pytest.raises(ValueError, match="calibration_batch_size"):
        get_recipe("int8-xnnpack").parse_config({"calibration_batch_size": MAX_BATCH + 1})


def test_fp32_digits_matches_eager_at_any_batch(digits, shared_cache, rng):
    art = build(digits, "fp32", shared_cache)
    p = art.provenance
    assert (p["batch"], p["max_batch"], p["delegate"]) == ("dynamic", MAX_BATCH, "XnnpackBackend")
    assert p["xnnpack_delegate_calls"] >= 1 and p["export_max_abs_error"] < 1e-4
    assert art.path.name == "model.pte" and art.size_bytes == art.path.stat().st_size
    ref = eager(digits.torch_module(), digits.evaluation)
    for batch in (7, MAX_BATCH):  # every held-out sample, at sizes the export never saw (64 > the 15 torch guards)
        got = pte_outputs(art, digits.evaluation, batch)
        assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))
    fresh = fresh_samples(rng, digits, 5)
    np.testing.assert_allclose(pte_outputs(art, fresh, 5), eager(digits.torch_module(), fresh), atol=1e-4, rtol=0)


def test_fp32_efficientnet_within_float_rounding_of_eager(effnet, shared_cache, rng):
    art = build(effnet, "fp32", shared_cache)
    assert art.provenance["batch"] == "dynamic"
    module = effnet.torch_module()
    crops = effnet.evaluation.take(16)
    got, ref = pte_outputs(art, crops, 1), eager(module, crops)
    # Measured here: |pte - eager| up to 2.1e-5 on logits up to 11.7 (all 137 crops); XNNPACK and oneDNN sum
    # in different orders, each about 1e-5 from an fp64 evaluation of the same network.
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert np.max(np.abs(got - ref)) <= 1e-5 * scale
    assert (got.argmax(1) == ref.argmax(1)).all()
    few = crops.take(3)  # fp64 convolutions take seconds per crop on the CPU
    exact = eager(effnet.torch_module().double(), few, dtype=torch.float64)
    assert np.max(np.abs(got[:3] - exact)) <= 1e-5 * scale
    fresh = fresh_samples(rng, effnet, 2)
    got, ref = pte_outputs(art, fresh, 2), eager(module, fresh)
    assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))


def test_int8_digits_is_int8_and_keeps_accuracy(digits, shared_cache, rng):
    art = build(digits, "int8-xnnpack", shared_cache)
    fp32 = build(digits, "fp32", shared_cache)
    p = art.provenance
    assert art.size_bytes < 0.5 * fp32.size_bytes
    assert (p["precision"], p["bits"], p["weight_granularity"], p["batch"]) == ("int8", 8, "per-channel", "dynamic")
    assert p["quantized_graph"]["dequantize_per_channel"] == 3  # two convolutions and the classifier
    assert not any("quantize" in op for op in p["portable_ops"])  # XNNPACK runs every quantized op
    # The same real calibration samples as the other int8 recipes.
    assert p["calibration"]["samples"] == 64 and p["calibration"]["description"] == digits.calibration.description
    material = {name: get_recipe(name).cache_material(digits, get_recipe(name).parse_config({}))
                for name in ("int8", "int8-xnnpack")}
    assert material["int8"]["calibration_data"] == material["int8-xnnpack"]["calibration_data"]
    # Accuracy on the labelled held-out split, as the harness measures it.
    labels = digits.evaluation.labels
    got = pte_outputs(art, digits.evaluation, 16)
    ref = eager(digits.torch_module(), digits.evaluation)
    assert (got.argmax(1) == labels).mean() >= (ref.argmax(1) == labels).mean() - 0.01
    assert not np.allclose(got, ref, atol=1e-4)  # really quantized, not the fp32 program
    fresh = fresh_samples(rng, digits, 3)
    assert np.isfinite(pte_outputs(art, fresh, 3)).all()


def _conv_relu6():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU6(),
                                torch.nn.Conv2d(16, 8, 3, padding=1), torch.nn.ReLU6(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    with torch.no_grad():  # wide pre-clamp outputs, as in EfficientNet-Lite: most of the range is clipped away
        model[0].weight.mul_(8.0)
        model[2].weight.mul_(8.0)
    return model.eval()


def test_relu6_fusion_observes_the_clamped_range(tmp_path, rng):
    bundle = tiny_bundle(_conv_relu6, "conv-relu6")
    cache = ArtifactCache(tmp_path)
    fused, stock = build(bundle, "int8-xnnpack", cache), build(bundle, "int8-xnnpack", cache, fuse_relu6=False)
    assert fused.provenance["fused_conv_relu6"] == 2 and stock.provenance["fused_conv_relu6"] == 0
    assert "aten.hardtanh.default" not in str(fused.provenance["portable_ops"])  # XNNPACK folds the clamp in
    fresh = fresh_samples(rng, bundle, 32)
    ref = eager(_conv_relu6(), fresh)
    # Mean absolute error over 32 fresh samples; measured here: fused ~0.0065, stock ~0.052 (outputs up to ~2.4).
    err = {name: float(np.mean(np.abs(pte_outputs(art, fresh, 8) - ref))) for name, art in
           (("fused", fused), ("stock", stock))}
    assert err["fused"] < 0.3 * err["stock"], err


class _IntegerIndex(torch.nn.Module):
    """Integer arithmetic feeding an index, as transformers' attention-mask code does, then float ops."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        idx = (torch.arange(x.shape[1]) + 1) % x.shape[1]
        return self.linear(x[:, idx] * 2.0)


def test_int8_keeps_integer_arithmetic_integer(tmp_path, rng, torch_rng):
    # The stock XNNPACKQuantizer makes the 1 in `arange + 1` a float tensor, and indexing then fails.
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from costbench.harness.build.compress.executorch_export import export_program

    bundle = tiny_bundle(lambda: _IntegerIndex().eval(), "integer-index", shape=(8,))
    program, _ = export_program(_IntegerIndex().eval(), bundle.inputs, bundle.calibration, "integer-index")
    stock = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(get_symmetric_quantization_config()))
    with pytest.raises(IndexError, match="tensors used as indices"):
        stock(torch.randn(4, 8, generator=torch_rng))
    art = build(bundle, "int8-xnnpack", ArtifactCache(tmp_path))
    assert art.provenance["quantized_graph"]["dequantize_per_channel"] == 1
    # Samples the quantizer calibrated on (a random pick): a fresh gaussian may lie beyond the calibrated
    # range and be clipped, which is int8 doing its job, not the integer index path going wrong.
    pick = rng.choice(len(bundle.calibration), size=5, replace=False)
    chosen = SampleSet({"input": bundle.calibration.inputs["input"][pick]})
    got, ref = pte_outputs(art, chosen, 5), eager(_IntegerIndex().eval(), chosen)
    assert np.max(np.abs(got - ref)) < 0.05 * max(1.0, float(np.max(np.abs(ref))))


def test_an_unexportable_model_fails_with_the_exporters_reason(tmp_path):
    bundle = tiny_bundle(lambda: Branchy().eval(), "branchy", shape=(4,))
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ExecuTorchExportError, match="torch.export could not export 'branchy' for ExecuTorch: .*data"):
        build(bundle, "fp32", cache)
    assert not any(p.name.endswith(".json") for p in cache.root.rglob("*"))  # nothing half-written
