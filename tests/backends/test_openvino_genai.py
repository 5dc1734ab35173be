"""The openvino-genai backend on the zoo's tiny causal LMs, on OpenVINO LLM folders exported by the fp32 recipe
(stateful, fp32 weights) and compressed by NNCF: next-token logits against the fp32 torch model, exactly N stamped
tokens, the greedy continuation of Transformers' fp32 generate, int8/int4 folders (smaller, close logits, the
ratio's int4/int8 split), and a suite end to end."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino_genai", reason="openvino-genai is not installed: pip install 'costbench[genai]'")
pytest.importorskip("openvino_tokenizers", reason="openvino-tokenizers is not installed: pip install 'costbench[genai]'")

from costbench import api  # noqa: E402
from costbench.backends.base import GenerativeSession  # noqa: E402
from costbench.backends.openvino_genai_backend import OpenVinoGenAIBackend  # noqa: E402
from costbench.backends.transformers_backend import TransformersBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM, FORMAT_OPENVINO_LLM, ArtifactCache  # noqa: E402
from costbench.core.metrics import GREEDY_PREFIX_AGREEMENT, OUTPUT_TOKEN_THROUGHPUT, TPOT, TTFT  # noqa: E402
from costbench.harness.build.compress.base import RecipeNotApplicable  # noqa: E402
from costbench.harness.build.compress.openvino_llm import (DETOKENIZER_XML, MODEL_XML, TOKENIZER_XML,  # noqa: E402
                                                           weight_bytes)
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.zoo.registry import zoo_model  # noqa: E402
from causal_lm_helpers import check_eos_never_stops, cosine, greedy_by_hand, torch_model  # noqa: E402

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen"])
def tiny_lm(request, tmp_path_factory):
    """The bundle, its fp32 OpenVINO LLM folder, the fp32 Hugging Face folder and the cache folder."""
    cache_dir = tmp_path_factory.mktemp(f"{request.param}-ovgenai-cache")
    bundle = zoo_model(request.param).load(cache_dir)
    recipe = get_recipe("fp32")
    cache = ArtifactCache(cache_dir)
    ov_llm = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_OPENVINO_LLM, cache)
    hf = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, cache)
    return bundle, ov_llm, hf, cache_dir


def _session(artifact, **options) -> GenerativeSession:
    backend = OpenVinoGenAIBackend()
    return backend.prepare(artifact, backend.parse_options({"threads": 1, **options}), 1)




def _read(path):
    import openvino as ov

    return ov.Core().read_model(str(path))


def test_the_probe_names_the_installed_versions():
    availability = OpenVinoGenAIBackend().probe()
    assert availability.available, availability.reason
    assert set(availability.versions) == {"openvino", "openvino_genai", "openvino_tokenizers"}


def test_the_fp32_folder_is_stateful_with_fp32_weights_and_the_tokenizers(tiny_lm):
    bundle, ov_llm, _, _ = tiny_lm
    files = {p.name for p in ov_llm.directory.iterdir()}
    assert {MODEL_XML, "openvino_model.bin", TOKENIZER_XML, DETOKENIZER_XML, "config.json"} <= files
    assert ov_llm.path.name == MODEL_XML and ov_llm.format == FORMAT_OPENVINO_LLM
    model = _read(ov_llm.path)
    assert sorted(p.get_any_name() for p in model.inputs) == ["attention_mask", "beam_idx", "input_ids",
                                                              "position_ids"]
    assert [p.get_any_name() for p in model.outputs] == ["logits"]
    layers = bundle.details["layers"]
    assert len(model.get_sinks()) == 2 * layers, "one key and one value state per layer"
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_byte_size() > 4096]
    assert weights and {str(op.get_output_element_type(0)) for op in weights} == {"<Type: 'float32'>"}
    total, step = weight_bytes(model)
    # the embedding table, fp32, is what a step does not read (beside a few scalar constants of the lookup)
    embedding = bundle.details["vocab_size"] * bundle.details["hidden_size"] * 4
    assert 0 <= total - step - embedding < 64, (total, step, embedding)
    prov = ov_llm.provenance
    assert prov["stateful"] is True and "compress_to_fp16=False" in prov["weights"]
    assert prov["decode_weight_bytes"] == bundle.details["decode_weight_bytes"]


def test_next_token_logits_match_the_fp32_torch_model(tiny_lm, rng):
    import torch

    bundle, ov_llm, _, _ = tiny_lm
    vocab = bundle.details["vocab_size"]
    session = _session(ov_llm)
    try:
        for _ in range(2):  # twice on one session: the stateful model's KV cache is reset between calls
            prompts = rng.integers(2, vocab, size=(int(rng.integers(1, 4)), int(rng.integers(5, 40))), dtype=np.int64)
            got = session.run({"input_ids": prompts})[0]
            with torch.inference_mode():
                want = torch_model(bundle)(input_ids=torch.from_numpy(prompts)).logits[:, -1, :].numpy()
            assert got.shape == (len(prompts), vocab) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"prompts {prompts.tolist()}")
    finally:
        session.close()



@pytest.mark.parametrize("attention_backend", ["PA", "SDPA"])
def test_generate_gives_exactly_n_stamped_tokens_and_transformers_greedy_continuation(tiny_lm, rng,
                                                                                      attention_backend):
    bundle, ov_llm, hf, _ = tiny_lm
    n = int(rng.integers(4, 24))
    prompt = rng.integers(2, bundle.details["vocab_size"], size=(1, int(rng.integers(8, 48))), dtype=np.int64)
    stamps: list[int] = []
    session = _session(ov_llm, attention_backend=attention_backend)
    try:
        got = session.generate(prompt, n, lambda: stamps.append(1))
        assert session.info()["attention_backend"] == attention_backend
    finally:
        session.close()
    assert got.shape == (1, n) and got.dtype == np.int64 and len(stamps) == n
    backend = TransformersBackend()
    reference = backend.prepare(hf, backend.parse_options({"threads": 1}), 1)
    try:
        want = reference.generate(prompt, n, lambda: None)
    finally:
        reference.close()
    if got[0].tolist() != want[0].tolist():
        # two fp32 kernels (oneDNN, PyTorch) may break a near-tie differently, never a clear winner
        model = torch_model(bundle)
        first = int(np.argmax(got[0] != want[0]))
        gaps = greedy_by_hand(model, prompt[0], first + 1, model.generation_config.eos_token_id)[1]
        assert gaps[first] < 1e-3, (f"token {first}: openvino-genai chose {got[0][first]}, transformers "
                                    f"{want[0][first]} with a logit gap of {gaps[first]:.2e} "
                                    f"(prompt {prompt[0].tolist()})")


def test_end_of_sequence_never_stops_generation(tiny_lm, rng):
    """A prompt whose greedy next token is EOS still gets N tokens, none of them EOS (min_new_tokens masks it)."""
    bundle, ov_llm, _, _ = tiny_lm
    session = _session(ov_llm)
    try:
        eos = int(session._pipeline.get_generation_config().eos_token_id)
        check_eos_never_stops(session, eos, bundle.details["vocab_size"], rng, rounds=8)
    finally:
        session.close()


def test_options_reach_the_session_and_bad_requests_are_named(tiny_lm):
    bundle, ov_llm, hf, _ = tiny_lm
    session = _session(ov_llm, threads=2, kv_cache_precision="u8", dynamic_quantization_group_size=0)
    try:
        info = session.info()
        assert info["inference_precision"] == "f32" and info["kv_cache_precision"] == "u8"
        assert info["dynamic_quantization_group_size"] == 0
        assert info["threads"] == 2 and info["attention_backend"] == "PA"
        prompt = bundle.evaluation.inputs["input_ids"][:1]
        assert session.generate(prompt, 3, lambda: None).shape == (1, 3)
        with pytest.raises(ValueError, match="new_tokens must be >= 1"):
            session.generate(prompt, 0, lambda: None)
        with pytest.raises(ValueError, match="batch of 1 prompt"):
            session.generate(np.concatenate([prompt, prompt]), 3, lambda: None)
        with pytest.raises(KeyError, match="input_ids"):
            session.run({"tokens": prompt})
    finally:
        session.close()
    assert _session(ov_llm).info()["kv_cache_precision"] == "f32"  # 'same' follows the f32 inference precision
    with pytest.raises(ValueError, match="artifact format 'hf-causal-lm' is not supported"):
        _session(hf)
    backend = OpenVinoGenAIBackend()
    with pytest.raises(ValueError, match="batch size 2 is not supported"):
        backend.prepare(ov_llm, backend.parse_options({}), 2)
    with pytest.raises(Exception, match="inference_precision"):
        backend.parse_options({"inference_precision": "int8"})


@pytest.mark.parametrize("name, options, bits, min_cos", [("int4-weight-only", {"group_size": 32}, 4, 0.9),
                                                          ("int8-weight-only", {}, 8, 0.99)])
def test_nncf_folders_are_smaller_and_close(tiny_lm, name, options, bits, min_cos):
    bundle, fp32, _, cache_dir = tiny_lm
    recipe = get_recipe(name)
    artifact = recipe.artifact(bundle, recipe.parse_config(options), FORMAT_OPENVINO_LLM, ArtifactCache(cache_dir))
    prov = artifact.provenance
    assert prov["bits"] == bits and prov["library"] == "nncf" and prov["mode"] == f"INT{bits}_SYM"
    assert prov["fp32_artifact"] == fp32.key and prov["nncf"] and prov["openvino"]
    if bits == 4:
        assert prov["group_size"] == 32 and prov["ratio"] == 1.0
    assert artifact.size_bytes < fp32.size_bytes
    assert (artifact.directory / "openvino_model.bin").stat().st_size < (fp32.directory / "openvino_model.bin").stat(
    ).st_size
    types = {op.get_output_element_type(0).get_type_name() for op in _read(artifact.path).get_ops()
             if op.get_type_name() == "Constant"}
    # int8: i8 weights (symmetric); int4: i4 weights, and the embedding and output head in NNCF's backup int8_asym
    assert ({"i4", "u8"} <= types if bits == 4 else "i8" in types and "i4" not in types), types
    # a step reads about bits/32 of fp32's bytes, plus the scales and the fp32 norm weights
    share = prov["decode_weight_bytes"] / fp32.provenance["decode_weight_bytes"]
    assert bits / 32 < share < bits / 32 + 0.1, share
    prompts = bundle.evaluation.inputs["input_ids"][:4]
    sessions = [_session(fp32), _session(artifact, dynamic_quantization_group_size=0), _session(artifact)]
    try:
        want, got, dynamic = (s.run({"input_ids": prompts})[0] for s in sessions)
        assert sessions[1].generate(prompts[:1], 3, lambda: None).shape == (1, 3)
        assert sessions[2].generate(prompts[:1], 3, lambda: None).shape == (1, 3)
    finally:
        for s in sessions:
            s.close()
    cos = cosine(got, want)
    assert cos.min() > min_cos, f"{name}: next-token logits cosine {cos.min():.4f} to fp32"
    assert not np.array_equal(got, want), f"{name}: logits identical to fp32: nothing was quantized"
    # the plugin's default int8 activations add their own error on top of the weights'
    assert cosine(dynamic, want).min() > min_cos - 0.1


def test_the_int4_ratio_leaves_the_rest_in_int8_and_only_openvino_takes_it(tiny_lm):
    bundle, _, _, cache_dir = tiny_lm
    recipe = get_recipe("int4-weight-only")
    cache = ArtifactCache(cache_dir)
    full = recipe.artifact(bundle, recipe.parse_config({"group_size": 32}), FORMAT_OPENVINO_LLM, cache)
    part = recipe.artifact(bundle, recipe.parse_config({"group_size": 32, "ratio": 0.5}), FORMAT_OPENVINO_LLM, cache)
    assert part.key != full.key and part.provenance["ratio"] == 0.5
    assert part.provenance["weight_bytes"] > full.provenance["weight_bytes"], "int8 layers take more bytes"
    with pytest.raises(RecipeNotApplicable, match="ratio=0.5 is NNCF's"):
        recipe.artifact(bundle, recipe.parse_config({"group_size": 32, "ratio": 0.5}), FORMAT_HF_CAUSAL_LM, cache)
    with pytest.raises(RecipeNotApplicable, match="group_size=48 does not divide"):
        recipe.artifact(bundle, recipe.parse_config({"group_size": 48}), FORMAT_OPENVINO_LLM, cache)
    with pytest.raises(Exception, match="ratio"):
        recipe.parse_config({"ratio": 1.5})


def test_a_suite_runs_generate_on_openvino_genai_end_to_end(tmp_path):
    suite = {"name": "gen-ov", "models": ["tiny-llama"],
             "variants": ["fp32", {"name": "int4-weight-only", "group_size": 32}],
             "backends": [{"name": "openvino-genai", "threads": 1}],
             "scenarios": [{"kind": "generate", "prompt_tokens": 16, "output_tokens": 6, "min_count": 3}],
             "processes": 1, "remeasure_contended": False}
    run = api.run(suite, tmp_path / "results")
    assert run.counts == {"ok": 2, "skipped": 0, "failed": 0}
    value = {(r.variant, r.metric): r.value for r in run.results().itertuples()}
    for variant in ("fp32", "int4-weight-only"):
        for metric in (TPOT.p50, TTFT.p50, OUTPUT_TOKEN_THROUGHPUT, GREEDY_PREFIX_AGREEMENT, "top1_agreement",
                       "decode_weight_bytes", "tpot_memory_bound"):
            assert (variant, metric) in value, (variant, metric)
        assert value[(variant, "output_tokens")] == 6
    assert value[("fp32", "top1_agreement")] == 1.0
    assert value[("int4-weight-only", "model_size")] < value[("fp32", "model_size")]
    assert value[("int4-weight-only", "decode_weight_bytes")] < 0.3 * value[("fp32", "decode_weight_bytes")]
