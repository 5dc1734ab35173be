"""Scenario loops with sessions whose behaviour is known: stopping rules, concurrency, arrivals, SLO search."""

import math
import threading
import time

import numpy as np
import pytest

from costbench.backends.base import Session
from costbench.backends.timing import CudaEventTimer, HostTimer
from costbench.harness.measure.scenarios.base import wait_until
from costbench.harness.measure.scenarios.registry import make_scenario
from costbench.harness.measure.scenarios.server import _Trial, poisson_arrivals
from costbench.harness.build.zoo.base import SampleSet

DATA = SampleSet({"x": np.arange(40, dtype=np.float32).reshape(10, 4)})


class Noop(Session):
    def run(self, inputs):
        return [inputs["x"]]


class Busy(Session):
    """Spins for a known service time (like a CPU runtime that holds the core)."""

    def __init__(self, service_s):
        self.service_ns = int(service_s * 1e9)

    def run(self, inputs):
        end = time.perf_counter_ns() + self.service_ns
        while time.perf_counter_ns() < end:
            pass
        return [inputs["x"]]


class Forking(Noop):
    """Records every fork and which threads ran queries."""

    def __init__(self, root=None):
        self.root = root or self
        if root is None:
            self.forks = 0
            self.threads = set()
            self.lock = threading.Lock()

    def fork(self):
        with self.root.lock:
            self.root.forks += 1
        return Forking(self.root)

    def run(self, inputs):
        with self.root.lock:
            self.root.threads.add(threading.get_ident())
        time.sleep(0.001)  # releases the GIL like a native runtime
        return [inputs["x"]]

    def preferred_concurrency(self):
        return 3


class FakeEvent:
    """Stands in for torch.cuda.Event: 'records' host time; elapsed_time in ms like CUDA's."""

    def __init__(self, enable_timing):
        assert enable_timing
        self.t = None
        self.synced = False

    def record(self, stream=None):  # torch.cuda.Event.record(stream=None): None is the current stream
        self.t = time.perf_counter_ns()

    def synchronize(self):
        self.synced = True

    def elapsed_time(self, end):
        assert end.synced, "elapsed_time read before the end event completed"
        return (end.t - self.t) / 1e6


class DeviceTimed(Busy):
    def device_timer(self):
        return CudaEventTimer(event_factory=FakeEvent)


def test_single_stream_stops_when_both_minimums_are_met():
    r = make_scenario({"kind": "single_stream", "warmup_count": 2, "min_count": 25, "min_duration_s": 0.05}).run(
        Noop(), DATA, 3)
    assert r.valid and r.queries >= 25 and r.wall_ns >= 0.05e9
    assert all(s > 0 for s in r.samples_ns)


def test_single_stream_cap_marks_invalid():
    r = make_scenario({"kind": "single_stream", "warmup_count": 0, "min_count": 10_000, "min_duration_s": 0,
                       "max_duration_s": 0.05}).run(Busy(0.005), DATA, 1)
    assert not r.valid and r.queries < 10_000 and "max_duration_s" in r.notes[0]


def test_device_timer_series_is_recorded():
    r = make_scenario({"kind": "single_stream", "warmup_count": 0, "min_count": 5, "min_duration_s": 0}).run(
        DeviceTimed(0.001), DATA, 1)
    device = r.series_ns["device_latency"]
    assert len(device) == r.queries
    # The fake device clock brackets the same work as the host clock, so it can never read longer.
    assert all(0.001e9 <= d <= h for d, h in zip(device, r.samples_ns))


def test_timers_report_nanoseconds():
    t = HostTimer()
    t.start()
    time.sleep(0.002)
    t.stop()
    assert t.elapsed_ns() >= 2_000_000
    c = CudaEventTimer(event_factory=FakeEvent)
    c.start()
    time.sleep(0.002)
    c.stop()
    assert c.elapsed_ns() >= 2_000_000


@pytest.mark.parametrize("concurrency, threads", [(1, 1), (4, 4), ("auto", 3)])
def test_offline_runs_each_worker_on_its_own_session(concurrency, threads):
    session = Forking()
    r = make_scenario({"kind": "offline", "warmup_count": 1, "min_count": 40, "min_duration_s": 0,
                       "concurrency": concurrency}).run(session, DATA, 2)
    assert session.forks == threads - 1
    # Warm-up runs on the calling thread; measurement runs on one worker thread per session.
    workers = session.threads - {threading.get_ident()} if threads > 1 else session.threads
    assert len(workers) == threads
    assert r.valid and r.queries >= 40 and r.scalars["concurrency"] == (threads, "count")


def test_poisson_arrivals_are_seeded_and_have_the_right_rate():
    a = poisson_arrivals(1000.0, 20_000, seed=7)
    assert np.array_equal(a, poisson_arrivals(1000.0, 20_000, seed=7))
    assert not np.array_equal(a, poisson_arrivals(1000.0, 20_000, seed=8))
    gaps = np.diff(a)
    assert np.all(gaps >= 0)
    # Mean gap 1 ms; the standard error of 20k exponential gaps is 0.7%, so 4% is over five sigma.
    assert gaps.mean() == pytest.approx(1e6, rel=0.04)
    # Exponential: the coefficient of variation of the gaps is 1.
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_wait_until_never_returns_early():
    for delay in (0, 50_000, 3_000_000):
        target = time.perf_counter_ns() + delay
        wait_until(target)
        assert time.perf_counter_ns() >= target


