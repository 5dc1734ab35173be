"""The onnxruntime-genai backend on the zoo's tiny causal LMs, on folders built by ONNX Runtime GenAI's own model
builder: next-token logits against the fp32 torch model, exactly N stamped tokens, the greedy continuation of
Transformers' fp32 generate, int4/int8 MatMulNBits folders (smaller, close logits), and a suite end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed: pip install 'costbench[genai]'")
pytest.importorskip("onnx_ir", reason="onnx-ir (ONNX Runtime GenAI's model builder) is not installed: "
                                      "pip install 'costbench[genai]'")

from costbench import api  # noqa: E402
from costbench.backends.base import GenerativeSession  # noqa: E402
from costbench.backends.onnxruntime_genai_backend import OnnxRuntimeGenAIBackend  # noqa: E402
from costbench.backends.transformers_backend import TransformersBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM, FORMAT_ORT_GENAI, ArtifactCache  # noqa: E402
from costbench.core.metrics import GREEDY_PREFIX_AGREEMENT, OUTPUT_TOKEN_THROUGHPUT, TPOT, TTFT  # noqa: E402
from costbench.harness.build.compress.ort_genai import GENAI_CONFIG, weight_bytes  # noqa: E402
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.zoo.registry import zoo_model  # noqa: E402
from causal_lm_helpers import check_eos_never_stops, cosine, greedy_by_hand, torch_model  # noqa: E402

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen"])
def tiny_lm(request, tmp_path_factory):
    """The bundle, its fp32 ORT GenAI folder (built by the model builder) and the fp32 Hugging Face folder."""
    cache_dir = tmp_path_factory.mktemp(f"{request.param}-ortgenai-cache")
    bundle = zoo_model(request.param).load(cache_dir)
    recipe = get_recipe("fp32")
    cache = ArtifactCache(cache_dir)
    ort = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_ORT_GENAI, cache)
    hf = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, cache)
    return bundle, ort, hf, cache_dir


def _session(artifact, **options) -> GenerativeSession:
    backend = OnnxRuntimeGenAIBackend()
    return backend.prepare(artifact, backend.parse_options({"threads": 1, **options}), 1)



def _weight_matmuls(model_path) -> dict[str, int]:
    """How many MatMul / MatMulNBits nodes multiply by an initializer (a weight), by op type."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("MatMul", "MatMulNBits") and node.input[1] in weights:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts



def test_the_fp32_folder_is_the_builders_and_a_step_reads_the_bundles_bytes(tiny_lm):
    bundle, ort, _, _ = tiny_lm
    files = {p.name for p in ort.directory.iterdir()}
    assert {GENAI_CONFIG, "model.onnx", "tokenizer.json"} <= files and ort.path.name == GENAI_CONFIG
    config = json.loads(ort.path.read_text())
    assert config["model"]["vocab_size"] == bundle.details["vocab_size"]
    prov = ort.provenance
    assert prov["onnxruntime_genai"] == "0.18.0" and "-p fp32 -e cpu" in prov["builder"]
    # fp32: the builder's initializers minus the lookup tables are exactly the safetensors' non-embedding bytes, but
    # for the biases that are all zero (tiny-qwen's q/k/v biases as Transformers initializes them): the builder
    # leaves those out of the graph
    from safetensors.numpy import load_file

    zero_biases = sum(v.nbytes for f in bundle.hf_path.glob("*.safetensors") for k, v in load_file(str(f)).items()
                      if k.endswith(".bias") and not v.any())
    assert prov["decode_weight_bytes"] == bundle.details["decode_weight_bytes"] - zero_biases
    assert "model.embed_tokens.weight" in weight_bytes(ort.directory / "model.onnx")["lookup_tables"]


def test_next_token_logits_match_the_fp32_torch_model(tiny_lm, rng):
    import torch

    bundle, ort, _, _ = tiny_lm
    vocab = bundle.details["vocab_size"]
    prompts = rng.integers(2, vocab, size=(int(rng.integers(1, 4)), int(rng.integers(5, 40))), dtype=np.int64)
    session = _session(ort)
    try:
        got = session.run({"input_ids": prompts})[0]
    finally:
        session.close()
    with torch.inference_mode():
        want = torch_model(bundle)(input_ids=torch.from_numpy(prompts)).logits[:, -1, :].numpy()
    assert got.shape == (len(prompts), vocab) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                               err_msg=f"prompts {prompts.tolist()}")



def test_generate_gives_exactly_n_stamped_tokens_and_transformers_greedy_continuation(tiny_lm, rng):
    bundle, ort, hf, _ = tiny_lm
    n = int(rng.integers(4, 16))
    rows = int(rng.integers(1, 3))
    prompts = rng.integers(2, bundle.details["vocab_size"], size=(rows, int(rng.integers(8, 48))), dtype=np.int64)
    stamps: list[int] = []
    session = _session(ort)
    try:
        got = session.generate(prompts, n, lambda: stamps.append(1))
    finally:
        session.close()
    assert got.shape == (rows, n) and len(stamps) == n
    backend = TransformersBackend()
    reference = backend.prepare(hf, backend.parse_options({"threads": 1}), 1)
    try:
        want = reference.generate(prompts, n, lambda: None)
    finally:
        reference.close()
    model = torch_model(bundle)
    for row in range(rows):
        if got[row].tolist() != want[row].tolist():
            # two fp32 kernels (MLAS with GroupQueryAttention, PyTorch) may break a near-tie differently, never a
            # clear winner
            first = int(np.argmax(got[row] != want[row]))
            gaps = greedy_by_hand(model, prompts[row], first + 1, model.generation_config.eos_token_id)[1]
            assert gaps[first] < 1e-3, (f"row {row} token {first}: onnxruntime-genai chose {got[row][first]}, "
                                        f"transformers {want[row][first]} with a logit gap of {gaps[first]:.2e} "
                                        f"(prompt {prompts[row].tolist()})")


