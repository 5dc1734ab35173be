"""The dashboard's data: histories from the store, change points, environment changes, reproduce commands."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.reports.dashboard import build_dashboard, changes_frame, write_dashboard
from costbench.harness.reports.data import load_selection
from costbench.harness.results.store import load_results
from cdp_browser import external_references
from synth_runs import ENV_A, ENV_B, history_dir


@pytest.fixture
def hist(tmp_path):
    return history_dir(tmp_path / "results")


def test_histories_change_points_and_env_changes(hist):
    dash = build_dashboard(load_selection([hist]))
    by = {s.label: s for s in dash.series}
    lat = by["digits-cnn / int8 / onnxruntime / single_stream / b1 / latency_p50"]
    assert [p.run_id for p in lat.points] == [f"2026010{i + 1}-000000-run{i}" for i in range(7)]
    stored = load_results(hist)
    want = stored[(stored.variant == "int8") & (stored.metric == "latency_p50")].sort_values("created").value.tolist()
    assert [p.value for p in lat.points] == want
    (cp,) = lat.change_points
    assert (cp.last_good.run_id, cp.first_bad.run_id, cp.verdict) == ("20260104-000000-run3", "20260105-000000-run4",
                                                                     "regressed")
    assert cp.still_present and 1.2 < cp.ratio < 1.3
    assert [(a.env_id, b.env_id) for a, b, _ in lat.env_changes] == [(ENV_A["env_id"], ENV_B["env_id"])]
    assert "libraries.onnxruntime: 1.31.0 → 1.32.0" in lat.env_changes[0][2]
    fp32 = by["digits-cnn / fp32 / onnxruntime / single_stream / b1 / latency_p50"]
    assert fp32.change_points == [] and [p.unstable for p in fp32.points] == [False, False, True] + [False] * 4
    assert lat.points[4].reproduce == ("git checkout 444444444444 && costbench run suites/smoke.toml --only "
                                       "model=digits-cnn --only variant=int8 --only backend=onnxruntime --only device=cpu"
                                       " --only scenario=single_stream --only batch_size=1")
    thr = by["digits-cnn / int8 / onnxruntime / single_stream / b1 / throughput"]
    assert not thr.has_samples and thr.change_points == []  # no raw samples: history only


def test_files_and_cli(hist, tmp_path):
    dash = build_dashboard(load_selection([hist]))
    paths = write_dashboard(dash, tmp_path / "site")
    changes = pd.read_csv(paths["csv"])
    assert set(changes.verdict) == {"regressed"} and len(changes) == 2  # single-stream and offline int8
    assert changes.ratio.tolist() == pytest.approx(changes_frame(dash).ratio.tolist())
    doc = json.loads(paths["json"].read_text())
    assert len(doc["series"]) == len(dash.series) and doc["threshold"] == 0.05
    assert external_references(paths["html"].read_text()) == []  # plotly.js is inline
    r = CliRunner().invoke(app, ["dashboard", str(hist), "-o", str(tmp_path / "site2")])
    assert r.exit_code == 0, r.output
    assert "2 regression(s)" in r.output and "regressed: digits-cnn / int8" in r.output
    r = CliRunner().invoke(app, ["dashboard", str(tmp_path / "nothing"), "-o", str(tmp_path / "site3")])
    assert r.exit_code == 2 and "no such results folder" in r.output


def test_runner_instability_flag_is_kept(tmp_path):
    from synth_runs import case, write_run

    for i, m in enumerate([1.0, 1.0, 1.6, 1.0, 1.0]):
        write_run(tmp_path, f"r{i}", [case(median_ms=m, seed=i, runner_unstable=(i == 2))],
                  created=f"2026-01-0{i + 1}T00:00:00+00:00")
    dash = build_dashboard(load_selection([tmp_path]))
    lat = next(s for s in dash.series if s.key["metric"] == "latency_p50")
    assert [p.unstable for p in lat.points] == [False, False, True, False, False]
    assert "runner flagged it unstable" in lat.points[2].note and lat.change_points == []
