"""Contention: what others took of the CPU while a process measured, flagged, left out and measured again."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costbench.harness.execute.load import load_suite
from costbench.harness.execute.plan import make_plan
from costbench.harness.execute.runner import run_plan
from costbench.harness.machine import contention
from costbench.harness.machine.contention import CpuReading, between, read
from costbench.harness.results.replicates import merge_records
from costbench.harness.results.store import RunFile


def test_readings_parse_the_kernels_counters(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 50 300 9000 10 5 5 40 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    r = read(stat)
    tick = os.sysconf("SC_CLK_TCK")
    assert r.busy_s == pytest.approx(1360 / tick) and r.steal_s == pytest.approx(40 / tick)
    assert read(tmp_path / "absent") is None


def test_the_share_is_others_busy_time_and_steal_over_the_window():
    before = CpuReading(busy_s=10.0, steal_s=1.0, own_s=2.0, wall_s=100.0)
    after = CpuReading(busy_s=13.0, steal_s=1.2, own_s=3.5, wall_s=102.0)  # 3 s busy, 1.5 s of it ours
    c = between(before, after, ncores=2)
    assert c.other_share == pytest.approx(1.5 / 4) and c.steal_share == pytest.approx(0.2 / 4)
    assert c.contended and c.details()["contended"] is True
    assert c.details()["window_start_monotonic_s"] == 100.0 and c.window_s == pytest.approx(2.0)
    quiet = between(before, CpuReading(11.52, 1.0, 3.5, 102.0), ncores=2)  # only our own 1.5 s (and 0.02 s)
    assert quiet.share == pytest.approx(0.005) and not quiet.contended
    assert between(None, after) is None and between(after, before) is None


def test_run_delay_sums_the_threads_waits_and_is_none_where_unreported(tmp_path):
    for tid, line in (("11", "5000 2500000000 7\n"), ("12", "9 500000000 1\n")):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text(line)
    assert contention.run_delay_s(tmp_path) == pytest.approx(3.0)
    (tmp_path / "13").mkdir()  # a thread without the file (it ended, or the kernel lacks it): left out
    assert contention.run_delay_s(tmp_path) == pytest.approx(3.0)
    empty = tmp_path / "none"
    (empty / "1").mkdir(parents=True)
    assert contention.run_delay_s(empty) is None and contention.run_delay_s(tmp_path / "absent") is None


def test_processes_beyond_the_cores_wait_for_a_cpu():
    """One spinner more than the cores, for a second: together they waited at least half a second for a turn
    (more on a busy machine, never less)."""
    if contention.run_delay_s() is None:
        pytest.skip("this kernel reports no per-thread schedstat")
    n = contention.cores() + 1
    spin = "import time\nend = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()\n" + spin], stdin=subprocess.PIPE)
             for _ in range(n)]
    try:
        before = [contention.run_delay_s(Path(f"/proc/{p.pid}/task")) for p in procs]
        for p in procs:
            p.stdin.close()  # all start spinning at once
        time.sleep(1.2)
        after = [contention.run_delay_s(Path(f"/proc/{p.pid}/task")) for p in procs]
    finally:
        for p in procs:
            p.wait()
    waited = sum(a - b for a, b in zip(after, before))
    assert waited >= 0.5, (waited, before, after)


def test_a_trial_is_held_up_past_a_thousandth_of_its_time_waiting_or_stolen():
    before = contention.WaitReading(CpuReading(busy_s=0.0, steal_s=1.0, own_s=0.0, wall_s=100.0), run_delay_s=2.0)
    after = contention.WaitReading(CpuReading(busy_s=0.0, steal_s=1.5, own_s=0.0, wall_s=110.0), run_delay_s=2.004)
    trial = after.since(before)
    assert trial["wall_s"] == pytest.approx(10.0) and trial["cpu_wait_ms"] == pytest.approx(4.0)
    assert trial["steal_ms"] == pytest.approx(500.0)
    assert contention.WaitReading(None, None).since(before) == {"wall_s": None, "cpu_wait_ms": None, "steal_ms": None}
    t = lambda wall, wait, steal: {"wall_s": wall, "cpu_wait_ms": wait, "steal_ms": steal}  # noqa: E731
    n = contention.cores()
    quiet = contention.held_up([t(10.0, 3.0, 0.0), t(10.0, 4.0, 0.0)])
    assert quiet["cpu_wait_share"] == pytest.approx(7e-3 / 20) and not quiet["held_up"]
    assert contention.held_up_note(quiet, "the model") == ""
    waited = contention.held_up([t(10.0, 3.0, 0.0), t(10.0, 40.0, 0.0)])
    assert waited["cpu_wait_share"] == pytest.approx(43e-3 / 20) and waited["held_up"]
    assert "0.21% of the trials' time" in contention.held_up_note(waited, "the model")
    stolen = contention.held_up([t(10.0, 0.0, 30.0 * n)])
    assert stolen["steal_share"] == pytest.approx(3e-3) and stolen["held_up"]
    # Where the kernel reports nothing, nothing is judged.
    assert contention.held_up([t(None, None, None)]) == {}
    assert not contention.held_up([t(10.0, None, None)])["held_up"]


def record(process, p50, busy, extra=()):
    metrics = [{"metric": "latency_p50", "value": p50, "unit": "ms"},
               {"metric": "cpu_contention", "value": 0.5 if busy else 0.0, "unit": "ratio",
                "details": {"contended": busy}}, *extra]
    return {"type": "case", "process": process, "status": "ok", "reason": "", "metrics": metrics, "info": {},
            "case": {"case_id": "c", "processes": 3}}


def test_contended_processes_are_left_out_while_two_clean_ones_remain_and_accuracy_stays():
    acc = ({"metric": "top1_agreement", "value": 0.9, "unit": "ratio"},)
    merged = merge_records([record(0, 9.0, True, acc), record(1, 1.0, False), record(2, 1.02, False)])
    by = {m["metric"]: m for m in merged["metrics"]}
    assert by["latency_p50"]["details"]["processes"]["values"] == [1.0, 1.02]  # the slow, contended one is out
    assert by["top1_agreement"]["value"] == 0.9  # measured only by the first process: kept
    assert by["contended_processes"]["value"] == 1 and by["contended_processes"]["details"]["left_out"] == 1
    # Too few clean processes: all are kept, and the case still says how many were contended.
    merged = merge_records([record(0, 9.0, True), record(1, 1.0, False), record(2, 8.0, True)])
    by = {m["metric"]: m for m in merged["metrics"]}
    assert len(by["latency_p50"]["details"]["processes"]["values"]) == 3
    assert by["contended_processes"]["details"]["left_out"] == 0


SUITE = """
name = "contended"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "sleepy", base_ms = 1.0, process_sd = 0.0}]
accuracy = false
timeout_s = 120
processes = 2
[[scenarios]]
kind = "single_stream"
warmup_count = 5
min_count = 100
min_duration_s = 0.3
"""


@pytest.mark.skipif(contention.read() is None, reason="no /proc/stat: contention is read on Linux only")
def test_a_cpu_hog_on_every_core_is_detected_and_its_processes_measured_again_within_the_budget(
        tmp_path, plugin_backends, monkeypatch):
    monkeypatch.setenv("COSTBENCH_EXTRA_BACKENDS", "sleepy=sleepy_backend:SleepyBackend")
    (tmp_path / "s.toml").write_text(SUITE)
    suite = load_suite(tmp_path / "s.toml")
    # Busy loops in their own interpreters (exec'd at once: no fork of this multithreaded process).
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    finally:
        for h in hogs:
            h.kill()
            h.wait(10)
    records = RunFile(summary.run_file).cases()
    shares = [next(m for m in r["metrics"] if m["metric"] == "cpu_contention") for r in records]
    assert all(s["details"]["contended"] for s in shares), [s["value"] for s in shares]
    assert len(records) == 4  # 2 processes, each measured again once: the budget is twice `processes`
    (case,) = summary.outcomes
    busy = next(m for m in case.metrics if m["metric"] == "contended_processes")
    assert busy["value"] == 4 and busy["details"]["left_out"] == 0  # no clean process: all kept, and said


def test_only_contention_is_replaced_not_a_failed_process():
    from costbench.harness.results.rounds import needs_more

    fine, busy = record(0, 1.0, False), record(1, 1.0, True)
    failed = {**record(2, 1.0, False), "status": "failed", "metrics": []}
    assert needs_more([fine, busy, record(2, 1.0, False)], None, 3)  # one contended of three: measure one more
    assert not needs_more([fine, record(1, 1.0, False), failed], None, 3)  # a failure is not re-measured
    assert not needs_more([fine, busy, record(2, 1.0, False)], None, 3, remeasure=False)
    assert not needs_more([fine, busy, record(2, 1.0, False), busy, busy, busy], None, 3)  # twice processes: spent
