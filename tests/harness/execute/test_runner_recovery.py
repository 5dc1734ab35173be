"""Memory limits, resume after the runner is killed, concurrent runs, and the instability flag."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from costbench.harness.execute.plan import Case, make_plan
from costbench.harness.execute.runner import CaseOutcome, flag_instability, run_plan
from costbench.harness.results.store import RunFile, Store, load_results
from costbench.harness.execute.load import load_suite

BASE = """
name = "{name}"
models = ["digits-cnn"]
variants = ["fp32"]
timeout_s = 60
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = {processes}
{extra}
backends = [{backends}]
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
"""


def suite_file(tmp_path, name, backends, extra="", processes=1):
    p = tmp_path / f"{name}.toml"
    p.write_text(BASE.format(name=name, backends=backends, extra=extra, processes=processes))
    return p


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "costbench.commands.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"}, **kw)


def test_a_leaking_case_is_killed_at_the_memory_limit(tmp_path, plugin_backends):
    path = suite_file(tmp_path, "leak", '{name = "faulty", label = "leaks", fail = "leak"}, {name = "faulty", label = "fine"}',
                      extra="memory_limit_mb = 700")
    suite = load_suite(path)
    summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    leak, fine = summary.outcomes
    assert leak.status == "failed" and "out of memory" in leak.reason and "memory_limit_mb=700" in leak.reason
    assert fine.status == "ok"


def _worker_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "costbench.harness.measure.worker" in cmd and marker in cmd:
            found.append(p)
    return found


def test_resume_after_the_runner_is_killed(tmp_path, plugin_backends):
    gate = tmp_path / "hold-the-slow-case"
    gate.touch()
    backends = ('{name = "faulty", label = "first"}, '
                f'{{name = "faulty", label = "slow", fail = "slow", block_while = "{gate}"}}, '
                '{name = "faulty", label = "last"}')
    path = suite_file(tmp_path, "resumable", backends, processes=2)
    out = tmp_path / "results"
    proc = cli("run", str(path), "--out", str(out))
    runs = out / "runs"
    deadline = time.monotonic() + 120
    run_file = None
    while time.monotonic() < deadline:  # wait until the first process is on disk and the slow one is running
        files = list(runs.glob("*.jsonl")) if runs.exists() else []
        if files and len(RunFile(files[0]).cases()) == 1:
            run_file = files[0]
            break
        time.sleep(0.2)
    assert run_file is not None, proc.communicate()[0]
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The in-flight case dies with its runner instead of measuring on as an orphan.
    time.sleep(1.0)
    assert _worker_processes(str(tmp_path)) == []
    with open(run_file, "a") as f:
        f.write('{"type": "case", "torn')  # as if killed mid-write too

    gate.unlink()  # the slow case is quick from now on
    run_id = run_file.stem
    resumed = cli("run", "--resume", run_id[:15], "--out", str(out), "--timeout", "5")
    text, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 2 and "--resume continues a run as it was planned" in text

    # Resuming re-plans from the suite stored in the run file and runs only the processes that are missing,
    # still interleaved: each case's second process after every case's first.
    resumed = cli("run", "--resume", run_id[:15], "--out", str(out))
    text, _ = resumed.communicate(timeout=300)
    assert "resuming" in text and "1 processes recorded, 5 to go" in text, text
    records = RunFile(run_file).cases()
    assert [(r["case"]["backend"], r["process"]) for r in records] == [
        ("first", 0), ("slow", 0), ("last", 0), ("first", 1), ("slow", 1), ("last", 1)]
    assert all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    df = load_results(out)
    assert df["run_id"].nunique() == 1 and set(df["backend"]) == {"first", "slow", "last"}
    lat = df[df.metric == "latency_p50"]  # one row per case, over both processes
    assert sorted(lat["backend"]) == ["first", "last", "slow"]
    assert all(json.loads(d)["processes"]["count"] == 2 for d in lat["details"])


def test_two_runs_into_one_folder_lose_nothing(tmp_path, plugin_backends):
    backends = ", ".join(f'{{name = "faulty", label = "b{i}"}}' for i in range(3))
    a = suite_file(tmp_path, "alpha", backends)
    b = suite_file(tmp_path, "beta", backends)
    out = tmp_path / "shared"
    procs = [cli("run", str(a), "--out", str(out)), cli("run", str(b), "--out", str(out))]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    df = load_results(out)
    assert df["run_id"].nunique() == 2
    per_run = df[df.metric == "latency_p50"].groupby("run_id")["backend"].apply(set)
    assert all(v == {"b0", "b1", "b2"} for v in per_run)


def _outcome(cv: float) -> CaseOutcome:
    case = Case(model="m", variant="fp32", backend="b", device="cpu", scenario="single_stream", batch_size=1,
                backend_name="b", recipe="fp32", recipe_options={}, backend_options={}, model_spec={},
                scenario_spec={}, artifact_format="onnx", timeout_s=1, measure_accuracy=False)
    return CaseOutcome(case, "ok", metrics=[{"metric": "latency_cv", "value": cv, "unit": "ratio"}])


def _history_run(results, run_id, cv, env_id="e1"):
    rf = RunFile.create(results, {"run_id": run_id, "env_id": env_id, "created": run_id, "suite": {"name": "s"}})
    o = _outcome(cv)
    rf.append(o.record(run_id))


def test_with_processes_instability_is_their_disagreement_against_the_case_history(tmp_path):
    """A case measured in several processes is judged by how far its processes disagree, not by its samples' CV."""
    def outcome(spread: float) -> CaseOutcome:
        o = _outcome(0.5)  # a CV that would be flagged: it is not what is judged here
        o.metrics.append({"metric": "latency_process_spread", "value": spread, "unit": "ratio"})
        return o

    store = Store(tmp_path)
    for i, spread in enumerate([0.02, 0.03, 0.025]):
        rf = RunFile.create(tmp_path, {"run_id": f"p{i}", "env_id": "e1", "created": f"p{i}", "suite": {"name": "s"}})
        rf.append(outcome(spread).record(f"p{i}"))
    far = flag_instability(store, outcome(0.2), "e1", "now")
    assert far["value"] == 1.0 and far["details"]["metric"] == "latency_process_spread"
    assert far["details"]["history_median"] == pytest.approx(0.025)
    assert flag_instability(store, outcome(0.05), "e1", "now")["value"] == 0.0


def test_instability_is_judged_against_the_case_history(tmp_path):
    store = Store(tmp_path)
    assert flag_instability(store, _outcome(0.9), "e1", "now")["details"]["judged"] is False
    for i, cv in enumerate([0.01, 0.012, 0.011]):
        _history_run(tmp_path, f"r{i}", cv)
    _history_run(tmp_path, "other-env", 0.9, env_id="e2")  # another machine's spread says nothing about this one
    noisy = flag_instability(store, _outcome(0.2), "e1", "now")
    assert noisy["value"] == 1.0 and noisy["details"]["history_runs"] == 3
    assert noisy["details"]["history_median_cv"] == pytest.approx(0.011)
    assert flag_instability(store, _outcome(0.03), "e1", "now")["value"] == 0.0  # 3x usual but under the 5% floor
    assert flag_instability(store, _outcome(0.012), "e1", "now")["value"] == 0.0
