"""generate_server: requests at a rate through one generation slot, against a simulation of that queue.

A generative session whose times are known (it spins ``prefill_ms + per_prompt_ms * prompt length`` before
its first token and ``tpot_ms`` before each next one) is an M/G/1 queue: the capacity search must find
what the queue model finds for those times. The tiny Llama on Transformers checks the series on a real
runtime.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from costbench.core.stats import percentile
from costbench.harness.measure.scenarios.generate_server import UNIT, GenerateServer, GenerateServerSpec
from own_process import in_own_process
from spinning_server import DATA, Spinning, capacity_search


def test_lengths_are_drawn_in_their_ranges_and_the_series_agree(rng):
    spec = GenerateServerSpec(search=False, target_qps=50, ttft_slo_ms=50, tpot_slo_ms=2, prompt_tokens=32,
                              prompt_tokens_min=8, output_tokens=8, output_tokens_min=3, min_count=40,
                              seed=int(rng.integers(1 << 30)))
    r = GenerateServer(spec).run(Spinning(1.0, 0.01, 0.5), DATA, 1)
    assert r.valid and r.queries == 40
    ttft, wait, tpot = (np.asarray(x) for x in (r.samples_ns, r.series_ns["queue_wait"], r.series_ns["tpot"]))
    assert np.all(ttft >= wait + 1.0e6)  # a request's first token comes after its wait and its prefill
    # A spin takes at least its time; a preempted one longer (a busy CI machine), so only the typical one is close.
    assert np.all(tpot >= 0.5e6) and np.median(tpot) < 0.75e6
    assert 3 <= r.scalars["output_tokens"][0] <= 8 and 8 <= r.scalars["prompt_tokens"][0] <= 32
    ratio = max(np.sort(np.maximum(ttft / 50e6, tpot / 2e6))[int(np.ceil(0.99 * 40)) - 1], 0)
    assert r.scalars["slo_ratio"][0] == pytest.approx(ratio, rel=1e-6)
    assert r.scalars["slo_met"][0] == float(ratio <= 1)


def test_search_finds_the_queue_models_capacity(seed):
    """The capacity search against the M/G/1 model of the same service times (the issue's 10%), in a process of
    its own (own_process.py says why)."""
    r = in_own_process(capacity_search, seed % 2**31)
    scalars, summary, model = r["scalars"], r["summary"], r["model_on_built"]
    assert summary["elapsed_s"] <= summary["budget_s"]
    low, high = scalars["capacity_ci_low"], scalars.get("capacity_ci_high", np.inf)
    # Against the model on the prefill and decoding times the trials measured (the validation) ...
    measured = scalars["capacity_model_qps"]
    # The model draws the measured service times independently; a neighbour on the machine slows a run of
    # requests in a row, which queues worse than the same times scattered, so there the search's answer lies
    # below the model and the check is void (two fresh-clone CIs put the model 4.8% and 6.3% above the interval).
    if summary.get("held_up") or measured < 0.75 * model:
        pytest.skip(f"the machine is busy: the trials waited {summary.get('cpu_wait_share', 0):.2%} of their time "
                    f"for a CPU, {summary.get('steal_share', 0):.2%} stolen; the measured times imply {measured:.0f} "
                    f"requests/s, the built ones {model:.0f}")
    trials = (r["trials"], summary)
    assert scalars["capacity_qps"] == pytest.approx(measured, rel=0.10), (trials, measured)
    assert low / 1.03 <= measured <= high * 1.03, trials
    # ... and on the times the session was built with, less the harness's own per-token work (the two
    # simulations differ by about 1% from their own sampling).
    assert 0.75 * model <= measured <= 1.04 * model, (measured, model, trials)
    assert scalars["capacity_output_tokens"] == pytest.approx(scalars["capacity_qps"] * scalars["output_tokens"])


def test_an_slo_no_rate_can_meet_ends_after_the_probe(seed):
    """TPOT 1 ms against an SLO of 0.5 ms: no queue makes it better, so no trial is run and the capacity is 0."""
    spec = GenerateServerSpec(ttft_slo_ms=50, tpot_slo_ms=0.5, prompt_tokens=16, output_tokens=4, min_count=300,
                              search_budget_s=30, seed=seed % 2**31)
    r = GenerateServer(spec).run(Spinning(0.3, 0.0, 1.0), DATA, 1)
    assert r.scalars["slo_met"][0] == 0.0 and r.scalars["max_qps_within_slo"][0] == 0.0
    assert "capacity_qps" not in r.scalars and r.details["search"] == []
    assert any("cannot be met at any rate" in n and "TPOT" in n for n in r.notes), r.notes
    # The ratio is the probe's own p99 (no queue) ...
    ttft, tpot = np.asarray(r.samples_ns), np.asarray(r.series_ns["tpot"])
    idle = [int(UNIT * max(a / 50e6, b / 0.5e6)) for a, b in zip(ttft, tpot)]
    assert r.scalars["slo_ratio"][0] == pytest.approx(percentile(idle, 99.0) / UNIT, rel=1e-9)
    # ... and at least 2: a spin of 1 ms takes at least its time (a preempted one longer, on a busy CI machine).
    assert r.scalars["slo_ratio"][0] >= 2.0 * 0.999


def test_a_trial_starts_from_the_steady_state_backlog(seed):
    """At a rate the measured service times cannot sustain, a trial gives up before its first request; below
    it, the trials record the backlog they started with."""
    spec = GenerateServerSpec(search=True, ttft_slo_ms=5, tpot_slo_ms=0.5, prompt_tokens=16, output_tokens=4,
                              min_count=200, search_budget_s=15, seed=seed % 2**31)
    r = GenerateServer(spec).run(Spinning(0.3, 0.0, 0.1), DATA, 1)
    trials = r.details["search"]
    assert all(t["backlog_s"] is None or t["backlog_s"] >= 0 for t in trials)
    service = r.details["search_summary"]["service_capacity_qps"]
    for t in trials:
        if t["qps"] > 1.1 * service:
            assert t["requests"] == 0 and "before its first request" in t["overloaded"], t
    assert any(t["backlog_s"] for t in trials), trials


def test_tiny_llama_serves_requests(tiny_session):
    bundle, session = tiny_session
    spec = GenerateServerSpec(search=False, target_qps=5, ttft_slo_ms=2000, tpot_slo_ms=500, prompt_tokens=12,
                              prompt_tokens_min=4, output_tokens=4, min_count=6, warmup_count=1)
    r = GenerateServer(spec).run(session, bundle.evaluation, 1)
    assert r.valid and r.queries == 6 and r.scalars["slo_met"][0] == 1.0
    assert all(t > 0 for t in r.series_ns["tpot"])


@pytest.mark.parametrize("bad, where", [
    ({"search": False}, "target_qps"),
    ({"prompt_tokens": 8, "prompt_tokens_min": 9}, "prompt_tokens_min"),
    ({"output_tokens": 4, "output_tokens_min": 5}, "output_tokens_min"),
])
def test_bad_settings_name_the_key(bad, where):
    with pytest.raises(ValidationError, match=where):
        GenerateServerSpec(ttft_slo_ms=100, tpot_slo_ms=10, **bad)
