"""generate_server through a continuous-batching engine: OpenVINO GenAI's ContinuousBatchingPipeline on the tiny
Llama (openvino-genai with ``max_num_seqs``). The engine gives exactly N stamped tokens per request, the greedy
tokens of LLMPipeline, requests that overlap in time, and the scenario's trials and search behave."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino_genai", reason="openvino-genai is not installed: pip install 'costbench[genai]'")
pytest.importorskip("openvino_tokenizers", reason="openvino-tokenizers is not installed: pip install 'costbench[genai]'")

from costbench.backends.openvino_genai_backend import OpenVinoGenAIBackend  # noqa: E402
from costbench.core.artifacts import FORMAT_OPENVINO_LLM, ArtifactCache  # noqa: E402
from costbench.harness.build.compress.registry import get_recipe  # noqa: E402
from costbench.harness.build.zoo.registry import zoo_model  # noqa: E402
from costbench.harness.measure.scenarios.generate_server import GenerateServer, GenerateServerSpec  # noqa: E402
from costbench.harness.measure.scenarios.server import poisson_arrivals  # noqa: E402

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def tiny_ov(tmp_path_factory):
    """(bundle, fp32 OpenVINO LLM folder) of the tiny Llama."""
    cache_dir = tmp_path_factory.mktemp("tiny-llama-cb")
    bundle = zoo_model("tiny-llama").load(cache_dir)
    recipe = get_recipe("fp32")
    return bundle, recipe.artifact(bundle, recipe.parse_config({}), FORMAT_OPENVINO_LLM, ArtifactCache(cache_dir))


@pytest.fixture(scope="module")
def cb_session(tiny_ov):
    backend = OpenVinoGenAIBackend()
    session = backend.prepare(tiny_ov[1], backend.parse_options({"threads": 1, "max_num_seqs": 4}), 1)
    yield session
    session.close()


def test_one_slot_stays_the_default(tiny_ov):
    backend = OpenVinoGenAIBackend()
    session = backend.prepare(tiny_ov[1], backend.parse_options({"threads": 1}), 1)
    try:
        assert session.engine() is None and session.info()["pipeline"] == "LLMPipeline"
    finally:
        session.close()
    with pytest.raises(ValueError, match="attention_backend 'PA'"):
        backend.prepare(tiny_ov[1], backend.parse_options({"max_num_seqs": 2, "attention_backend": "SDPA"}), 1)


def test_exactly_n_stamped_tokens_and_the_greedy_tokens_of_llmpipeline(tiny_ov, cb_session, rng):
    bundle, artifact = tiny_ov
    backend = OpenVinoGenAIBackend()
    plain = backend.prepare(artifact, backend.parse_options({"threads": 1}), 1)
    info = cb_session.info()
    assert info["pipeline"] == "ContinuousBatchingPipeline" and info["enable_prefix_caching"] is False
    try:
        for _ in range(3):
            n = int(rng.integers(2, 20))
            prompt = rng.integers(2, bundle.details["vocab_size"], size=(1, int(rng.integers(4, 40))), dtype=np.int64)
            stamps: list[int] = []
            got = cb_session.generate(prompt, n, lambda: stamps.append(1))
            want = plain.generate(prompt, n, lambda: None)
            assert got.shape == (1, n) and len(stamps) == n
            # the same IR, kernels and paged attention (LLMPipeline's default on the CPU): the same tokens
            assert got[0].tolist() == want[0].tolist(), prompt.tolist()
    finally:
        plain.close()


def test_requests_in_flight_together_interleave_and_each_gets_its_tokens(tiny_ov, cb_session, rng):
    import time

    engine = cb_session.engine()
    assert engine is not None and engine.max_sequences == 4
    vocab = tiny_ov[0].details["vocab_size"]
    asked = {i: int(rng.integers(4, 12)) for i in range(3)}
    stamps: dict[int, list[int]] = {i: [] for i in asked}
    for i, n in asked.items():
        engine.add(i, rng.integers(2, vocab, size=int(rng.integers(4, 30)), dtype=np.int64), n)
    steps = 0
    while engine.busy():
        got = engine.step()
        t = time.perf_counter_ns()
        steps += 1
        for rid, k in got.items():
            stamps[rid].extend([t] * k)
    assert {i: len(s) for i, s in stamps.items()} == asked
    assert steps == max(asked.values())  # one step decodes every request: no request waited for another
    assert stamps[1][0] < stamps[0][-1] and stamps[2][0] < stamps[1][-1]
    with pytest.raises(ValueError, match="already in flight"):
        engine.add(7, np.arange(3, dtype=np.int64), 4)
        engine.add(7, np.arange(3, dtype=np.int64), 4)
    engine.abort()
    assert not engine.busy()


def test_max_num_seqs_bounds_the_running_batch(tiny_ov, cb_session, rng):
    """Six requests on an engine of four sequences: no step gives tokens to more than four, and each gets its own
    count (GenAI's dynamic_split_fuse scheduler would ignore max_num_seqs; the default one reads it)."""
    engine = cb_session.engine()
    vocab = tiny_ov[0].details["vocab_size"]
    asked = {i: int(rng.integers(3, 10)) for i in range(6)}
    for i, n in asked.items():
        engine.add(i, rng.integers(2, vocab, size=int(rng.integers(4, 30)), dtype=np.int64), n)
    counts, widest = dict.fromkeys(asked, 0), 0
    while engine.busy():
        got = engine.step()
        widest = max(widest, len(got))
        for rid, k in got.items():
            counts[rid] += k
    assert counts == asked and widest == 4
    with pytest.raises(ValueError, match="longer than max_num_batched_tokens"):
        engine.add(9, np.arange(300, dtype=np.int64) % vocab, 2)
    assert not engine.busy()


def test_options_that_cannot_hold_a_decoding_step_are_refused():
    with pytest.raises(ValueError, match="must be at least max_num_seqs"):
        OpenVinoGenAIBackend().parse_options({"max_num_seqs": 8, "max_num_batched_tokens": 4})


def _spec(seed: int, **settings) -> GenerateServerSpec:
    return GenerateServerSpec(**{"ttft_slo_ms": 200, "tpot_slo_ms": 50, "prompt_tokens": 24, "prompt_tokens_min": 4,
                                 "output_tokens": 8, "output_tokens_min": 3, "warmup_count": 1, "seed": seed,
                                 **settings})


def test_a_low_rate_meets_the_slo_and_an_overloading_one_does_not(tiny_ov, cb_session, seed):
    bundle, _ = tiny_ov
    low = GenerateServer(_spec(seed % 2**31, search=False, target_qps=5, min_count=20)).run(
        cb_session, bundle.evaluation, 1)
    assert low.valid and low.queries == 20 and low.scalars["slo_met"][0] == 1.0, low.details
    assert all(t > 0 for t in low.series_ns["tpot"])
    # 10 uncounted requests first (steady_start's lead-in): the wall time runs from the first counted arrival
    arrivals = poisson_arrivals(5, 30, seed % 2**31)
    counted_span = arrivals[-1] - arrivals[10]
    assert counted_span <= low.wall_ns <= counted_span + 1e9, (low.wall_ns, counted_span, arrivals[10] - arrivals[0])
    # 5000 requests/s is far past what one thread serves: the queue grows until the trial gives up
    high = GenerateServer(_spec(seed % 2**31, search=False, target_qps=5000, min_count=3000, ttft_slo_ms=5)).run(
        cb_session, bundle.evaluation, 1)
    assert not high.valid and any("overloaded" in n for n in high.notes), high.notes
    assert not cb_session.engine().busy()


def test_the_search_finds_a_capacity_above_one_slot(tiny_ov, cb_session, seed):
    bundle, _ = tiny_ov
    # A trial of 1 s at least: the tiny model serves hundreds of requests a second, and 100 requests past its
    # capacity would arrive and be served within the TTFT SLO before any queue could show.
    r = GenerateServer(_spec(seed % 2**31, slo_percentile=90, min_count=100, min_duration_s=1.0,
                             search_budget_s=40)).run(cb_session, bundle.evaluation, 1)
    summary = r.details["search_summary"]
    assert r.scalars.get("capacity_qps", (0,))[0] > 0, (r.details["search"], r.notes)
    assert "capacity_model_qps" not in r.scalars and summary["model_capacity_qps"] is None
    assert any("does not describe this server" in n and "were not counted" in n for n in r.notes), r.notes
    batched = [t["mean_step_sequences"] for t in r.details["search"] if t["mean_step_sequences"]]
    assert batched and max(batched) > 1.0, r.details["search"]  # some steps decoded several requests
    print("capacity", r.scalars["capacity_qps"][0], "one-slot model", summary["probe_model_capacity_qps"])
