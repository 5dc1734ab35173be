"""LiteRT recipes on real models and the real interpreter: fp32 .tflite matches eager, the quantized ones are what
they say, a user's .tflite is a model source, and a model that cannot convert is skipped with the converter's reason."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed: pip install 'costbench[litert]'")
pytest.importorskip("litert_torch", reason="litert-torch is not installed: pip install 'costbench[litert]'")

import torch  # noqa: E402

from costbench.backends.litert_backend import LiteRTBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_TFLITE, ArtifactCache, InputSpec  # noqa: E402
from costbench.harness.build.compress.base import RecipeNotApplicable  # noqa: E402
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.reference import reference_outputs  # noqa: E402
from costbench.harness.suite.schema import ModelSpec  # noqa: E402
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TFLITE, SOURCE_TORCH, ModelBundle, SampleSet  # noqa: E402
from costbench.harness.build.zoo.registry import load_bundle, source_kind  # noqa: E402
from tiny_factory import Branchy  # noqa: E402

RECIPES = ("tflite-fp32", "tflite-dynamic-int8", "tflite-int8", "tflite-fp16")


def build(bundle, recipe_name, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), FORMAT_TFLITE, cache)


def tflite_outputs(artifact, samples, batch_size=1, **options):
    """Every sample through the litert backend (the last batch padded, then trimmed)."""
    backend = LiteRTBackend()
    session = backend.prepare(artifact, backend.parse_options(options), batch_size)
    return np.concatenate([session.run(batch)[0][:n] for batch, n in samples.batches(batch_size)])


def eager(module, samples, dtype=torch.float32):
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(b["input"]).to(dtype))[:n].numpy()
                               for b, n in samples.batches(min(64, len(samples)))])


def test_formats_and_registration():
    for name in RECIPES:
        recipe = get_recipe(name)
        assert recipe.name == name
        assert recipe.formats_for(SOURCE_TORCH) == (FORMAT_TFLITE,)
        assert recipe.formats_for(SOURCE_TFLITE) == (FORMAT_TFLITE,)
        assert recipe.formats_for(SOURCE_ONNX) == ()
    with pytest.raises(ValueError, match="batch_size"):
        get_recipe("tflite-fp32").parse_config({"batch_size": 0})
    with pytest.raises(ValueError, match="bogus"):
        get_recipe("tflite-int8").parse_config({"bogus": 1})


def test_fp32_digits_matches_eager(digits, shared_cache, rng):
    art = build(digits, "tflite-fp32", shared_cache)
    p = art.provenance
    assert (p["precision"], p["batch"], p["export_batch"], p["source_format"]) == ("fp32", "static", 1, "torch module")
    assert p["xnnpack_partitions"] >= 1 and p["export_max_rel_error"] < 1e-5
    assert p["libraries"]["litert-torch"] == "0.10.0"
    assert art.path.name == "model.tflite" and art.size_bytes == art.path.stat().st_size
    ref = eager(digits.torch_module(), digits.evaluation)
    got = tflite_outputs(art, digits.evaluation)  # every held-out sample
    assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))
    fresh = SampleSet({"input": rng.random((5, *digits.inputs[0].shape)).astype(np.float32)})
    np.testing.assert_allclose(tflite_outputs(art, fresh), eager(digits.torch_module(), fresh), atol=1e-4, rtol=0)
    # The digits CNN flattens to (1, 512): other batch sizes are refused, and the error says how to get one.
    with pytest.raises(ValueError, match="static batch of 1: build the variant with batch_size = 4"):
        tflite_outputs(art, digits.evaluation, 4)
    batch4 = build(digits, "tflite-fp32", shared_cache, batch_size=4)
    assert batch4.provenance["export_batch"] == 4
    got4 = tflite_outputs(batch4, digits.evaluation.take(16), 4)
    assert np.max(np.abs(got4 - ref[:16])) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))


def test_fp32_efficientnet_within_float_rounding_of_eager(effnet, shared_cache):
    art = build(effnet, "tflite-fp32", shared_cache)
    crops = effnet.evaluation.take(16)
    got, ref = tflite_outputs(art, crops), eager(effnet.torch_module(), crops)
    # Measured here: |tflite - eager| up to ~1e-5 on logits up to ~11 (XNNPACK and oneDNN sum in different
    # orders; each is about 1e-5 from an fp64 evaluation, as for ExecuTorch).
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert np.max(np.abs(got - ref)) <= 1e-5 * scale
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_quantized_digits_variants(digits, shared_cache):
    fp32 = build(digits, "tflite-fp32", shared_cache)
    arts = {name: build(digits, name, shared_cache) for name in RECIPES[1:]}
    labels = digits.evaluation.labels
    ref = eager(digits.torch_module(), digits.evaluation)
    fp32_acc = (ref.argmax(1) == labels).mean()
    for name, art in arts.items():
        p = art.provenance
        assert p["fp32_tflite_artifact"] == fp32.key and p["libraries"]["ai-edge-quantizer"] == "0.10.0"
        assert p["quantized_bytes"] == art.size_bytes < fp32.size_bytes
        got = tflite_outputs(art, digits.evaluation)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        assert not np.allclose(got, ref, atol=1e-4), name  # really changed, not the fp32 model
        assert (got.argmax(1) == labels).mean() >= fp32_acc - 0.02, name  # labelled held-out accuracy
    dyn, int8, fp16 = arts["tflite-dynamic-int8"], arts["tflite-int8"], arts["tflite-fp16"]
    assert (dyn.provenance["bits"], dyn.provenance["weight_granularity"], dyn.provenance["calibration"]) == \
        (8, "per-channel", None)
    assert dyn.size_bytes < 0.5 * fp32.size_bytes
    assert "DEQUANTIZE" in fp16.provenance["tflite_ops"] and fp16.provenance["bits"] == 16
    assert fp16.provenance["vs_fp32_tflite"]["max_rel_error"] < 1e-3
    p = int8.provenance
    assert (p["precision"], p["bits"], p["weight_granularity"]) == ("int8", 8, "per-channel")
    # The same real calibration samples as every other static int8 recipe.
    assert p["calibration"]["samples"] == 64 and p["calibration"]["description"] == digits.calibration.description
    material = {n: get_recipe(n).cache_material(digits, get_recipe(n).parse_config({})) for n in ("int8", "tflite-int8")}
    assert material["int8"]["calibration_data"] == material["tflite-int8"]["calibration_data"]
    # Full integer: int8 inputs and outputs, which the backend quantizes/dequantizes at the boundary.
    backend = LiteRTBackend()
    session = backend.prepare(int8, backend.parse_options({}), 1)
    assert session.info()["quantized_inputs"]["input"]["dtype"] == "int8"
    assert "quantized" in session.timing.boundary
    per_tensor = build(digits, "tflite-int8", shared_cache, per_channel=False)
    assert per_tensor.key != int8.key and per_tensor.provenance["weight_granularity"] == "per-tensor"


def test_a_model_that_cannot_convert_is_not_applicable_with_the_converters_reason(tmp_path):
    data = SampleSet({"input": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)})
    bundle = ModelBundle(name="branchy", task="generic", inputs=[InputSpec("input", (4,))], outputs=["out"],
                         calibration=data, evaluation=data, source_hash="test-branchy",
                         module_factory=lambda: Branchy().eval())
    cache = ArtifactCache(tmp_path)
    for name in ("tflite-fp32", "tflite-int8"):
        with pytest.raises(RecipeNotApplicable, match=r"litert-torch 0\.10\.0 cannot convert 'branchy' to LiteRT: .*"):
            build(bundle, name, cache)
    assert not any(p.name.endswith(".json") for p in cache.root.rglob("*"))  # nothing half-written


@pytest.fixture(scope="module")
def user_tflite(tmp_path_factory, digits, shared_cache):
    """The digits model as a user's own .tflite, with its held-out data as the suite's .npz."""
    folder = tmp_path_factory.mktemp("user-tflite")
    path = folder / "digits.tflite"
    path.write_bytes(build(digits, "tflite-fp32", shared_cache).path.read_bytes())
    data = folder / "digits.npz"
    ev = digits.evaluation
    np.savez(data, serving_default_args_0=ev.inputs["input"], labels=ev.labels)
    return path, data


def test_a_users_tflite_is_a_model_source(user_tflite, tmp_path, digits):
    path, data = user_tflite
    spec = ModelSpec(id="my-digits", source="tflite", path=path, data=data)
    assert source_kind(spec) == SOURCE_TFLITE
    bundle = load_bundle(spec, tmp_path)
    assert bundle.source_kind == SOURCE_TFLITE and bundle.task == "classification"
    assert bundle.inputs == [InputSpec("serving_default_args_0", (1, 8, 8), "float32")]  # read from the file
    assert bundle.details["synthetic_data"] is False and bundle.evaluation.labels is not None
    cache = ArtifactCache(tmp_path)
    fp32 = build(bundle, "tflite-fp32", cache)
    assert fp32.path.read_bytes() == path.read_bytes() and fp32.provenance["source_format"] == "tflite file"
    # The fp32 reference of a .tflite is the file itself on LiteRT, so the copied variant matches it exactly.
    ref = reference_outputs(bundle, tmp_path)
    np.testing.assert_array_equal(tflite_outputs(fp32, bundle.evaluation), ref.astype(np.float32))
    held_out = SampleSet({"input": bundle.evaluation.inputs["serving_default_args_0"]})  # the .npz's second half
    np.testing.assert_allclose(ref, eager(digits.torch_module(), held_out), atol=1e-4)
    # The quantizers take a user's float .tflite too; the int8 one calibrates on the first half of the .npz.
    int8 = build(bundle, "tflite-int8", cache)
    assert int8.provenance["calibration"]["description"].startswith("digits.npz: samples 0-")
    got = tflite_outputs(int8, bundle.evaluation)
    assert (got.argmax(1) == bundle.evaluation.labels).mean() >= (ref.argmax(1) == bundle.evaluation.labels).mean() - 0.02
    # An already quantized file is not quantized again.
    again = ModelSpec(id="q", source="tflite", path=int8.path)
    with pytest.raises(RecipeNotApplicable, match="already quantized"):
        build(load_bundle(again, tmp_path), "tflite-dynamic-int8", cache)


def test_a_quantized_users_tflite_takes_float_data(user_tflite, tmp_path, digits, shared_cache):
    int8 = build(digits, "tflite-int8", shared_cache)
    bundle = load_bundle(ModelSpec(id="q", source="tflite", path=int8.path), tmp_path)
    # Declared float32: the data is real-valued, the backend quantizes with the file's scale and zero point.
    assert bundle.inputs[0].dtype == "float32"
    assert bundle.details["tflite_io"]["inputs"][0]["dtype"] == "int8"
    assert bundle.details["synthetic_data"] is True


def test_bad_user_tflite_files_are_named(tmp_path, user_tflite):
    from ai_edge_litert.tools import flatbuffer_utils

    with pytest.raises(ValueError, match="source='tflite' needs 'path'"):
        ModelSpec(id="x", source="tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match=rf"model 'bad': {bad}: not a LiteRT/TensorFlow Lite model"):
        load_bundle(ModelSpec(id="bad", source="tflite", path=bad), tmp_path)
    # A dynamic spatial axis: the per-sample shape cannot come from the file.
    model = flatbuffer_utils.read_model(str(user_tflite[0]))
    subgraph = model.subgraphs[0]
    tensor = subgraph.tensors[subgraph.inputs[0]]
    tensor.shapeSignature = np.array([-1, 1, -1, -1], dtype=np.int32)
    dynamic = tmp_path / "dynamic.tflite"
    flatbuffer_utils.write_model(model, str(dynamic))
    with pytest.raises(ValueError, match=rf"model 'dyn': input 'serving_default_args_0' of {dynamic} has dynamic "
                                         r"dimensions at axes \[2, 3\].*give its per-sample shape in the suite's 'inputs'"):
        load_bundle(ModelSpec(id="dyn", source="tflite", path=dynamic), tmp_path)
    # With the shape in the suite, it loads.
    spec = ModelSpec(id="dyn", source="tflite", path=dynamic,
                     inputs=[{"name": "serving_default_args_0", "shape": [1, 8, 8]}])
    assert load_bundle(spec, tmp_path).inputs[0].shape == (1, 8, 8)


class _Tokens(torch.nn.Module):
    """int64 token ids through an embedding, as a text model takes them; litert-torch makes the input int32."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, 8)
        self.linear = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.linear(self.embed(ids).mean(1))


def test_integer_inputs_calibrate_in_the_models_own_dtype(tmp_path, rng):
    data = SampleSet({"ids": np.random.default_rng(0).integers(0, 10, (16, 6)).astype(np.int64)})
    bundle = ModelBundle(name="tokens", task="generic", inputs=[InputSpec("ids", (6,), "int64")], outputs=["out"],
                         calibration=data, evaluation=data, source_hash="test-tokens",
                         module_factory=lambda: _Tokens().eval())
    cache = ArtifactCache(tmp_path)
    fp32, int8 = build(bundle, "tflite-fp32", cache), build(bundle, "tflite-int8", cache, calibration_samples=16)
    backend = LiteRTBackend()
    ids = rng.integers(0, 10, (1, 6)).astype(np.int64)  # the harness's int64 ids, cast to the file's int32
    with torch.no_grad():
        ref = _Tokens().eval()(torch.from_numpy(ids)).numpy()
    got = backend.prepare(fp32, backend.parse_options({}), 1).run({"ids": ids})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert int8.provenance["calibration"]["samples"] == 16
    assert np.isfinite(backend.prepare(int8, backend.parse_options({}), 1).run({"ids": ids})[0]).all()
