"""The llama-cpp backend on the zoo's tiny causal LMs, on GGUF files written by our conversion and quantized by
llama.cpp itself: F32 logits against the fp32 torch model (a wrong q/k permutation or bias would show), exactly N
stamped tokens and Transformers' greedy continuation, BF16/Q8_0/Q4_K_M files (smaller, close logits), the recipes'
not-applicable cases, a suite end to end, and the probe's message when llama-cpp-python is missing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'costbench[genai]'")
pytest.importorskip("gguf", reason="gguf is not installed: pip install 'costbench[genai]'")

from costbench import api  # noqa: E402
from costbench.backends.base import GenerativeSession  # noqa: E402
from costbench.backends.llama_cpp_backend import LlamaCppBackend, _model_params, has_amx_matmul  # noqa: E402
from costbench.backends.transformers_backend import TransformersBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_GGUF, FORMAT_HF_CAUSAL_LM, ArtifactCache  # noqa: E402
from costbench.core.metrics import GREEDY_PREFIX_AGREEMENT, OUTPUT_TOKEN_THROUGHPUT, TPOT, TTFT  # noqa: E402
from costbench.harness.build.compress.base import RecipeNotApplicable  # noqa: E402
from costbench.harness.build.compress.gguf import GGUF_FILE  # noqa: E402
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.zoo.registry import load_bundle, zoo_model  # noqa: E402
from costbench.harness.suite.schema import ModelSpec  # noqa: E402
from causal_lm_helpers import check_eos_never_stops, cosine, greedy_by_hand, torch_model  # noqa: E402

pytestmark = pytest.mark.timeout(900)


def _artifacts(bundle, cache_dir):
    recipe = get_recipe("fp32")
    cache = ArtifactCache(cache_dir)
    return (recipe.artifact(bundle, recipe.parse_config({}), FORMAT_GGUF, cache),
            recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, cache))


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen"])
def tiny_lm(request, tmp_path_factory):
    """The bundle, its F32 GGUF file (our conversion) and the fp32 Hugging Face folder."""
    cache_dir = tmp_path_factory.mktemp(f"{request.param}-gguf-cache")
    bundle = zoo_model(request.param).load(cache_dir)
    gguf_file, hf = _artifacts(bundle, cache_dir)
    return bundle, gguf_file, hf, cache_dir


def _session(artifact, **options) -> GenerativeSession:
    backend = LlamaCppBackend()
    return backend.prepare(artifact, backend.parse_options({"threads": 1, **options}), 1)


def _fp32_logits(bundle, prompts: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch_model(bundle)(input_ids=torch.from_numpy(prompts)).logits[:, -1, :].numpy()


def _check_exact(bundle, gguf_file, rng) -> None:
    """llama.cpp's logits on the F32 file equal the fp32 torch model's to fp32 rounding, on fresh random prompts."""
    vocab = bundle.details["vocab_size"]
    prompts = rng.integers(2, vocab, size=(int(rng.integers(1, 4)), int(rng.integers(5, 60))), dtype=np.int64)
    session = _session(gguf_file)
    try:
        got = session.run({"input_ids": prompts})[0]
    finally:
        session.close()
    want = _fp32_logits(bundle, prompts)
    assert got.shape == (len(prompts), vocab) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                               err_msg=f"prompts {prompts.tolist()}")


def test_the_f32_file_gives_the_fp32_models_logits(tiny_lm, rng):
    bundle, gguf_file, _, _ = tiny_lm
    prov = gguf_file.provenance
    assert gguf_file.path.name == GGUF_FILE and prov["gguf_type"] == "F32" and set(prov["tensor_types"]) == {"F32"}
    # a step reads every weight but the embedding: the safetensors' count, as the GGUF holds the same fp32 tensors
    assert prov["decode_weight_bytes"] == bundle.details["decode_weight_bytes"]
    _check_exact(bundle, gguf_file, rng)


def test_qwen2_biases_are_converted(tmp_path, rng):
    """tiny-qwen's q/k/v biases are zero as Transformers initializes them; a copy with random biases must still
    give the torch model's logits (a bias left out or misnamed would show)."""
    from safetensors.numpy import load_file, save_file

    base = zoo_model("tiny-qwen").load(tmp_path / "cache")
    folder = tmp_path / "biased-qwen"
    shutil.copytree(base.hf_path, folder)
    for f in folder.glob("*.safetensors"):
        tensors = load_file(str(f))
        for name in tensors:
            if name.endswith(".bias"):
                tensors[name] = rng.normal(0, 0.5, tensors[name].shape).astype(np.float32)
        save_file(tensors, str(f), metadata={"format": "pt"})
    bundle = load_bundle(ModelSpec(id="biased-qwen", source="hf", path=folder), tmp_path / "cache")
    gguf_file, _ = _artifacts(bundle, tmp_path / "cache")
    _check_exact(bundle, gguf_file, rng)


