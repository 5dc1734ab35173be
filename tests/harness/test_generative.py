"""Generative models through the harness: the zoo's seeded causal LMs, a user's Hugging Face folder, the planner's
skips, the generate scenarios' series, and a suite run end to end with its rows and run table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import costbench.api as api
from costbench.core.artifacts import file_sha256
from costbench.core.metrics import GREEDY_PREFIX_AGREEMENT, INTER_TOKEN, OUTPUT_TOKEN_THROUGHPUT, TPOT, TTFT
from costbench.harness.build.zoo.causal_lm import PARITY_PROMPT_TOKENS, RANDOM_WEIGHTS_NOTE
from costbench.harness.build.zoo.registry import load_bundle, zoo_model
from costbench.harness.measure.scenarios.generate import Generate, GenerateOffline, prompt_sets
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.suite.skips import can_never_run

pytestmark = pytest.mark.timeout(900)


def test_zoo_models_are_rebuilt_byte_for_byte_from_their_seed(tmp_path):
    a = zoo_model("tiny-llama").load(tmp_path / "a")
    b = zoo_model("tiny-llama").load(tmp_path / "b")
    assert a.source_hash == b.source_hash
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert file_sha256(a.hf_path / name) == file_sha256(b.hf_path / name), name
    assert a.details["weights"] == RANDOM_WEIGHTS_NOTE and "never for task quality" in a.details["weights"]
    assert a.task == "causal_lm" and a.details["architecture"] == "LlamaForCausalLM"
    prompts = a.evaluation.inputs["input_ids"]
    assert prompts.shape[1] == PARITY_PROMPT_TOKENS and prompts.dtype == np.int64
    assert 0 <= prompts.min() and prompts.max() < a.details["vocab_size"]
    assert not np.array_equal(prompts, a.calibration.inputs["input_ids"][: len(prompts)])  # different windows
    qwen = zoo_model("tiny-qwen").load(tmp_path / "a")
    assert qwen.details["architecture"] == "Qwen2ForCausalLM" and qwen.source_hash != a.source_hash


def test_a_users_folder_loads_and_bad_folders_are_named(tmp_path):
    built = zoo_model("tiny-qwen").load(tmp_path / "cache")
    mine = tmp_path / "my-model"
    shutil.copytree(built.hf_path, mine)
    bundle = load_bundle(ModelSpec(id="mine", source="hf", path=mine), tmp_path / "cache")
    assert bundle.hf_path == mine and bundle.details["parameters"] == built.details["parameters"]
    assert bundle.source_hash != built.source_hash  # a user's folder is hashed by content, not by the zoo's key
    assert load_bundle(ModelSpec(id="mine", source="hf", path=mine), tmp_path / "cache").source_hash == bundle.source_hash

    (mine / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model 'mine': .* has no tokenizer.json"):
        load_bundle(ModelSpec(id="mine", source="hf", path=mine), tmp_path / "cache")
    suite = {"name": "hf", "models": [{"id": "mine", "source": "hf", "path": str(mine)}], "variants": ["fp32"],
             "backends": ["transformers"], "scenarios": ["generate"]}
    with pytest.raises(api.SuiteError, match=r"models\[0\]\.path: .*tokenizer\.json"):
        api.load(suite)
    config = json.loads((built.hf_path / "config.json").read_text())
    (mine / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    shutil.copy(built.hf_path / "tokenizer.json", mine / "tokenizer.json")
    with pytest.raises(api.SuiteError, match="not a \\*ForCausalLM"):
        api.load(suite)
    with pytest.raises(api.SuiteError, match="source='hf' needs 'path'"):
        api.load({**suite, "models": [{"id": "mine", "source": "hf"}]})


def test_the_planner_skips_generation_on_models_that_do_not_generate():
    _, cases, executor = api.plan({"name": "mix", "models": ["digits-cnn", "tiny-llama"], "variants": ["fp32"],
                                   "backends": ["torch", "transformers"], "scenarios": ["generate", "single_stream"]})
    executor.close()
    by = {(c.model, c.backend, c.scenario): c for c in cases}
    reason = by[("digits-cnn", "torch", "generate")].reason
    assert "generates tokens" in reason and can_never_run(reason)
    assert by[("tiny-llama", "transformers", "generate")].status == "planned"
    # a forward pass over the prompt (prefill) is a single_stream query like any other
    assert by[("tiny-llama", "transformers", "single_stream")].status == "planned"
    assert can_never_run(by[("tiny-llama", "torch", "generate")].reason)  # the folder is not a torch module


def test_prompt_windows_cover_the_token_stream(rng):
    from costbench.harness.build.zoo.base import SampleSet

    stream = rng.integers(0, 500, size=(4, 8), dtype=np.int64)
    sets = prompt_sets(SampleSet({"input_ids": stream}), batch_size=2, prompt_tokens=5)
    flat = np.concatenate([s.reshape(-1) for s in sets])
    assert all(s.shape == (2, 5) for s in sets)
    np.testing.assert_array_equal(flat, np.resize(stream.reshape(-1), flat.size))
    with pytest.raises(ValueError, match="needs prompts under 'input_ids'"):
        prompt_sets(SampleSet({"pixels": stream}), 1, 5)


@pytest.mark.parametrize("cls", [Generate, GenerateOffline])
def test_generate_scenarios_report_consistent_series(tiny_session, cls, rng):
    bundle, session = tiny_session
    n, count, batch = int(rng.integers(3, 9)), int(rng.integers(2, 5)), 2 if cls is GenerateOffline else 1
    spec = cls.Settings(prompt_tokens=int(rng.integers(4, 40)), output_tokens=n, warmup_count=1, min_count=count)
    result = cls(spec).run(session, bundle.evaluation, batch)
    series = {cls.primary: result.samples_ns, **result.series_ns}
    assert result.valid and result.queries == count
    assert {len(series[k]) for k in (TTFT.name, TPOT.name, "request_latency")} == {count}
    assert len(series[INTER_TOKEN.name]) == count * (n - 1)
    gaps = np.asarray(series[INTER_TOKEN.name]).reshape(count, n - 1)
    # TPOT is the mean of the request's own gaps (rounded to the ns), and a request ends after its last token
    np.testing.assert_allclose(series[TPOT.name], gaps.mean(axis=1), atol=1)
    assert all(r >= t + g for r, t, g in zip(series["request_latency"], series[TTFT.name], gaps.sum(axis=1)))
    tokens_per_s, unit = result.scalars[OUTPUT_TOKEN_THROUGHPUT]
    assert unit == "tokens/s"
    np.testing.assert_allclose(tokens_per_s, batch * n * count / (result.wall_ns / 1e9), rtol=1e-9)
    assert result.scalars["output_tokens"][0] == n


def test_a_generate_scenario_refuses_a_session_that_cannot_generate(tiny_session):
    from costbench.backends.base import Session

    class Forward(Session):
        def run(self, inputs):
            return []

    bundle, _ = tiny_session
    with pytest.raises(TypeError, match="needs a generative session"):
        Generate(Generate.Settings()).run(Forward(), bundle.evaluation, 1)
    with pytest.raises(ValueError, match="output_tokens"):
        Generate.Settings(output_tokens=1)


def test_a_suite_measures_tokens_and_parity_end_to_end(tmp_path):
    suite = {"name": "gen", "models": ["tiny-llama"], "variants": ["fp32", "int8-weight-only"],
             "backends": [{"name": "transformers", "threads": 1}],
             "scenarios": [{"kind": "generate", "prompt_tokens": 16, "output_tokens": 6, "min_count": 3}],
             # one process exactly: its floor rows are compared with each other below, unmerged
             "processes": 1, "remeasure_contended": False}
    run = api.run(suite, tmp_path / "results")
    assert run.counts == {"ok": 2, "skipped": 0, "failed": 0}
    rows = run.results()
    value = {(r.variant, r.metric): r.value for r in rows.itertuples()}
    for variant in ("fp32", "int8-weight-only"):
        for metric in (TPOT.p50, TTFT.p50, OUTPUT_TOKEN_THROUGHPUT, GREEDY_PREFIX_AGREEMENT, "top1_agreement"):
            assert (variant, metric) in value, (variant, metric)
        assert value[(variant, "output_tokens")] == 6
    assert value[("fp32", GREEDY_PREFIX_AGREEMENT)] == 1.0 and value[("fp32", "top1_agreement")] == 1.0
    assert value[("int8-weight-only", "model_size")] < value[("fp32", "model_size")]
    # the memory-bound floor: the bytes a step reads (int8 reads about a quarter of fp32's), at the measured bandwidth
    assert 0.2 < value[("int8-weight-only", "decode_weight_bytes")] / value[("fp32", "decode_weight_bytes")] < 0.35
    for variant in ("fp32", "int8-weight-only"):
        bound = value[(variant, "decode_weight_bytes")] / (value[(variant, "memory_bandwidth")] * 1e9) * 1e3
        assert value[(variant, "tpot_memory_bound")] == pytest.approx(bound)
        assert value[(variant, "tpot_bound_ratio")] == pytest.approx(value[(variant, TPOT.p50)] / bound)
    from costbench.harness.reports.run_table import summary_tables

    tables, _ = summary_tables(rows)
    table = tables["tiny-llama"]
    assert {"TTFT ms", "TPOT ms", "tok/s", "greedy"} <= set(table.columns)
    assert table.set_index("variant").loc["fp32", "greedy"] == "100.0%"

    # the hardware report prices a generative model per million output tokens, at the measured tokens/s
    from costbench.harness.reports.data import load_selection
    from costbench.harness.reports.hardware import Criteria, build_report
    from costbench.harness.reports.hardware_pages import render_html
    from costbench.harness.reports.prices import load_prices

    prices_file = tmp_path / "prices.toml"
    prices_file.write_text('[machines."onprem/box"]\nhourly = 3.6\n')
    sel = load_selection([tmp_path / "results"])
    prices = load_prices(prices_file).with_assignments(["onprem/box"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    report = build_report(sel, prices, Criteria())
    fp32 = report.configs.set_index("variant").loc["fp32"]
    assert fp32["per"] == "output token" and fp32["throughput"] == pytest.approx(value[("fp32", OUTPUT_TOKEN_THROUGHPUT)])
    assert fp32["cost_per_m"] == pytest.approx(3.6 / (3600 * fp32["throughput"]) * 1e6)
    page = render_html(report)
    assert "USD / M output tokens" in page and "per million output tokens" in page and "M inferences" not in page
    assert "TTFT p50 ms" in page and "TPOT p50 ms" in page
    assert fp32["ttft_ms"] == pytest.approx(value[("fp32", TTFT.p50)]) and fp32["p50_ms"] == value[("fp32", TPOT.p50)]
