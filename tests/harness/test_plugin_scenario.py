"""A scenario and a metric from a third-party package, end to end, touching nothing under harness/.

tests/plugins/burst_plugin is installed as a user would install a plugin (its entry points in the
``costbench.scenarios`` and ``costbench.metrics`` groups), then ``costbench run`` measures with it on a
real model and backend, twice, and the run table, ``compare``, ``report`` and ``dashboard`` all show
its series.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from costbench.harness.results.store import load_results

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "burst_plugin"

SUITE = """
name = "burst"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{ name = "onnxruntime", threads = 1 }]
processes = 2
timeout_s = 300

[[scenarios]]
kind = "burst"
burst_size = 4
min_count = 40
min_duration_s = 0.05
"""


def _costbench(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"costbench {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def plugin_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("burst")
    source, site = d / "source", d / "site"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "200"}
    (d / "burst.toml").write_text(SUITE)
    out = d / "results"
    runs = [_costbench(["run", str(d / "burst.toml"), "--out", str(out)], env, d) for _ in range(2)]
    return d, env, out, runs


def test_run_and_run_table_show_the_plugin_scenario(plugin_runs):
    _, _, out, runs = plugin_runs
    assert "1 ok, 0 skipped, 0 failed" in runs[0].stdout, runs[0].stdout
    df = load_results(out)
    ok = df[df["status"] == "ok"]
    assert set(ok["scenario_kind"]) == {"burst"}
    metrics = set(ok["metric"])
    assert {"burst_latency_p50", "burst_latency_p99", "burst_latency_process_share", "bursts"} <= metrics
    p50 = ok[ok["metric"] == "burst_latency_p50"]
    assert (p50["value"] > 0).all() and p50["samples"].map(len).min() >= 40 * 2
    # The run table's p50 column is the plugin's primary series: its value, not a dash.
    line = next(line for line in runs[1].stdout.splitlines() if line.strip().startswith("onnxruntime"))
    assert f"{p50['value'].iloc[-1]:.3f}" in line, runs[1].stdout


def test_compare_report_and_dashboard_show_it(plugin_runs):
    d, env, out, _ = plugin_runs
    run_ids = sorted(load_results(out)["run_id"].unique())
    _costbench(["compare", run_ids[0], run_ids[1], "-r", str(out), "--json", str(d / "cmp.json")], env, d)
    series = json.loads((d / "cmp.json").read_text())["series"]
    burst = [s for s in series if s["metric"] == "burst_latency_p50"]
    assert burst and burst[0]["method"] == "processes" and burst[0]["verdict"] in ("unchanged", "improved", "regressed",
                                                                                     "unstable")
    _costbench(["report", run_ids[1], "-r", str(out), "-o", str(d / "report")], env, d)
    rows = list(csv.DictReader((d / "report" / "report.csv").open()))
    assert rows and all(float(r["p50_ms"]) > 0 for r in rows), rows
    _costbench(["dashboard", str(out), "-o", str(d / "site")], env, d)
    dash = json.loads((d / "site" / "dashboard.json").read_text())
    drawn = {s["key"]["metric"] for s in dash["series"]}
    assert {"burst_latency_p50", "burst_latency_p99"} <= drawn, drawn
