"""costbench.api: a suite run from Python, with overrides that become the suite the run header stores."""

from __future__ import annotations

import json

import pytest

import costbench.api as api
from costbench.core.metrics import LATENCY

SUITE = {
    "name": "api",
    "models": ["digits-cnn"],
    "variants": ["fp32"],
    "backends": [{"name": "onnxruntime", "threads": 1}],
    "scenarios": [{"kind": "single_stream", "warmup_count": 2, "min_count": 20, "min_duration_s": 0.05}],
    "processes": 3,
}


def test_overrides_go_into_the_suite_before_validation():
    suite = api.load(SUITE, processes=2, timeout_s=120)
    assert suite.processes == 2 and suite.timeout_s == 120
    # every scenario default written out: the header records what was measured
    assert suite.scenarios[0].options["max_duration_s"] == 60.0
    with pytest.raises(api.SuiteError, match="'procesess' is not a suite key"):
        api.load(SUITE, procesess=2)
    with pytest.raises(api.SuiteError, match="processes"):
        api.load(SUITE, processes=0)
    ray = api.load({**SUITE, "executor": {"kind": "ray", "retry_lost": True}}, executor={"address": "127.0.0.1:1"})
    assert ray.executor.options == {"address": "127.0.0.1:1", "placement": ["every-class"], "retry_lost": True}
    with pytest.raises(api.SuiteError, match="executor.address"):
        api.load(SUITE, executor={"address": "127.0.0.1:1"})  # the local executor takes no address


def test_plan_refuses_filters_that_leave_nothing():
    with pytest.raises(api.SuiteError, match="leave no case"):
        api.plan(SUITE, only=["backend=torch"])


def test_run_returns_the_run_with_its_rows(tmp_path):
    run = api.run(SUITE, tmp_path / "results", processes=2)
    assert run.counts == {"ok": 1, "skipped": 0, "failed": 0}
    header = json.loads(run.run_file.read_text().splitlines()[0])
    assert header["suite"]["spec"]["processes"] == 2  # the override is the suite a resume re-plans
    rows = run.results()
    p50 = rows[rows["metric"] == LATENCY.p50]
    assert len(p50) == 1 and p50["value"].iloc[0] > 0 and len(p50["samples"].iloc[0]) >= 2 * 20
    assert set(rows["run_id"]) == {run.run_id}
