"""Perplexity on a user's own text: the tiny zoo model saved as a user's Hugging Face folder (its weights count as
the user's), scored by the transformers backend and checked against an independent float64 computation; a missing
or empty text is named with its key and path; the zoo's random-weight models are skipped with the reason."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

import costbench.api as api
from costbench.core.artifacts import FORMAT_HF_CAUSAL_LM, ArtifactCache
from costbench.core.metrics import PERPLEXITY, PERPLEXITY_DELTA, PERPLEXITY_FP32, catalogue
from costbench.harness.build.perplexity import nll_position_logits, nll_prefixes, reference_nll, windows
from costbench.harness.build.zoo.registry import load_bundle, zoo_model
from costbench.harness.suite.schema import ModelSpec

pytestmark = pytest.mark.timeout(900)

TEXT = ("The quick brown fox jumps over the lazy dog. A context manager sets up and tears down a resource; "
        "the with statement calls its enter and exit methods. ") * 4


@pytest.fixture(scope="module")
def users_model(tmp_path_factory):
    """(cache, the tiny Llama copied as a user's hf folder, a text file beside it)."""
    root = tmp_path_factory.mktemp("ppl")
    built = zoo_model("tiny-llama").load(root / "cache")
    mine = root / "my-model"
    shutil.copytree(built.hf_path, mine)
    text = root / "text.txt"
    text.write_text(TEXT)
    return root / "cache", mine, text


def _torch_perplexity(folder, tokens: np.ndarray) -> float:
    """exp(mean NLL) from one fp32 forward pass, log-softmax in float64: independent of the harness's code."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = torch.from_numpy(tokens[None, :])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0, :-1]
    nll = -logp.gather(1, ids[0, 1:, None])[:, 0]
    return float(torch.exp(nll.mean()))


def test_perplexity_of_fp32_on_transformers_equals_an_independent_float64_computation(users_model):
    from costbench.backends.transformers_backend import TransformersBackend
    from costbench.harness.build.compress.registry import get_recipe
    from costbench.harness.measure.worker import perplexity_metrics

    cache, mine, text = users_model
    bundle = load_bundle(ModelSpec(id="mine", source="hf", path=mine, perplexity_text=text, perplexity_tokens=40),
                         cache)
    ppl_text = bundle.perplexity_text
    assert ppl_text is not None and ppl_text.scored == 40 and ppl_text.window == 41
    assert bundle.details["perplexity"]["text"]["file"] == str(text)
    expected = _torch_perplexity(mine, ppl_text.tokens)

    fp32_nll = reference_nll(bundle, cache)
    assert np.exp(fp32_nll.mean()) == pytest.approx(expected, rel=1e-6)
    recipe = get_recipe("fp32")
    artifact = recipe.artifact(bundle, recipe.parse_config({}), FORMAT_HF_CAUSAL_LM, ArtifactCache(cache))
    backend = TransformersBackend()
    session = backend.prepare(artifact, backend.parse_options({"threads": 1}), 1)
    try:
        rows = {r["metric"]: r for r in perplexity_metrics(session, bundle, fp32_nll)}
        # the same quantity through run() (last position only), one prefix per token
        by_prefix = nll_prefixes(lambda ids: session.run({"input_ids": ids})[0], ppl_text)
        # a window shorter than the text: one pass for the first window, then one per token, both ways
        short = dataclasses.replace(ppl_text, window=16)
        windowed = nll_position_logits(session.position_logits, short)
        windowed_prefix = nll_prefixes(lambda ids: session.run({"input_ids": ids})[0], short)
    finally:
        session.close()
    assert rows[PERPLEXITY]["value"] == pytest.approx(expected, rel=1e-6)
    assert rows[PERPLEXITY_FP32]["value"] == pytest.approx(expected, rel=1e-6)
    assert abs(rows[PERPLEXITY_DELTA]["value"]) < 1e-6 * expected
    details = rows[PERPLEXITY]["details"]
    assert details["kind"] == "perplexity" and details["method"] == "position_logits"
    assert details["tokens_scored"] == 40 and details["window"] == 41 and "40" in details["cap"]
    assert "accuracy" not in rows[PERPLEXITY]["details"]["description"]
    assert np.exp(by_prefix.mean()) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(windowed, windowed_prefix, rtol=1e-5)
    assert not np.allclose(windowed[15:], fp32_nll[15:])  # past the window, less context: a different score
    for name in (PERPLEXITY, PERPLEXITY_DELTA):
        assert catalogue().metric(name).better == "lower"


def test_windows_score_every_token_once_from_at_most_window_minus_one_before_it():
    assert windows(5, 8) == [(0, 5, 1)]
    spans = windows(10, 4)
    assert spans[0] == (0, 4, 1) and spans[1:] == [(i - 3, i + 1, i) for i in range(4, 10)]
    scored = [p for start, end, first in spans for p in range(first, end)]
    assert scored == list(range(1, 10))


def test_a_missing_or_empty_text_is_named_with_its_key_and_path(users_model, tmp_path):
    cache, mine, _ = users_model
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=rf"model 'mine': perplexity_text {missing} does not exist"):
        load_bundle(ModelSpec(id="mine", source="hf", path=mine, perplexity_text=missing), cache)
    suite = {"name": "ppl", "models": [{"id": "mine", "source": "hf", "path": str(mine),
                                        "perplexity_text": str(missing)}],
             "variants": ["fp32"], "backends": ["transformers"], "scenarios": ["generate"]}
    with pytest.raises(api.SuiteError, match=rf"models\[0\]\.perplexity_text: .*{missing} does not exist"):
        api.load(suite)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(api.SuiteError, match=rf"models\[0\]\.perplexity_text: .*{empty} is empty"):
        api.load({**suite, "models": [{**suite["models"][0], "perplexity_text": str(empty)}]})
    with pytest.raises(api.SuiteError, match=r"models\[0\]\.perplexity_text: model 'digits-cnn' is not a causal LM"):
        api.load({**suite, "models": [{"id": "digits-cnn", "perplexity_text": str(empty)}]})
    with pytest.raises(api.SuiteError, match="'perplexity_text' applies to causal LMs only"):
        api.load({**suite, "models": [{"id": "m", "source": "onnx", "path": "m.onnx", "perplexity_text": "t.txt"}]})


def test_random_weight_zoo_models_are_skipped_with_the_reason(users_model):
    cache, _, text = users_model
    bundle = load_bundle(ModelSpec(id="tiny-llama", perplexity_text=text), cache)
    assert bundle.perplexity_text is None
    reason = bundle.details["perplexity"]["skipped"]
    assert "random" in reason and "real weights" in reason


def test_a_suite_run_reports_perplexity_beside_fp32(users_model, tmp_path):
    _, mine, text = users_model
    suite = {"name": "ppl", "models": [{"id": "mine", "source": "hf", "path": str(mine), "perplexity_text": str(text),
                                        "perplexity_tokens": 24}],
             "variants": ["fp32", "int8-weight-only"], "backends": [{"name": "transformers", "threads": 1}],
             "scenarios": [{"kind": "generate", "prompt_tokens": 8, "output_tokens": 2, "min_count": 2}],
             "processes": 1, "remeasure_contended": False}
    run = api.run(suite, tmp_path / "results")
    assert run.counts == {"ok": 2, "skipped": 0, "failed": 0}
    value = {(r.variant, r.metric): r.value for r in run.results().itertuples()}
    fp32 = value[("fp32", PERPLEXITY_FP32)]
    assert value[("fp32", PERPLEXITY)] == pytest.approx(fp32, rel=1e-6)
    assert value[("int8-weight-only", PERPLEXITY_FP32)] == fp32
    assert value[("int8-weight-only", PERPLEXITY_DELTA)] == pytest.approx(value[("int8-weight-only", PERPLEXITY)] - fp32)
