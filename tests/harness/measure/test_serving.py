"""The server scenario against a discrete-event simulation of its queue (tests/harness/queue_sim.py).

The backend (tests/plugins/linear_service_backend.py) spins for ``a + b * rows``. This machine may be
busy, so a spin can be preempted and a wake-up can be late: the simulation is driven by the service
time and the scheduler lateness each batch actually had (same arrival seed), and it is the queue's
logic (arrival-to-completion latency, FIFO, the batcher's rule, no lost queries) that must agree
within 5%. How fast the machine serves is the benchmark's question (benchmarks/serving.py), not a test's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from costbench.backends.registry import get_backend
from costbench.core.artifacts import FORMAT_ONNX, Artifact, InputSpec
from costbench.harness.measure.scenarios.registry import make_scenario
from costbench.harness.measure.scenarios.server import poisson_arrivals
from costbench.harness.measure.scenarios.server import ServerSpec
from costbench.harness.build.zoo.base import SampleSet
from own_process import in_own_process
from queue_sim import capacity, nearest_rank, simulate


def make_linear(a_ms: float, b_ms: float = 0.0, max_batch: int = 1, wait: str = "spin"):
    """A session of the linear-service backend, found through the backend registry like any plugin (the
    ``plugin_backends`` fixture registers it)."""
    backend = get_backend("linear-service")
    artifact = Artifact(FORMAT_ONNX, Path("unused.onnx"), "test", [InputSpec("x", (4,))], ["x"])
    options = backend.parse_options({"a_ms": a_ms, "b_ms": b_ms, "wait": wait})
    return backend.prepare_batched(artifact, options, 1, max_batch) if max_batch > 1 else \
        backend.prepare(artifact, options, 1)


@pytest.fixture
def linear(plugin_backends):
    """The session factory :func:`make_linear`, with the test-only backends registered."""
    return make_linear


def run_search(spec: dict, a_ms: float, b_ms: float, data: SampleSet):
    """One run of the scenario ``spec`` on the linear service (in a process of its own: own_process.py)."""
    return make_scenario(spec).run(make_linear(a_ms, b_ms, spec.get("max_batch", 1)), data, 1)


@pytest.fixture
def data(rng):
    return SampleSet({"x": rng.standard_normal((16, 4)).astype(np.float32)})


def replay(result, spec, nominal):
    """Simulate the run's own arrivals with each batch's measured service time and lateness."""
    service = np.asarray(result.series_ns["service_time"], dtype=np.float64)
    late = np.asarray(result.series_ns["scheduler_lateness"], dtype=np.float64)
    sizes = result.batch_sizes
    arrivals = poisson_arrivals(spec["target_qps"], result.queries, spec["seed"])

    def service_of(j, k):  # the measured batch's time, moved to the simulated batch's size
        return service[j] + nominal(k) - nominal(sizes[j]) if j < len(service) else nominal(k)

    return simulate(arrivals, service_of, spec.get("max_batch", 1), spec.get("max_queue_delay_ms", 0) * 1e6,
                    spec.get("preferred_batch_sizes", ()), spec.get("concurrency", 1),
                    late=lambda j: late[j] if j < len(late) else 0.0)


@pytest.mark.parametrize("batching", [
    {},
    {"max_batch": 8, "max_queue_delay_ms": 2.0},
    {"max_batch": 8, "max_queue_delay_ms": 1.0, "preferred_batch_sizes": [2, 4]},
    {"max_batch": 4, "max_queue_delay_ms": 1.0, "concurrency": 2},
], ids=["unbatched", "batched", "preferred", "batched-2-workers"])
def test_fixed_rate_matches_the_simulated_queue(linear, data, seed, batching):
    a_ms, b_ms = 0.5, 0.1
    nominal = lambda k: (a_ms + b_ms * k) * 1e6  # noqa: E731
    rate = 1000.0 if not batching else 2500.0  # unbatched: 60% busy; batched: far past the unbatched capacity
    spec = {"kind": "server", "target_qps": rate, "slo_ms": 50, "min_count": 3000, "min_duration_s": 0,
            "seed": seed % 2**31, **batching}
    # Two workers that spin in Python would take turns on the GIL; a native runtime releases it.
    session = linear(a_ms, b_ms, spec.get("max_batch", 1), "sleep" if spec.get("concurrency", 1) > 1 else "spin")
    r = make_scenario(spec).run(session, data, 1)
    assert r.queries == 3000 and len(r.series_ns["queue_wait"]) == 3000
    latency = np.asarray(r.samples_ns, dtype=np.float64)
    sim, sizes = replay(r, spec, nominal)
    assert latency.mean() == pytest.approx(sim.mean(), rel=0.05)
    assert nearest_rank(latency, 99) == pytest.approx(nearest_rank(sim, 99), rel=0.05)
    if batching:
        hist = r.details["batching"]["batch_size_histogram"]
        assert sum(k * c for k, c in hist.items()) == 3000 and max(hist) <= spec["max_batch"]
        assert np.mean(r.batch_sizes) == pytest.approx(np.mean(sizes), rel=0.05)
        assert r.scalars["mean_batch_size"][0] > 1.5  # queries really were served together
        if "preferred_batch_sizes" in batching:
            # A batch is a preferred size whenever enough queries waited; other sizes only below 2.
            assert set(hist) <= {1, 2, 4}
    # Latency counts from the scheduled arrival: never shorter than the wait plus the fastest service.
    assert np.all(latency >= np.asarray(r.series_ns["queue_wait"]) + a_ms * 1e6)


def search_against_simulation(data, rng, seed: int, batching: dict):
    """One 40-s capacity search of the linear service in a process of its own, and the capacity the simulated
    queue has when driven by that run's own service-time excess and wake-up lateness: (result, simulated)."""
    a_ms, b_ms, slo_ms = 0.5, 0.1, 5.0
    nominal = lambda k: (a_ms + b_ms * k) * 1e6  # noqa: E731
    # 5000 queries a trial at least: near capacity a queue's tail comes from rare long busy periods, and
    # a short trial sees too few of them. 40 s of searching: the interval need not be narrow here, only hold.
    spec = {"kind": "server", "search": True, "slo_ms": slo_ms, "min_count": 5000, "min_duration_s": 0,
            "max_duration_s": 10, "search_budget_s": 40, "seed": seed % 2**31, **batching}
    r = in_own_process(run_search, spec, a_ms, b_ms, data)
    excess = np.asarray(r.series_ns["service_time"]) - np.asarray([nominal(k) for k in r.batch_sizes])
    # The search's trials run one after another; when other processes take this machine's cores for
    # milliseconds at a time (a shared 2-core VM), each trial meets a different machine and no one
    # simulated capacity describes them all. The harness itself marks such a result invalid (its
    # load generator fell behind); a service preempted by more than half its length says the same, and so
    # does the search itself when this process waited for a CPU more than a thousandth of the trials' time.
    slowest = max(t["service_p99_ms"] for t in r.details["search"] if t["service_p99_ms"] is not None)
    if (not r.valid or slowest > nominal(spec.get("max_batch", 1)) / 1e6 + 0.5 * a_ms
            or r.details["search_summary"].get("held_up")):
        pytest.skip("the machine is busy (" + "; ".join(r.notes) + f"; slowest trial's service time p99 "
                    f"{slowest:.3f} ms): a capacity here describes the load, not the queue")
    high = r.scalars.get("capacity_ci_high", (np.inf,))[0]
    assert 0 < r.scalars["max_qps_within_slo"][0] <= high, (r.details["search_summary"], r.details["search"])
    assert r.details["search_summary"]["elapsed_s"] <= spec["search_budget_s"]
    # The machine's own service-time excess and wake-up lateness, resampled, drive the simulated queue.
    draws = rng.choice(excess, size=100_000)
    late = rng.choice(np.asarray(r.series_ns["scheduler_lateness"]), size=100_000)

    def p99_at(qps):
        arrivals = poisson_arrivals(qps, 30_000, 1)
        lat, _ = simulate(arrivals, lambda j, k: nominal(k) + draws[j], spec.get("max_batch", 1),
                          spec.get("max_queue_delay_ms", 0) * 1e6, late=lambda j: late[j])
        return nearest_rank(lat, 99)

    return r, capacity(p99_at, slo_ms * 1e6, 1.0, 1e4, steps=16)


