"""pytest-benchmark JSON: a real pytest-benchmark file imported into the store, and our export read by its CLI."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.reports.data import load_selection
from costbench.harness.reports.interop_pytest_benchmark import (
    InteropError, export_run, import_file, pytest_benchmark_stats,
)
from costbench.core.stats import percentile
from costbench.harness.results.store import load_results
from synth_runs import case, write_run

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install -e '.[test]')")

BENCH = """
def test_sum(benchmark):
    benchmark(sum, range(200))

def test_sorted(benchmark):
    benchmark.group = "sorting"
    benchmark(sorted, list(range(300, 0, -1)))
"""


@pytest.fixture(scope="module")
def pb_json(tmp_path_factory):
    """A file written by pytest-benchmark itself, with raw data."""
    d = tmp_path_factory.mktemp("pb")
    (d / "test_tiny_bench.py").write_text(BENCH)
    out = d / "bench.json"
    # Only the benchmark plugin: other installed plugins cost start-up time and play no part here.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pytest_benchmark.plugin", "-p", "no:cacheprovider",
                           str(d / "test_tiny_bench.py"),
                           f"--benchmark-json={out}", "--benchmark-save-data", "--benchmark-min-rounds=50",
                           "--benchmark-max-time=0.0001", "--benchmark-disable-gc"],
                          cwd=d, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_import_real_pytest_benchmark_file(pb_json, tmp_path):
    run_id = import_file(pb_json, tmp_path)
    data = json.loads(pb_json.read_text())
    df = load_results(tmp_path)
    assert set(df.run_id) == {run_id} and set(df.backend) == {"pytest-benchmark"}
    for bench in data["benchmarks"]:
        rows = df[df.variant == bench["name"]]
        lat = rows[rows.metric == "latency_p50"].iloc[0]
        ms = np.asarray(bench["stats"]["data"]) * 1e3
        assert lat.value == percentile(ms, 50) and np.allclose(lat.samples, ms)
        assert rows[rows.metric == "throughput"].value.iloc[0] == bench["stats"]["ops"]
    assert set(df.model) == {"test_tiny_bench.py", "sorting"}
    sel = load_selection([tmp_path])
    info = sel.cases["info"].iloc[0]
    assert "--benchmark-only" in info["reproduce"] and "test_tiny_bench.py::" in info["reproduce"]
    with pytest.raises(InteropError, match="already imported"):
        import_file(pb_json, tmp_path)
    (tmp_path / "x.json").write_text('{"nothing": 1}')
    with pytest.raises(InteropError, match="not a pytest-benchmark JSON file"):
        import_file(tmp_path / "x.json", tmp_path)


def test_stats_match_pytest_benchmark():
    from pytest_benchmark.stats import Stats

    for n in (1, 2, 5, 7, 8, 9, 10, 11, 200):
        data = list(np.random.default_rng(n).lognormal(0, 0.3, n))
        ref = Stats()
        for x in data:
            ref.update(x)
        ours = pytest_benchmark_stats(data)
        for k, v in ref.as_dict().items():
            assert ours[k] == pytest.approx(v), (n, k)


def test_export_is_read_by_pytest_benchmark_compare_and_round_trips(tmp_path):
    write_run(tmp_path / "res", "run-a", [case(variant="fp32", median_ms=2.0, seed=1),
                                           case(variant="int8", scenario="offline", median_ms=8.0, batch_size=8, seed=2),
                                           case(variant="int8", backend="torch", status="skipped", reason="no")])
    doc = export_run(load_selection([tmp_path / "res"]), "run-a")
    assert [b["name"] for b in doc["benchmarks"]] == ["fp32-onnxruntime-cpu-single_stream-b1",
                                                       "int8-onnxruntime-cpu-offline-b8"]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(doc))
    exe = shutil.which("pytest-benchmark") or shutil.which("py.test-benchmark")
    if exe:
        out_csv = tmp_path / "cmp"
        proc = subprocess.run([exe, "compare", str(f), f"--csv={out_csv}", "--columns=min,median,mean,rounds"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with open(str(out_csv) + ".csv") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 2
        stored = load_results(tmp_path / "res")
        med = stored[(stored.variant == "fp32") & (stored.metric == "latency_p50")].samples.iloc[0]
        fp32 = next(r for r in rows if "fp32" in r["name"])
        assert float(fp32["median"]) == pytest.approx(float(np.median(med)) / 1e3)
        assert int(fp32["rounds"]) == len(med)
    back = import_file(f, tmp_path / "back")
    a, b = load_results(tmp_path / "res"), load_results(tmp_path / "back", back)
    orig = a[(a.variant == "fp32") & (a.metric == "latency_p50")].value.iloc[0]
    again = b[(b.variant == "fp32-onnxruntime-cpu-single_stream-b1") & (b.metric == "latency_p50")].value.iloc[0]
    assert again == pytest.approx(orig, rel=1e-12)


def test_cli_import_and_export(pb_json, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["pytest-benchmark", "import", str(pb_json), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    run_id = r.output.split("as run ")[1].split()[0]
    out = tmp_path / "e.json"
    r = runner.invoke(app, ["pytest-benchmark", "export", run_id, "--results", str(tmp_path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())["benchmarks"]) == 2
    r = runner.invoke(app, ["pytest-benchmark", "import", str(tmp_path / "missing.json"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no such file" in r.output