def test_generate_gives_exactly_n_stamped_tokens_and_transformers_greedy_continuation(tiny_lm, rng):
    bundle, gguf_file, hf, _ = tiny_lm
    n = int(rng.integers(4, 16))
    vocab = bundle.details["vocab_size"]
    prompts = rng.integers(2, vocab, size=(2, int(rng.integers(8, 48))), dtype=np.int64)
    prompts[1, : prompts.shape[1] // 2] = prompts[0, : prompts.shape[1] // 2]  # a shared prefix, which is not reused
    session = _session(gguf_file)
    backend = TransformersBackend()
    reference = backend.prepare(hf, backend.parse_options({"threads": 1}), 1)
    model = torch_model(bundle)
    try:
        lc, ctx = session._lc, session._llm.ctx
        for row in (0, 1, 0):
            stamps: list[int] = []
            lc.llama_perf_context_reset(ctx)
            got = session.generate(prompts[row:row + 1], n, lambda: stamps.append(1))
            assert got.shape == (1, n) and len(stamps) == n
            # llama.cpp's own counters: the whole prompt was prefilled (no prefix kept from the previous request),
            # then one single-token step per token after the first
            perf = lc.llama_perf_context(ctx)
            assert (perf.n_p_eval, perf.n_eval) == (prompts.shape[1], n - 1)
            want = reference.generate(prompts[row:row + 1], n, lambda: None)
            if got[0].tolist() != want[0].tolist():
                # two fp32 kernels (ggml, PyTorch) may break a near-tie differently, never a clear winner
                first = int(np.argmax(got[0] != want[0]))
                gaps = greedy_by_hand(model, prompts[row], first + 1, model.generation_config.eos_token_id)[1]
                assert gaps[first] < 1e-3, (f"token {first}: llama.cpp chose {got[0][first]}, transformers "
                                            f"{want[0][first]} with a logit gap of {gaps[first]:.2e} "
                                            f"(prompt {prompts[row].tolist()})")
    finally:
        session.close()
        reference.close()


def test_end_of_sequence_never_stops_generation(tiny_lm, rng):
    """A prompt whose greedy next token is EOS still gets N tokens, none of them EOS: the sampler masks it."""
    bundle, gguf_file, _, _ = tiny_lm
    session = _session(gguf_file)
    try:
        eos = json.loads((bundle.hf_path / "config.json").read_text())["eos_token_id"]
        check_eos_never_stops(session, eos, bundle.details["vocab_size"], rng, rounds=16)
    finally:
        session.close()


def test_options_reach_the_session_and_bad_requests_are_named(tiny_lm):
    bundle, gguf_file, hf, _ = tiny_lm
    session = _session(gguf_file, threads=2, context=64, kv_cache="f16")
    try:
        info = session.info()
        assert (info["n_threads"], info["n_threads_batch"], info["context_option"], info["kv_cache"]) == (2, 2, 64, "f16")
        assert 64 <= info["n_ctx"] < 1024  # llama.cpp rounds the context up to its padding (256)
        assert info["llama_cpp_python"] == "0.3.36"
        prompt = bundle.evaluation.inputs["input_ids"][:1, :16]
        assert session.generate(prompt, 3, lambda: None).shape == (1, 3)
        with pytest.raises(ValueError, match="new_tokens must be >= 1"):
            session.generate(prompt, 0, lambda: None)
        with pytest.raises(ValueError, match=f"exceeds the context n_ctx = {info['n_ctx']}"):
            session.generate(prompt, info["n_ctx"], lambda: None)
        with pytest.raises(ValueError, match="one prompt per request"):
            session.generate(np.repeat(prompt, 2, axis=0), 3, lambda: None)
        with pytest.raises(KeyError, match="input_ids"):
            session.run({"tokens": prompt})
    finally:
        session.close()
    default = _session(gguf_file)
    try:  # unset, the context is the model's trained one (1024 positions, below the cap)
        assert default.info()["n_ctx"] == bundle.details.get("max_position_embeddings", 1024)
    finally:
        default.close()
    backend = LlamaCppBackend()
    with pytest.raises(ValueError, match="only batch_size 1"):
        backend.prepare(gguf_file, backend.parse_options({"threads": 1}), 2)
    with pytest.raises(ValueError, match="artifact format 'hf-causal-lm' is not supported"):
        _session(hf)


def test_repack_is_off_where_the_build_has_the_amx_matmul_and_reaches_llama_cpp(tiny_lm):
    import llama_cpp as lc

    bundle, gguf_file, _, _ = tiny_lm
    default = lc.llama_cpp.llama_model_default_params
    assert default().use_extra_bufts  # llama.cpp's own default: on
    with _model_params(lc, use_extra_bufts=False):
        assert not lc.llama_cpp.llama_model_default_params().use_extra_bufts
    assert lc.llama_cpp.llama_model_default_params is default  # put back
    with pytest.raises(RuntimeError, match="no llama_model_params field 'no_such_field'"):
        with _model_params(lc, no_such_field=1):
            pass
    assert lc.llama_cpp.llama_model_default_params is default
    prompt = bundle.evaluation.inputs["input_ids"][:1, :16]
    tokens = {}
    for repack in (None, False, True):
        session = _session(gguf_file, repack=repack)
        try:
            info = session.info()
            assert info["repack"] is (not has_amx_matmul(lc) if repack is None else repack)
            assert info["repack_option"] is repack
            tokens[repack] = session.generate(prompt, 4, lambda: None)
        finally:
            session.close()
    # an F32 file has no repacked layout: the same greedy tokens either way
    assert np.array_equal(tokens[None], tokens[False]) and np.array_equal(tokens[False], tokens[True])


@pytest.mark.parametrize("name, gguf_type, types, min_cos", [
    ("bf16", "LLAMA_FTYPE_MOSTLY_BF16", {"BF16"}, 0.999),
    ("int8-weight-only", "LLAMA_FTYPE_MOSTLY_Q8_0", {"Q8_0"}, 0.99),
    # the tiny models' rows are 128 wide, not a multiple of Q4_K's 256: llama.cpp falls back to Q5_0/Q8_0 there
    ("int4-weight-only", "LLAMA_FTYPE_MOSTLY_Q4_K_M", {"Q4_K", "Q6_K", "Q5_0", "Q8_0"}, 0.9)])
def test_llama_cpp_quantized_files_are_smaller_and_close(tiny_lm, name, gguf_type, types, min_cos):
    bundle, fp32, _, cache_dir = tiny_lm
    recipe = get_recipe(name)
    artifact = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_GGUF, ArtifactCache(cache_dir))
    prov = artifact.provenance
    assert prov["gguf_file_type"] == gguf_type and "llama_model_quantize" in prov["quantizer"]
    assert set(prov["tensor_types"]) - {"F32"} <= types and set(prov["block_layouts"]) == set(prov["tensor_types"])
    assert prov["tensor_types"]["F32"] == sum(fp32.provenance["tensor_types"].values()) - sum(
        n for k, n in prov["tensor_types"].items() if k != "F32")  # only the 1-D norms and biases stay F32
    assert artifact.size_bytes < fp32.size_bytes
    assert prov["decode_weight_bytes"] < 0.55 * fp32.provenance["decode_weight_bytes"]
    prompts = bundle.evaluation.inputs["input_ids"][:4]
    sessions = [_session(fp32), _session(artifact)]
    try:
        want, got = (s.run({"input_ids": prompts})[0] for s in sessions)
        stamps: list[int] = []
        assert sessions[1].generate(prompts[:1], 3, lambda: stamps.append(1)).shape == (1, 3) and len(stamps) == 3
    finally:
        for s in sessions:
            s.close()
    cos = cosine(got, want)
    assert cos.min() > min_cos, f"{name}: next-token logits cosine {cos.min():.4f} to fp32"
    assert not np.array_equal(got, want), f"{name}: logits identical to fp32: nothing was quantized"