def holds(r, simulated: float) -> bool:
    """Whether the result's interval holds the simulated capacity, give or take the simulation's own 1%
    (its p99 over 30k queries) with room: 3%."""
    low, high = r.scalars["capacity_ci_low"][0], r.scalars.get("capacity_ci_high", (np.inf,))[0]
    return low / 1.03 <= simulated <= high * 1.03


@pytest.mark.parametrize("batching", [{}, {"max_batch": 4, "max_queue_delay_ms": 2.0}], ids=["unbatched", "batched"])
def test_searched_capacity_interval_contains_the_simulated_capacity(plugin_backends, data, seed, rng, batching):
    """A 95% interval misses by design, one search in 20 (fewer past the 3% allowance; arrival seed
    2445799684 put the simulated capacity 3.05% past the top). So a miss is searched again on fresh
    arrivals, and the test fails when both miss: at most 1 in 400 for a search that is right, 1 in 4 for
    one whose interval held the capacity only half the time, nearly always for a biased one."""
    r, simulated = search_against_simulation(data, rng, seed, batching)
    tried = [(r.details["search_summary"]["interval"], simulated)]
    if not holds(r, simulated):
        r, simulated = search_against_simulation(data, rng, seed + 1, batching)
        tried.append((r.details["search_summary"]["interval"], simulated))
    assert holds(r, simulated), (tried, r.details["search"])
    assert "capacity_qps" in r.scalars, (r.details["search_summary"], r.details["search"])
    assert r.scalars["capacity_qps"][0] == pytest.approx(simulated, rel=0.10)
    trials = r.details["search"]
    assert all(t["trial_verdict"] in ("meets", "misses", "undecided") for t in trials)
    assert all(len(t["p_latency_ci_ms"]) == 2 for t in trials if t["queries"])