def test_server_issues_every_planned_query_and_meets_a_loose_slo():
    spec = {"kind": "server", "target_qps": 400, "slo_ms": 1000, "min_count": 60, "min_duration_s": 0.1}
    r = make_scenario(spec).run(Noop(), DATA, 1)
    assert r.valid and r.queries == 60
    assert r.scalars["slo_met"] == (1.0, "bool") and r.scalars["target_qps"] == (400, "queries/s")
    assert set(r.series_ns) == {"queue_wait", "scheduler_lateness", "service_time"}
    # Latency is measured from the scheduled arrival, so it can't be shorter than the queue wait.
    assert all(lat >= q for lat, q in zip(r.samples_ns, r.series_ns["queue_wait"]))


def test_server_is_invalid_when_the_load_generator_falls_behind(monkeypatch):
    """A late wake-up is the harness's error, not the model's: the verdict is kept but marked invalid."""
    import costbench.harness.measure.scenarios.server as scenarios

    def oversleep(target_ns):
        wait_until(target_ns + 2_000_000)  # every idle wake-up 2 ms late: 20% of a 10 ms SLO

    monkeypatch.setattr(scenarios, "wait_until", oversleep)
    spec = {"kind": "server", "target_qps": 50, "slo_ms": 10, "min_count": 30, "min_duration_s": 0}
    r = make_scenario(spec).run(Noop(), DATA, 1)
    assert not r.valid and any("fell behind its own schedule" in n for n in r.notes)
    assert np.median(r.series_ns["scheduler_lateness"]) >= 2_000_000  # queries that found it idle
    # The bound is relative to the SLO: the same 2 ms late is within 5% of a 1 s SLO. (Not the real
    # wait_until here: whether this machine keeps a 0.5 ms schedule is a benchmark's question, not a test's.)
    loose = make_scenario({**spec, "slo_ms": 1000}).run(Noop(), DATA, 1)
    assert loose.valid and not any("fell behind" in n for n in loose.notes)


def test_server_overload_queues_and_fails_the_slo():
    # 5 ms of service at 1000 arrivals/s: the queue grows without bound.
    spec = {"kind": "server", "target_qps": 1000, "slo_ms": 5, "min_count": 60, "min_duration_s": 0}
    r = make_scenario(spec).run(Busy(0.005), DATA, 1)
    assert r.scalars["slo_met"] == (0.0, "bool")
    assert max(r.series_ns["queue_wait"]) > 0.05e9  # at least ten queries' worth of waiting
    assert r.scalars["achieved_qps"][0] < 1000 * 0.5


def test_server_with_worker_threads():
    spec = {"kind": "server", "target_qps": 300, "slo_ms": 1000, "min_count": 50, "min_duration_s": 0,
            "concurrency": 3}
    session = Forking()
    r = make_scenario(spec).run(session, DATA, 1)
    assert r.queries == 50 and session.forks == 2 and r.scalars["slo_met"][0] == 1.0


def test_search_reports_a_lower_bound_when_every_rate_passes_and_zero_when_none_can():
    easy = {"kind": "server", "search": True, "slo_ms": 10_000, "min_count": 30, "min_duration_s": 0,
            "search_budget_s": 20}
    r = make_scenario(easy).run(Busy(0.002), DATA, 1)
    trials = r.details["search"]
    assert r.scalars["max_qps_within_slo"][0] == max(t["qps"] for t in trials) > 0
    assert "capacity_qps" not in r.scalars and "capacity_ci_high" not in r.scalars
    assert "the capacity is at least" in r.notes[-1]
    impossible = dict(easy, slo_ms=0.0001)
    r = make_scenario(impossible).run(Busy(0.002), DATA, 1)
    assert r.scalars["max_qps_within_slo"][0] == 0.0 and r.scalars["slo_met"][0] == 0.0
    # Down from a quarter of the service-time capacity, halving (every rate decidedly over), to its 1%.
    rates = [t["qps"] for t in r.details["search"]]
    assert all(t["trial_verdict"] == "misses" for t in r.details["search"])
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.01 * rates[0] / 0.25)
    assert "not met even at" in r.notes[-1]


def test_search_estimates_the_crossing_of_a_known_latency_curve():
    """Synthetic trials whose p99 is a known function of the rate (2 ms at 0, doubling every 300 q/s): the
    estimate is where it crosses the 20 ms SLO (about 997 q/s), inside its interval, within the budget."""
    slo_ms = 20.0
    truth = 300 * math.log2(slo_ms / 2)

    def fake_trial(session, feeds, qps, seed, count=None, give_up_ns=None):
        n = count or 1000
        p99 = 2e6 * 2 ** (qps / 300)
        lat = np.random.default_rng(seed).uniform(0, p99 / 0.99, n).astype(np.int64).tolist()
        return _Trial(qps, n, lat, [0] * n, [0] * n, [1] * n, [1_000_000] * n, int(n / qps * 1e9), True)

    spec = {"kind": "server", "search": True, "slo_ms": slo_ms, "min_count": 2000, "min_duration_s": 0,
            "search_budget_s": 60, "warmup_count": 1}
    scenario = make_scenario(spec)
    scenario.trial = fake_trial
    r = scenario.run(Busy(0.0001), DATA, 1)
    low, high = r.scalars["capacity_ci_low"][0], r.scalars["capacity_ci_high"][0]
    assert low <= truth <= high and r.scalars["capacity_qps"][0] == pytest.approx(truth, rel=0.05)
    assert r.scalars["max_qps_within_slo"][0] <= high
    summary = r.details["search_summary"]
    assert summary["model_capacity_qps"] > 0 and summary["generator_ceiling_qps"] > summary["service_capacity_qps"]


def test_server_spec_needs_a_target_or_a_search():
    with pytest.raises(Exception, match="target_qps"):
        make_scenario({"kind": "server", "slo_ms": 1})
