"""The capacity search against simulated queues whose true capacity is known exactly (M/D/1, Erlang).

A search here runs on simulated time: each trial is a simulated M/D/1 queue at the rate the search asks
for, started empty like a real trial, and its duration (queries / rate) is charged to the budget. So the
search's logic, interval and budget are checked over hundreds of searches in seconds; the real server
loop is checked against a simulation of its own queue in test_serving.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from costbench.harness.measure.capacity import (
    CapacitySearch, RatePool, SearchPlan, crossing, estimate, isotonic)
from costbench.core.stats import combine_capacities
from costbench.harness.measure.queue_model import (ServiceTimes, md1_capacity, md1_wait_cdf, model_capacity,
                                                  simulate_latencies, stationary_backlog_ns)
from costbench.harness.measure.scenarios.server import percentile_interval, search_start
from queue_sim import capacity as bisect_capacity, nearest_rank, simulate

SLO_NS, SERVICE_NS = 5e6, 1e6  # the case: 1 ms of service, p99 within 5 ms


def simulated_search(service_ns: float, rng: np.random.Generator, budget_s: float = 240.0,
                     min_count: int = 3000):
    """One search against a simulated M/D/1 queue of ``service_ns``; returns its outcome."""
    now = [0.0]

    def measure(qps: float, n: int):
        lat = simulate_latencies(rng.exponential(1e9 / qps, n), [np.empty(0), np.array([service_ns])], np.zeros(n))
        now[0] += n / qps
        over = np.flatnonzero(lat > 20 * SLO_NS)  # the server scenario gives up on a query waiting 20 SLOs
        if over.size:
            return lat[:over[0]].astype(np.int64).tolist(), "overloaded"
        return lat.astype(np.int64).tolist(), ""

    plan = SearchPlan(SLO_NS, 99.0, 0.95, 0.025, budget_s, lambda q: max(min_count, math.ceil(4 * q)),
                      lambda q: int(60 * q), start_qps=0.5e9 / service_ns, floor_qps=0.01e9 / service_ns,
                      ceiling_qps=20e9 / service_ns)
    return CapacitySearch(plan, percentile_interval, clock=lambda: now[0]).run(measure)


def search_on_simulated_time(plan: SearchPlan, latencies):
    """One search whose trials are ``latencies(qps, n)`` (ns, arrival order), each charged the time its
    arrivals took up to the first query that waited 20 SLOs (where the server scenario gives up: overloaded)."""
    now = [0.0]

    def measure(qps: float, n: int):
        lat = latencies(qps, n)
        over = np.flatnonzero(lat > 20 * SLO_NS)
        stop = over[0] if over.size else n
        now[0] += stop / qps
        return lat[:stop].astype(np.int64).tolist(), "overloaded" if over.size else ""

    return CapacitySearch(plan, percentile_interval, clock=lambda: now[0]).run(measure)


def test_isotonic_pools_violators_and_crossing_interpolates():
    assert isotonic([1, 3, 2, 4], [1, 1, 1, 1]).tolist() == [1, 2.5, 2.5, 4]
    assert isotonic([5, 1], [3, 1]).tolist() == [4, 4]
    assert crossing([100, 200], [0.0, 1.0], 0.5).rate == pytest.approx(150)
    assert crossing([100, 200], [0.6, 1.0], 0.5).side == "below"
    assert crossing([100, 200], [0.1, 0.2], 0.5).side == "above"


def test_estimate_of_a_known_curve_contains_its_crossing():
    """Rates whose p99 is known exactly (a log-linear curve), measured with tight intervals: the estimate
    is the crossing, and the shown-to-meet rate is the highest whose interval lies within the SLO."""
    pools = []
    for q in (400, 480, 520, 560, 640):
        p = 5e6 * math.exp(3 * math.log(q / 530))  # crosses 5 ms at 530 q/s
        pools.append(RatePool(q, latency_ns=[1] * 10_000, p=p, low=p * 0.97, high=p * 1.03))
    e = estimate(pools, SLO_NS)
    assert e.center.rate == pytest.approx(530, rel=0.005)
    assert e.low.rate < 530 < e.high.rate and e.half_width() < 0.02
    assert e.shown_to_meet == 520


def test_single_process_interval_holds_the_md1_capacity(seed):
    """The issue's 1-ms case, min_count 3000: the 95% interval holds the exact M/D/1 capacity in at least
    34 of 40 searches (a search that held it 95% of the time fails this about once in 300 runs), every
    search within its budget."""
    rng = np.random.default_rng(seed)
    truth = md1_capacity(SLO_NS / 1e9, 99, SERVICE_NS / 1e9)
    held, errors = 0, []
    for _ in range(40):
        out = simulated_search(SERVICE_NS, rng)
        e = out.estimate
        assert out.elapsed_s <= out.budget_s and e.bracketed, out.summary()
        held += e.low.rate <= truth <= e.high.rate
        errors.append(e.center.rate / truth - 1)
    assert held >= 34, (held, errors)
    assert abs(float(np.median(errors))) < 0.03, errors


def test_intervals_across_processes_hold_with_process_noise(seed):
    """Processes whose service time differs by a lognormal 3% (a launch's memory layout, its core): three
    processes' searches combined hold the capacity of the typical process in at least 90 of 100 cases
    (at a true 95%, this fails about once in 90 runs; the t interval with its floor holds more)."""
    rng = np.random.default_rng(seed)
    sigma = 0.03
    # The typical process's capacity: the geometric mean over process draws (what the combined estimate targets).
    draws = np.exp(sigma * rng.standard_normal(2000))
    truth = math.exp(np.mean([math.log(md1_capacity(SLO_NS / 1e9, 99, SERVICE_NS * f / 1e9)) for f in draws[:200]]))
    held = 0
    for _ in range(100):
        outs = [simulated_search(SERVICE_NS * math.exp(sigma * rng.standard_normal()), rng, budget_s=120)
                for _ in range(3)]
        centre, low, high = combine_capacities([o.estimate.center.rate for o in outs],
                                              [o.estimate.low.rate for o in outs],
                                              [o.estimate.high.rate for o in outs])
        assert low <= centre <= high
        held += low <= truth <= high
    assert held >= 90, held


def test_combine_capacities_is_never_narrower_than_the_processes_own_intervals():
    centre, low, high = combine_capacities([500, 500, 500], [450, 450, 450], [550, 550, 550])
    assert centre == pytest.approx(500)
    # identical estimates: the t interval is empty, the own intervals (±10%) combined give ±10%/sqrt(3)
    assert math.log(high / low) / 2 == pytest.approx(math.log(550 / 450) / 2 / math.sqrt(3), rel=1e-6)
    _, low, high = combine_capacities([400, 500, 600], [390, 490, 590], [410, 510, 610])
    assert low < 420 and high > 580  # spread between processes dominates
    with pytest.raises(ValueError, match="at least 2"):
        combine_capacities([500], [450], [550])


def test_queue_model_agrees_with_theory_and_the_independent_simulation(seed):
    """M/D/1: within 2% of Erlang's exact capacity; batched: within 3% of tests/harness/queue_sim.py's."""
    exact = md1_capacity(SLO_NS / 1e9, 99, SERVICE_NS / 1e9)
    assert model_capacity(ServiceTimes({1: [SERVICE_NS]}), SLO_NS, 99, queries=200_000, seed=seed) == \
        pytest.approx(exact, rel=0.02)
    times = ServiceTimes({k: [1e6 + 1e5 * k] for k in (1, 2, 4, 8)})  # sizes 3, 5-7 interpolated
    ours = model_capacity(times, SLO_NS, 99, max_batch=8, delay_ns=1e6, queries=100_000, seed=seed)

    def p99_at(qps):
        arrivals = np.cumsum(np.random.default_rng(seed).exponential(1e9 / qps, 100_000))
        lat, _ = simulate(arrivals, lambda j, k: 1e6 + 1e5 * k, 8, 1e6)
        return nearest_rank(lat, 99)

    theirs = bisect_capacity(p99_at, SLO_NS, 100.0, 4444.0, steps=16)
    assert ours == pytest.approx(theirs, rel=0.03)
    assert times.table(8)[5] == pytest.approx([1.5e6])


def test_a_probe_run_the_machine_preempted_does_not_start_the_search_far_below_the_capacity(seed):
    """The probe's 20 runs a size, one of them preempted for 10 ms: the queue model takes it as a 5% tail and
    puts the batching server (0.5 + 0.1 k ms, 2-ms delay, p99 within 5 ms) far below its capacity. The search
    starts at no less than half of the model on the typical runs: about half the capacity the probe would
    have given undisturbed."""
    rng = np.random.default_rng(seed)
    runs = {k: list((0.5 + 0.1 * k) * 1e6 + rng.uniform(0, 2e4, 20)) for k in (1, 2, 4)}
    clean = model_capacity(ServiceTimes(runs), SLO_NS, 99, 4, 2e6, seed=seed)
    runs[4][int(rng.integers(20))] = 10e6
    disturbed = ServiceTimes(runs)
    model = model_capacity(disturbed, SLO_NS, 99, 4, 2e6, seed=seed)
    typical = model_capacity(disturbed.typical(), SLO_NS, 99, 4, 2e6, seed=seed)
    assert model < 0.2 * clean, (model, clean)  # the failure this guards against
    start = search_start(model, typical, disturbed.capacity(4, 4, 1), ceiling=1e6)
    assert 0.45 * clean <= start <= 1.1 * clean, (start, clean, typical)
    assert search_start(0.0, 0.0, 4000.0, 1e6) == 1000.0  # neither model sustains a rate: a quarter of back-to-back
    assert search_start(model, typical, 4000.0, ceiling=1000.0) == 900.0  # never past the load generator


def test_a_stationary_backlog_follows_erlangs_wait_distribution(seed):
    """M/D/1 at ρ = 0.8: 300 draws of the backlog a trial starts with, against Erlang's exact wait CDF
    (Kolmogorov-Smirnov at the 99.9% level: 1.95 / √300 ≈ 0.11); no backlog exists at ρ ≥ 1."""
    rng = np.random.default_rng(seed)
    lam = 0.8 / SERVICE_NS
    draws = np.array([stationary_backlog_ns(np.array([SERVICE_NS]), lam * 1e9, rng, arrivals=20_000)
                      for _ in range(300)])
    for t in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
        exact = md1_wait_cdf(t * SERVICE_NS, lam, SERVICE_NS)
        assert np.mean(draws <= t * SERVICE_NS) == pytest.approx(exact, abs=0.11), t
    assert stationary_backlog_ns(np.array([SERVICE_NS]), 1e9 / SERVICE_NS, rng) == math.inf


def test_a_case_merges_its_processes_searches_into_one_interval():
    """The case's capacity rows: the combined estimate and interval, not the median of each end."""
    from costbench.harness.results.replicates import merge_metrics

    def rows(est, low, high):
        return [{"metric": name, "value": v, "unit": "queries/s", "details": {}}
                for name, v in (("capacity_qps", est), ("capacity_ci_low", low), ("capacity_ci_high", high))]

    per = [(500, 490, 510), (560, 550, 570), (530, 520, 540)]
    merged = {r["metric"]: r for r in merge_metrics([rows(*p) for p in per])}
    centre, low, high = combine_capacities(*zip(*per))
    assert merged["capacity_qps"]["value"] == pytest.approx(centre)
    assert merged["capacity_ci_low"]["value"] == pytest.approx(low) and low < 490
    assert merged["capacity_ci_high"]["value"] == pytest.approx(high) and high > 570
    assert "t interval" in merged["capacity_qps"]["details"]["processes"]["interval"]


def test_each_process_of_a_case_draws_its_own_arrivals():
    from costbench.harness.measure.worker import PROCESS_SEED_STRIDE, process_spec

    spec = {"kind": "server", "search": True, "slo_ms": 5, "seed": 7}
    assert process_spec(spec, 0) is spec and process_spec(spec, None) is spec
    assert process_spec(spec, 2)["seed"] == 7 + 2 * PROCESS_SEED_STRIDE and spec["seed"] == 7
    assert process_spec({"kind": "single_stream"}, 3) == {"kind": "single_stream"}


def test_an_overloaded_rate_bounds_the_interval_at_its_own_rate():
    """An overloaded trial's percentile is unknown: the interval may not be interpolated towards it."""
    met = RatePool(3500, latency_ns=[1] * 5000, p=4.0e6, low=3.8e6, high=4.3e6)
    over = RatePool(4100, latency_ns=[1] * 100, overloaded="overloaded")
    over.judge(99, 0.95, percentile_interval, SLO_NS)
    e = estimate([met, over], SLO_NS)
    assert (e.low.rate, e.high.rate) == (3500, 4100) and 3500 < e.center.rate < 4100


def test_a_rate_no_trial_fitted_is_not_reported(seed):
    """A budget that fits one trial: the search stops there, and every pool it reports was measured (a rate
    planned but not run once became the reported pool, and the scenario found no trial for it)."""
    rng = np.random.default_rng(seed)
    out = simulated_search(SERVICE_NS, rng, budget_s=7.0, min_count=3000)
    assert out.pools and all(p.trials > 0 for p in out.pools), [(p.qps, p.trials) for p in out.pools]
    assert out.reported_pool() in out.pools and out.stop == "budget"


def test_a_batching_server_started_far_below_its_capacity_still_brackets_it(seed):
    """A batching server's p99 never falls under half the SLO (each query may wait out the 2-ms batching
    delay), so a search that stepped up by 15% whenever it did not ran out of a 40-s budget below the
    capacity when its start was a fifth of it (a service-time probe the machine had disturbed): it reported
    no capacity at all. From that start, every search now brackets the capacity within its budget, and
    their 95% intervals hold it: 7 to 10 of 10 over eight seeds (the truth is itself one simulation's), so
    at least 6 here; a line fitted through a rate past the capacity held it in none."""
    rng = np.random.default_rng(seed)
    service = lambda k: (0.5 + 0.1 * k) * 1e6  # noqa: E731

    def p99_at(qps):
        lat, _ = simulate(np.cumsum(np.random.default_rng(seed).exponential(1e9 / qps, 100_000)),
                          lambda j, k: service(k), 4, 2e6)
        return nearest_rank(lat, 99)

    truth = bisect_capacity(p99_at, SLO_NS, 100.0, 4400.0, steps=16)
    held, ivals = 0, []
    plan = SearchPlan(SLO_NS, 99.0, 0.95, 0.025, 40.0, lambda q: 5000, lambda q: int(10 * q),
                      start_qps=truth / 5, floor_qps=44.0, ceiling_qps=1e6)
    for _ in range(10):
        out = search_on_simulated_time(plan, lambda qps, n: simulate(
            np.cumsum(rng.exponential(1e9 / qps, n)), lambda j, k: service(k), 4, 2e6)[0])
        e = out.estimate
        assert e.bracketed and out.elapsed_s <= 40.0, out.summary()
        ivals.append((round(e.low.rate), round(e.center.rate), round(e.high.rate)))
        held += e.low.rate <= truth <= e.high.rate
    assert held >= 6, (held, truth, ivals)


def test_every_search_shows_some_rate_meeting_the_slo_on_a_machine_that_preempts(seed):
    """A result's max_qps_within_slo is the highest rate whose p99 interval lies within the SLO. On a machine
    that preempts one service in 100 by 2 ms, each trial's interval is wide, and 17 of 300 searches (40 s,
    5,000 queries a trial, started at 0.9 x the capacity) ended with no rate shown to meet it: a capacity,
    but 0 queries/s within the SLO. The search keeps its low end open until one rate is shown to meet; with
    10% steps down from undecided rates, 10 of 2,400 still missed (with seed 2809775894 here, the 15th search
    tried seven rates from 1,153 down to 685 queries/s, every p99 interval reaching above 5 ms, and ran out);
    with each step twice the last, none of 2,400 (results/reference/2026-12-07-intel-xeon-amx-2vcpu/
    capacity-step-down/), so 60 searches here all show one."""
    rng = np.random.default_rng(seed)
    service = SERVICE_NS * 0.6 + rng.exponential(0.02e6, 10_000) + (rng.random(10_000) < 0.01) * 2e6
    start = 0.9 * md1_capacity(SLO_NS / 1e9, 99, float(np.mean(service)) / 1e9)
    plan = SearchPlan(SLO_NS, 99.0, 0.95, 0.025, 40.0, lambda q: 5000, lambda q: int(10 * q),
                      start_qps=start, floor_qps=10.0, ceiling_qps=1e6)
    missed = []
    for _ in range(60):
        out = search_on_simulated_time(plan, lambda qps, n: simulate_latencies(
            rng.exponential(1e9 / qps, n), [np.empty(0), service], rng.random(n)))
        assert out.elapsed_s <= 40.0, out.summary()
        if not out.estimate.shown_to_meet:
            missed.append((out.summary(), [(round(p.qps), p.trials, p.queries, round(p.p / 1e6, 2),
                                            round(p.high / 1e6, 2)) for p in out.pools]))
    assert not missed, missed