@pytest.mark.parametrize("min_count", [50, 3000, 100_000])
def test_a_low_rate_is_judged_on_what_it_collected_never_zero(linear, data, min_count):
    """The issue's case: a count max_duration_s cannot reach at a low rate is not an overload."""
    # A 50 ms SLO: far above the 0.5 ms service, and above what a busy machine's late wake-ups add.
    spec = {"kind": "server", "search": True, "slo_ms": 50, "min_count": min_count, "min_duration_s": 4,
            "max_duration_s": 1.0, "search_budget_s": 8}
    r = make_scenario(spec).run(linear(0.5), data, 1)
    assert r.scalars["max_qps_within_slo"][0] > 0
    assert not any(t["overloaded"] for t in r.details["search"] if t["trial_verdict"] == "meets")
    fixed = make_scenario({**spec, "search": False, "target_qps": 20}).run(linear(0.5), data, 1)
    # About 20 Poisson arrivals fall within the 1 s allowed; the trial serves every one of them.
    assert 3 <= fixed.queries <= 60 and fixed.scalars["slo_met"][0] == 1.0
    assert "judged on those" in " ".join(fixed.notes) and not any("overloaded" in n for n in fixed.notes)


def test_overload_is_a_growing_queue(linear, data):
    # 2 ms of service at 1000 arrivals/s: the queue grows by a second's worth every two seconds.
    spec = {"kind": "server", "target_qps": 1000, "slo_ms": 5, "min_count": 400, "min_duration_s": 0}
    r = make_scenario(spec).run(linear(2.0), data, 1)
    assert r.scalars["slo_met"][0] == 0.0 and any("queue wait grew" in n for n in r.notes)
    assert r.details["slo"]["verdict"] == "misses"


@pytest.mark.parametrize("bad, where", [
    ({"max_batch": 0}, "max_batch"),
    ({"max_batch": 4, "preferred_batch_sizes": [2, 8]}, "preferred_batch_sizes"),
    ({"max_queue_delay_ms": -1, "max_batch": 2}, "max_queue_delay_ms"),
    ({"max_queue_delay_ms": 2}, "max_queue_delay_ms needs max_batch"),
])
def test_bad_batching_options_name_the_key(bad, where):
    with pytest.raises(ValidationError, match=where):
        ServerSpec.model_validate({"kind": "server", "target_qps": 10, "slo_ms": 5, **bad})


BATCHED_SUITE = """
name = "batched"
models = ["digits-cnn"]
variants = ["fp32"]
backends = ["onnxruntime", {name = "openvino", threads = 1}]
batch_sizes = [1]
timeout_s = 300
processes = 1

[[scenarios]]
kind = "server"
name = "server-batched"
target_qps = 5000
slo_ms = 1000
min_count = 300
min_duration_s = 0
max_batch = 4
max_queue_delay_ms = 1.0
"""


def test_a_suite_runs_the_batched_server_scenario_end_to_end(tmp_path):
    """From a suite file through the worker: the backend prepares every batch size, the rows say how it batched."""
    import json
    import os
    import subprocess
    import sys

    from costbench.harness.results.store import load_results

    (tmp_path / "s.toml").write_text(BATCHED_SUITE)
    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "run", str(tmp_path / "s.toml"), "--out",
                           str(tmp_path / "results")], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "2 ok" in proc.stdout, proc.stdout + proc.stderr
    df = load_results(tmp_path / "results")
    for backend in ("onnxruntime", "openvino"):
        rows = df[(df.backend == backend) & (df.status == "ok")].set_index("metric")
        assert rows.loc["mean_batch_size", "value"] >= 1.0 and rows.loc["queries", "value"] == 300
        batching = json.loads(rows.loc["slo_met", "details"])["batching"]
        assert batching["max_batch"] == 4 and sum(int(k) * c for k, c in batching["batch_size_histogram"].items()) == 300
        assert "for every batch of 1..4 queries" in json.loads(rows.loc["load_time", "details"])["scope"]
        assert rows.loc["service_time_p50", "value"] > 0