@pytest.mark.parametrize("options, match", [({"group_size": 64}, "group_size=64 cannot be honoured in GGUF"),
                                            ({"ratio": 0.5}, "ratio=0.5 is NNCF's mixed int4/int8 split")])
def test_int4_options_q4_k_m_cannot_honour_make_it_not_applicable(tiny_lm, options, match):
    bundle, _, _, cache_dir = tiny_lm
    recipe = get_recipe("int4-weight-only")
    with pytest.raises(RecipeNotApplicable, match=match):
        recipe.artifact(bundle, recipe.parse_config(options), FORMAT_GGUF, ArtifactCache(cache_dir))


def test_a_suite_runs_generate_on_llama_cpp_end_to_end(tmp_path):
    suite = {"name": "gen-llama-cpp", "models": ["tiny-llama"],
             "variants": ["fp32", "int8-weight-only", "int4-weight-only"],
             "backends": [{"name": "llama-cpp", "threads": 1}],
             "scenarios": [{"kind": "generate", "prompt_tokens": 16, "output_tokens": 6, "min_count": 3}],
             "processes": 1, "remeasure_contended": False}
    run = api.run(suite, tmp_path / "results")
    assert run.counts == {"ok": 3, "skipped": 0, "failed": 0}
    value = {(r.variant, r.metric): r.value for r in run.results().itertuples()}
    for variant in ("fp32", "int8-weight-only", "int4-weight-only"):
        for metric in (TPOT.p50, TTFT.p50, OUTPUT_TOKEN_THROUGHPUT, GREEDY_PREFIX_AGREEMENT, "top1_agreement",
                       "kl_divergence_mean", "decode_weight_bytes", "tpot_memory_bound"):
            assert (variant, metric) in value, (variant, metric)
        assert value[(variant, "output_tokens")] == 6
        assert 0.0 <= value[(variant, "top1_agreement")] <= 1.0 and value[(variant, "kl_divergence_mean")] >= 0
    assert value[("fp32", "top1_agreement")] == 1.0 and value[("fp32", GREEDY_PREFIX_AGREEMENT)] == 1.0
    assert value[("fp32", "kl_divergence_mean")] < 1e-6
    assert value[("int8-weight-only", "top1_agreement")] >= value[("int4-weight-only", "top1_agreement")] - 0.25
    assert value[("int4-weight-only", "model_size")] < value[("int8-weight-only", "model_size")] < value[
        ("fp32", "model_size")]


def test_probe_reports_versions_and_says_what_to_install_when_missing(monkeypatch):
    import sys

    available = LlamaCppBackend().probe()
    assert available.available and available.versions["llama_cpp_python"] == "0.3.36"
    # None in sys.modules makes `import llama_cpp` raise ModuleNotFoundError, as if never installed.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    missing = LlamaCppBackend().probe()
    assert not missing.available
    assert missing.reason.startswith("llama_cpp is not installed: pip install llama-cpp-python; with costbench: "
                                     "pip install -c constraints/cpu.txt -e '.[genai]'")
    assert "C/C++ compiler and CMake" in missing.reason
