"""The transformers backend on the zoo's tiny causal LMs: next-token logits against fp64, greedy generation against
an independent decoding loop, exactly N stamped tokens, and weight-only artifacts loaded from their state dict."""

from __future__ import annotations

import numpy as np
import pytest

from costbench.backends.base import GenerativeSession
from costbench.backends.transformers_backend import TransformersBackend
from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM, HF_TORCHAO_WEIGHTS, ArtifactCache
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.build.zoo.registry import zoo_model
from causal_lm_helpers import cosine, greedy_by_hand, torch_model

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen"])
def tiny_lm(request, tmp_path_factory):
    """The bundle and its fp32 artifact (a linked Hugging Face folder), built once per model."""
    cache_dir = tmp_path_factory.mktemp(f"{request.param}-cache")
    bundle = zoo_model(request.param).load(cache_dir)
    recipe = get_recipe("fp32")
    artifact = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, ArtifactCache(cache_dir))
    return bundle, artifact, cache_dir


def _session(artifact, **options) -> GenerativeSession:
    backend = TransformersBackend()
    return backend.prepare(artifact, backend.parse_options({"threads": 1, **options}), 1)


def test_next_token_logits_match_an_fp64_forward_pass(tiny_lm, rng):
    import torch

    bundle, artifact, _ = tiny_lm
    vocab = bundle.details["vocab_size"]
    prompts = rng.integers(2, vocab, size=(3, int(rng.integers(5, 40))), dtype=np.int64)
    session = _session(artifact)
    try:
        got = session.run({"input_ids": prompts})[0]
    finally:
        session.close()
    with torch.inference_mode():
        want = torch_model(bundle, "float64")(input_ids=torch.from_numpy(prompts)).logits[:, -1, :].numpy()
    assert got.shape == (3, vocab) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_generate_gives_exactly_n_stamped_tokens_and_the_greedy_continuation(tiny_lm, rng, cache):
    bundle, artifact, _ = tiny_lm
    n = int(rng.integers(4, 12))
    prompt = rng.integers(2, bundle.details["vocab_size"], size=int(rng.integers(8, 48)), dtype=np.int64)
    stamps: list[int] = []
    session = _session(artifact, cache=cache)
    try:
        out = session.generate(prompt[None, :], n, lambda: stamps.append(1))
        assert session.info()["cache"] == cache
    finally:
        session.close()
    assert out.shape == (1, n) and len(stamps) == n
    model = torch_model(bundle, "float64")
    want, gaps = greedy_by_hand(model, prompt, n, model.generation_config.eos_token_id)
    got = out[0].tolist()
    if got != want:
        # fp32 with a KV cache against fp64 without one may break a near-tie differently, never a clear winner.
        first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        assert gaps[first] < 1e-3, (f"token {first}: generate chose {got[first]}, fp64 greedy {want[first]} with a "
                                    f"logit gap of {gaps[first]:.2e} (prompt {prompt.tolist()})")


def test_compiled_generation_gives_the_eager_tokens(tiny_lm, rng):
    bundle, artifact, _ = tiny_lm
    prompt = rng.integers(2, bundle.details["vocab_size"], size=(1, 12), dtype=np.int64)
    eager = _session(artifact)
    try:
        want = eager.generate(prompt, 5, lambda: None)
    finally:
        eager.close()
    compiled = _session(artifact, compile=True)
    try:
        assert compiled.info()["compile"] is True
        got = compiled.generate(prompt, 5, lambda: None)
    finally:
        compiled.close()
    if not np.array_equal(got, want):  # inductor's kernels may break a near-tie differently, never a clear winner
        model = torch_model(bundle, "float64")
        _, gaps = greedy_by_hand(model, prompt[0], 5, model.generation_config.eos_token_id)
        first = int(np.argmax(got[0] != want[0]))
        assert gaps[first] < 1e-3, f"step {first}: compiled {got[0]} vs eager {want[0]}, gap {gaps[first]:.2e}"
    with pytest.raises(ValueError, match="compile needs cache = 'static'"):
        _session(artifact, compile=True, cache="dynamic")


def test_generate_refuses_zero_tokens_and_run_names_a_missing_input(tiny_lm):
    _, artifact, _ = tiny_lm
    session = _session(artifact)
    try:
        with pytest.raises(ValueError, match="new_tokens must be >= 1"):
            session.generate(np.zeros((1, 4), dtype=np.int64), 0, lambda: None)
        with pytest.raises(KeyError, match="input_ids"):
            session.run({"tokens": np.zeros((1, 4), dtype=np.int64)})
    finally:
        session.close()


def test_weight_only_artifacts_load_their_quantized_state_dict(tiny_lm, rng):
    bundle, fp32, cache_dir = tiny_lm
    prompts = bundle.evaluation.inputs["input_ids"][:4]
    reference = _session(fp32)
    try:
        want = reference.run({"input_ids": prompts})[0]
    finally:
        reference.close()
    for name, options, min_cos in (("int8-weight-only", {}, 0.995), ("int4-weight-only", {"group_size": 32}, 0.9)):
        recipe = get_recipe(name)
        artifact = recipe.artifact(bundle, recipe.parse_config(options), FORMAT_HF_CAUSAL_LM, ArtifactCache(cache_dir))
        assert (artifact.directory / HF_TORCHAO_WEIGHTS).exists()
        assert not list(artifact.directory.glob("*.safetensors"))  # the quantized weights replace them
        assert artifact.provenance["bits"] == recipe.bits
        session = _session(artifact)
        try:
            got = session.run({"input_ids": prompts})[0]
            assert "torchao" in session.info()["weights"]["method"]
            assert session.generate(prompts[:1], 3, lambda: None).shape == (1, 3)
        finally:
            session.close()
        cos = cosine(got, want)
        assert cos.min() > min_cos, f"{name}: next-token logits cosine {cos.min():.4f} to fp32"
        assert not np.array_equal(got, want), f"{name}: logits identical to fp32: nothing was quantized"
    int8 = get_recipe("int8-weight-only").artifact(bundle, get_recipe("int8-weight-only").parse_config({}),
                                                   FORMAT_HF_CAUSAL_LM, ArtifactCache(cache_dir))
    assert int8.size_bytes < 0.6 * fp32.size_bytes, (int8.size_bytes, fp32.size_bytes)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_folders_compute_in_their_dtype(tiny_lm, precision):
    bundle, fp32, cache_dir = tiny_lm
    recipe = get_recipe(precision)
    artifact = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, ArtifactCache(cache_dir))
    dtype = {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert artifact.provenance["weights_dtype"] == dtype
    # a step reads half of fp32's bytes (norm weights included, all stored in the half dtype)
    assert artifact.provenance["decode_weight_bytes"] == pytest.approx(fp32.provenance["decode_weight_bytes"] / 2,
                                                                       rel=0.01)
    prompts = bundle.evaluation.inputs["input_ids"][:4]
    sessions = [_session(fp32), _session(artifact)]
    try:
        assert sessions[1].info()["dtype"] == dtype and sessions[0].info()["dtype"] == "float32"
        want, got = (s.run({"input_ids": prompts})[0] for s in sessions)
    finally:
        for s in sessions:
            s.close()
    assert got.dtype == np.float32  # logits come back as float32 whatever the compute dtype
    cos = cosine(got, want)
    assert cos.min() > 0.99 and not np.array_equal(got, want)