def test_end_of_sequence_never_stops_generation(tiny_lm, rng):
    """A prompt whose greedy next token is EOS still gets N tokens, none of them EOS: min_length masks it."""
    bundle, ort, _, _ = tiny_lm
    eos = json.loads(ort.path.read_text())["model"]["eos_token_id"]
    session = _session(ort)  # run() slices the 1024-prompt batches into the generator's limit
    try:
        check_eos_never_stops(session, eos, bundle.details["vocab_size"], rng, rounds=16)
    finally:
        session.close()


def test_options_reach_the_session_and_bad_requests_are_named(tiny_lm):
    bundle, ort, _, _ = tiny_lm
    session = _session(ort, threads=2, spinning=False, share_kv_buffer=False)
    try:
        info = session.info()
        assert info["session_options"] == {"session.intra_op.allow_spinning": "0", "intra_op_num_threads": 2,
                                           "inter_op_num_threads": 1}
        assert info["share_kv_buffer"] is False and info["onnxruntime_genai"] == "0.18.0"
        prompt = bundle.evaluation.inputs["input_ids"][:1]
        assert session.generate(prompt, 3, lambda: None).shape == (1, 3)
        with pytest.raises(ValueError, match="new_tokens must be >= 1"):
            session.generate(prompt, 0, lambda: None)
        with pytest.raises(ValueError, match="exceeds the model's context_length"):
            session.generate(prompt, 10**6, lambda: None)
        with pytest.raises(KeyError, match="input_ids"):
            session.run({"tokens": prompt})
    finally:
        session.close()
    with pytest.raises(ValueError, match="artifact format 'hf-causal-lm' is not supported"):
        _session(tiny_lm[2])


@pytest.mark.parametrize("name, options, bits, min_cos", [("int4-weight-only", {"group_size": 32}, 4, 0.9),
                                                          ("int8-weight-only", {}, 8, 0.99)])
def test_weight_only_folders_are_matmulnbits_smaller_and_close(tiny_lm, name, options, bits, min_cos):
    bundle, fp32, _, cache_dir = tiny_lm
    recipe = get_recipe(name)
    artifact = recipe.artifact(bundle, recipe.parse_config(options), FORMAT_ORT_GENAI, ArtifactCache(cache_dir))
    prov = artifact.provenance
    assert prov["bits"] == bits and "MatMulNBits" in prov["method"] and f"-p int{bits}" in prov["builder"]
    assert prov["block_size"] == options.get("group_size", 128)
    # every MatMul with a weight (the output head included) became a MatMulNBits; the embedding stayed fp32
    assert _weight_matmuls(artifact.directory / "model.onnx") == {"MatMulNBits": _weight_matmuls(
        fp32.directory / "model.onnx")["MatMul"]}
    assert artifact.size_bytes < fp32.size_bytes
    # a step reads about bits/32 of fp32's bytes, plus one fp32 scale per block (and the fp32 norm weights)
    ratio = prov["decode_weight_bytes"] / fp32.provenance["decode_weight_bytes"]
    assert bits / 32 < ratio < bits / 32 + 4 / options.get("group_size", 128) + 0.02, ratio
    prompts = bundle.evaluation.inputs["input_ids"][:4]
    sessions = [_session(fp32), _session(artifact)]
    try:
        want, got = (s.run({"input_ids": prompts})[0] for s in sessions)
        assert sessions[1].generate(prompts[:1], 3, lambda: None).shape == (1, 3)
    finally:
        for s in sessions:
            s.close()
    cos = cosine(got, want)
    assert cos.min() > min_cos, f"{name}: next-token logits cosine {cos.min():.4f} to fp32"
    assert not np.array_equal(got, want), f"{name}: logits identical to fp32: nothing was quantized"


def test_a_suite_runs_generate_on_onnxruntime_genai_end_to_end(tmp_path):
    suite = {"name": "gen-ort", "models": ["tiny-llama"],
             "variants": ["fp32", {"name": "int4-weight-only", "group_size": 32}],
             "backends": [{"name": "onnxruntime-genai", "threads": 1}],
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


def test_probe_reports_versions_and_says_what_to_install_when_missing(monkeypatch):
    import sys

    available = OnnxRuntimeGenAIBackend().probe()
    assert available.available and available.versions["onnxruntime_genai"] == "0.18.0"
    # None in sys.modules makes `import onnxruntime_genai` raise ModuleNotFoundError, as if never installed.
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    missing = OnnxRuntimeGenAIBackend().probe()
    assert not missing.available
    assert missing.reason == "onnxruntime_genai is not installed: pip install onnxruntime-genai"


def test_a_block_size_matmulnbits_does_not_take_skips_the_case(tiny_lm):
    from costbench.harness.build.compress.base import RecipeNotApplicable

    bundle, _, _, cache_dir = tiny_lm
    recipe = get_recipe("int4-weight-only")
    with pytest.raises(RecipeNotApplicable, match="block size in 16, 32, 64, 128, 256; group_size=48"):
        recipe.artifact(bundle, recipe.parse_config({"group_size": 48}), FORMAT_ORT_GENAI, ArtifactCache(cache_dir))
