"""The yardstick: the machine's speed around each process, and what is done with a process measured while it ran slow."""

from costbench.harness.machine import yardstick
from costbench.harness.results.replicates import merge_records
from costbench.harness.results.rounds import SLOWED_FACTOR, disturbed, needs_more, usual_yardstick


def record(process, p50, stick_ms=None, busy=False):
    metrics = [{"metric": "latency_p50", "value": p50, "unit": "ms"},
               {"metric": "cpu_contention", "value": 0.5 if busy else 0.0, "unit": "ratio",
                "details": {"contended": busy}}]
    if stick_ms is not None:
        metrics.append(yardstick.row(stick_ms, stick_ms * 0.99))
    return {"type": "case", "process": process, "status": "ok", "reason": "", "metrics": metrics, "info": {},
            "case": {"case_id": "c", "processes": 3}}


def test_a_reading_is_the_median_of_timed_passes_and_its_row_keeps_the_slower_one():
    ms = yardstick.read()
    assert 0 < ms < 10_000
    row = yardstick.row(2.0, 3.0)
    assert row["metric"] == "yardstick" and row["value"] == 3.0 and row["details"]["before_ms"] == 2.0


def test_a_process_measured_while_the_machine_ran_slow_is_left_out_and_replaced(rng):
    usual = float(rng.uniform(3, 8))  # fresh each run: the rule is relative, whatever the machine's speed
    recs = [record(0, 10.0, usual), record(1, 10.2, usual * 1.02), record(2, 16.0, usual * SLOWED_FACTOR * 1.3),
            record(3, 10.1, usual * 0.98)]
    assert usual_yardstick(recs) == usual
    assert disturbed(recs) == [recs[2]]
    merged = merge_records(recs)
    by = {m["metric"]: m for m in merged["metrics"]}
    assert by["latency_p50"]["details"]["processes"]["values"] == [10.0, 10.2, 10.1]
    slow = by["contended_processes"]
    assert slow["value"] == 1 and slow["details"] == {"left_out": 1, "measured": 4, "contended": 0, "slowed": 1}
    assert needs_more(recs[:3], None, 3)  # one slow of three: measure one more
    assert not needs_more(recs, None, 3)  # replaced


def test_within_the_factor_or_with_too_few_readings_nothing_is_judged_slow():
    assert disturbed([record(0, 10.0, 5.0), record(1, 10.0, 5.0 * SLOWED_FACTOR * 0.99), record(2, 10, 5.0)]) == []
    assert disturbed([record(0, 10.0, 5.0), record(1, 16.0, 20.0)]) == []  # two readings: no usual to judge by
    assert disturbed([record(0, 10.0), record(1, 16.0), record(2, 10.0)]) == []  # runs from before the yardstick
    both = [record(0, 10.0, 5.0, busy=True), record(1, 10.0, 5.0), record(2, 10.0, 9.0)]
    assert disturbed(both) == [both[0], both[2]]
