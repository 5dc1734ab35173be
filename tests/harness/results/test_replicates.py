"""A case's per-process records become one record: the rules for each kind of metric, failures, old run files."""

import math

import numpy as np
import pytest

from costbench.core.stats import across_processes
from costbench.harness.results.replicates import group_records, is_complete, merge_records, merged_records


def record(process, processes=3, status="ok", case_id="c1", p50=1.0, rss=300.0, samples=None, extra=(), reason=""):
    samples = samples if samples is not None else [p50] * 4
    metrics = [
        {"metric": "latency_p50", "value": p50, "unit": "ms", "ci_low": p50, "ci_high": p50, "valid": True,
         "samples": samples, "details": {"timing": {"clock": "perf_counter_ns"}}},
        {"metric": "peak_rss", "value": rss, "unit": "MiB"},
        *extra,
    ] if status == "ok" else []
    return {"type": "case", "case": {"case_id": case_id, "processes": processes, "process": process}, "process": process,
            "status": status, "reason": reason, "metrics": metrics, "info": {"p": process}, "elapsed_s": 1.0,
            "finished": f"2026-01-01T00:00:0{process}+00:00"}


def test_timings_take_the_geometric_mean_and_a_t_interval_others_the_median(rng):
    p50s = rng.uniform(0.9, 1.1, 3)
    accuracy = {"metric": "top1_agreement", "value": 1.0, "unit": "ratio"}
    recs = [record(k, p50=float(v), rss=300.0 + 10 * k, samples=list(rng.uniform(0.8, 1.2, 5 + k)),
                   extra=[accuracy] if k == 0 else []) for k, v in enumerate(p50s)]
    merged = merge_records(recs)
    by = {m["metric"]: m for m in merged["metrics"]}
    expected = across_processes(p50s)
    assert by["latency_p50"]["value"] == pytest.approx(expected.center)
    assert (by["latency_p50"]["ci_low"], by["latency_p50"]["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))
    procs = by["latency_p50"]["details"]["processes"]
    assert procs["values"] == pytest.approx(list(p50s)) and procs["sizes"] == [5, 6, 7]
    assert by["latency_p50"]["samples"] == [x for r in recs for x in r["metrics"][0]["samples"]]
    assert by["latency_p50"]["details"]["timing"] == {"clock": "perf_counter_ns"}
    assert by["peak_rss"]["value"] == 310.0  # the median of 300, 310, 320
    assert by["top1_agreement"] == accuracy  # measured once, kept as it is
    assert 0.0 <= by["latency_process_share"]["value"] <= 1.0
    assert by["latency_process_spread"]["value"] == pytest.approx(float(np.log(p50s).std(ddof=1)))
    assert merged["status"] == "ok" and merged["elapsed_s"] == 3.0 and merged["info"]["p"] == 0
    assert merged["info"]["processes"] == {"planned": 3, "recorded": 3, "ok": 3, "failed": []}


def test_a_failed_process_is_counted_and_the_runner_flag_kept():
    flag = {"metric": "unstable", "value": 1.0, "unit": "bool"}
    bad = record(2, status="failed", reason="child process killed by SIGSEGV")
    bad["metrics"] = [flag]
    merged = merge_records([record(0, p50=1.0), record(1, p50=1.1), bad])
    assert merged["status"] == "ok" and merged["reason"].startswith("1 of 3 processes failed; first: child process killed")
    assert merged["info"]["processes"]["failed"] == [{"process": 2, "status": "failed",
                                                      "reason": "child process killed by SIGSEGV"}]
    assert flag in merged["metrics"]
    assert math.isclose(next(m for m in merged["metrics"] if m["metric"] == "latency_p50")["value"], math.sqrt(1.1))
    all_bad = merge_records([record(0, status="failed", reason="boom"), record(1, status="failed", reason="bang")])
    assert all_bad["status"] == "failed" and all_bad["reason"] == "boom"


def test_grouping_completeness_and_old_run_files():
    recs = [record(0, case_id="a"), record(0, case_id="b"), record(1, case_id="a")]
    groups = group_records(recs)
    assert [[r["process"] for r in g] for g in groups] == [[0, 1], [0]]
    assert not is_complete(groups[0]) and is_complete(group_records([*recs, record(2, case_id="a")])[0])
    # Records from before replication carry no process: each is a case of its own and stays unchanged.
    old = [{k: v for k, v in record(0).items() if k != "process"} for _ in range(2)]
    for r in old:
        r["case"] = {"case_id": "c1"}
    assert merged_records(old) == old
    assert merge_records([record(0, processes=1)]) == record(0, processes=1)
