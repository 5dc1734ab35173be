"""End to end on the real backends and a real model, and the runner's handling of cases that fail."""

import json
import os
import subprocess
import sys

import pytest

from costbench.harness.execute.plan import make_plan
from costbench.harness.execute.runner import run_plan
from costbench.harness.results.store import RESULT_COLUMNS, RunFile, load_results
from costbench.harness.execute.load import load_suite

TINY = """
name = "tiny"
models = ["digits-cnn"]
variants = ["fp32", "int8"]
backends = ["torch", "onnxruntime", {name = "openvino", threads = 1}]
batch_sizes = [1]
timeout_s = 300
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 2

[[scenarios]]
kind = "single_stream"
warmup_count = 2
min_count = 30
min_duration_s = 0.1

[[scenarios]]
kind = "offline"
warmup_count = 1
min_count = 5
min_duration_s = 0.1
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.toml").write_text(TINY)
    out = d / "results"
    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "run", str(d / "tiny.toml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    return proc, out


def test_cli_run_end_to_end(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "digits-cnn" in proc.stdout and "10 ok, 2 skipped, 0 failed" in proc.stdout
    df = load_results(out)
    assert set(RESULT_COLUMNS) <= set(df.columns)
    assert df["run_id"].nunique() == 1 and df["env_id"].notna().all()
    ok = df[df.status == "ok"]
    assert set(zip(ok.backend, ok.variant)) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                                 ("openvino", "fp32"), ("openvino", "int8")}
    skipped = df[df.status == "skipped"]
    assert set(skipped.backend) == {"torch"} and set(skipped.variant) == {"int8"}
    assert skipped["reason"].str.contains("torch-module").all()
    lat = ok[(ok.metric == "latency_p50") & (ok.scenario == "single_stream")]
    assert len(lat) == 5
    for row in lat.itertuples():
        assert len(row.samples) >= 30 and row.ci_low <= row.value <= row.ci_high and row.valid
    acc = ok[ok.metric == "task_accuracy"]
    assert (acc["value"] > 0.9).all()
    fp32_parity = ok[(ok.metric == "top1_agreement") & (ok.variant == "fp32")]
    assert (fp32_parity["value"] == 1.0).all()
    delta = ok[(ok.metric == "task_accuracy_delta") & (ok.variant == "int8")]
    assert (delta["value"].abs() <= 0.03).all()
    for metric in ("model_size", "load_time", "first_inference", "peak_rss", "throughput"):
        assert (ok[ok.metric == metric]["value"] > 0).all(), metric


def test_each_case_is_measured_in_interleaved_processes(tiny_run):
    """processes = 2: two records per case, every case's first process before any second one; one row per metric
    over both, with the per-process medians and sample counts; accuracy measured once, by the first process."""
    _, out = tiny_run
    (run_file,) = (out / "runs").glob("*.jsonl")
    records = [r for r in RunFile(run_file).cases() if r["status"] == "ok"]
    assert [r["process"] for r in records] == [0] * 10 + [1] * 10
    assert [r["case"]["case_id"] for r in records[:10]] == [r["case"]["case_id"] for r in records[10:]]
    for r in records:
        has_accuracy = any(m["metric"] == "task_accuracy" for m in r["metrics"])
        assert has_accuracy == (r["process"] == 0)
    df = load_results(out)
    ok = df[df.status == "ok"]
    assert (ok.groupby(["case_id", "metric"]).size() == 1).all()
    for row in ok[ok.metric == "latency_p50"].itertuples():
        procs = json.loads(row.details)["processes"]
        assert procs["count"] == 2 and sum(procs["sizes"]) == len(row.samples)
        assert min(procs["values"]) <= row.value <= max(procs["values"])
    share = ok[ok.metric.isin(["latency_process_share", "batch_latency_process_share"])]
    assert len(share) == 10 and share["value"].between(0, 1).all()


def test_results_command_lists_and_shows(tiny_run):
    _, out = tiny_run
    listing = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "results", str(out)],
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert listing.returncode == 0 and "tiny" in listing.stdout
    shown = subprocess.run([sys.executable, "-m", "costbench.commands.cli", "results", str(out), "--last"],
                           capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0 and "onnxruntime" in shown.stdout and "int8" in shown.stdout


FAULTY = """
name = "faults"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [
  {name = "faulty", label = "raises", fail = "raise"},
  {name = "faulty", label = "segfaults", fail = "segfault"},
  {name = "faulty", label = "hangs", fail = "hang"},
  {name = "faulty", label = "exits", fail = "exit"},
  {name = "faulty", label = "fine"},
]
timeout_s = 20
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
"""


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, plugin_backends):
    (tmp_path / "faults.toml").write_text(FAULTY)
    suite = load_suite(tmp_path / "faults.toml")
    summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    by = {o.case.backend: o for o in summary.outcomes}
    assert by["raises"].status == "failed" and "faulty backend asked to raise" in by["raises"].reason
    assert by["segfaults"].status == "failed" and "SIGSEGV" in by["segfaults"].reason
    assert by["hangs"].status == "failed" and "timeout" in by["hangs"].reason
    assert by["exits"].status == "failed" and "exited with code 3" in by["exits"].reason
    assert by["fine"].status == "ok"
    records = RunFile(summary.run_file).cases()
    assert [r["case"]["backend"] for r in records] == ["raises", "segfaults", "hangs", "exits", "fine"]
    assert "Traceback" in records[0]["stderr_tail"]
    df = load_results(tmp_path / "results")
    assert set(df[df.status == "failed"]["backend"]) == {"raises", "segfaults", "hangs", "exits"}


def test_bring_your_own_models_end_to_end(tmp_path, monkeypatch):
    """A user's torch factory and a user's ONNX file (fixed batch) run through plan, worker and store."""
    import torch

    here = os.path.dirname(os.path.dirname(__file__))  # tests/harness: tiny_factory.py
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(here)
    from tiny_factory import make_tiny

    torch.onnx.export(make_tiny().eval(), (torch.randn(2, 3, 8, 8),), str(tmp_path / "fixed.onnx"), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"])
    (tmp_path / "own.toml").write_text("""
name = "own"
models = [
  {id = "factory-net", source = "torch", factory = "tiny_factory:make_tiny", inputs = [{name = "input", shape = [3, 8, 8]}]},
  {id = "fixed-onnx", source = "onnx", path = "fixed.onnx"},
]
variants = ["fp32", "int8", "distill"]
backends = ["torch", "onnxruntime"]
batch_sizes = [2, 4]
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 1
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0
""")
    suite = load_suite(tmp_path / "own.toml")
    summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    by = {(o.case.model, o.case.variant, o.case.backend, o.case.batch_size): o for o in summary.outcomes}
    for batch in (2, 4):
        assert by[("factory-net", "fp32", "torch", batch)].status == "ok"
        assert by[("factory-net", "int8", "onnxruntime", batch)].status == "ok"
    assert by[("fixed-onnx", "fp32", "onnxruntime", 2)].status == "ok"
    assert by[("fixed-onnx", "int8", "onnxruntime", 2)].status == "ok"
    wrong = by[("fixed-onnx", "fp32", "onnxruntime", 4)]
    assert wrong.status == "failed" and "fixed batch size of 2" in wrong.reason
    assert by[("fixed-onnx", "fp32", "torch", 2)].status == "skipped"  # an ONNX file has no torch module
    # A user's model has no student network: distillation does not apply, found while building (not a failure).
    no_student = by[("factory-net", "distill", "torch", 2)]
    assert no_student.status == "skipped" and "needs a student architecture" in no_student.reason
    df = load_results(tmp_path / "results")
    parity = df[(df.metric == "top1_agreement") & (df.variant == "fp32") & (df.status == "ok")]
    assert len(parity) == 5 and (parity["value"] == 1.0).all()  # factory-net x 2 backends x 2 batches + fixed-onnx


COLD_WARM = """
name = "cold-warm"
models = ["digits-cnn"]
variants = ["int8"]
backends = [{name = "onnxruntime", threads = 1}]
batch_sizes = [1]
timeout_s = 300

[[scenarios]]
kind = "single_stream"
warmup_count = 2
min_count = 20
min_duration_s = 0.05
"""


def test_peak_rss_is_the_same_with_a_cold_or_a_warm_cache(tmp_path):
    """Training the zoo model and quantizing it happen in a build process, never in the measured one."""
    from costbench.harness.execute.runner import run_case_in_child

    (tmp_path / "s.toml").write_text(COLD_WARM)
    (case,) = [c for c in make_plan(load_suite(tmp_path / "s.toml")) if c.status == "planned"]
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    cold = run_case_in_child(case, cache, work)
    warm = run_case_in_child(case, cache, work)
    assert cold.status == warm.status == "ok", cold.reason + warm.reason
    cold_m = {m["metric"]: m["value"] for m in cold.metrics}
    warm_m = {m["metric"]: m["value"] for m in warm.metrics}
    assert cold_m["build_time"] > 0 and "build_time" not in warm_m
    assert list((cache / "built").iterdir())  # the build stamp: the warm case went straight to measuring
    import shutil

    shutil.rmtree(cache / "artifacts")  # a pruned cache: the stamp no longer holds, the case builds again
    rebuilt = run_case_in_child(case, cache, work)
    assert rebuilt.status == "ok" and any(m["metric"] == "build_time" for m in rebuilt.metrics)
    for metric in ("peak_rss", "process_peak_rss"):
        assert abs(cold_m[metric] - warm_m[metric]) <= max(30.0, 0.1 * warm_m[metric]), (metric, cold_m, warm_m)
    assert warm_m["process_peak_rss"] >= warm_m["peak_rss"]

    # With everything cached, an ONNX Runtime case never imports torch: its memory is the runtime's.
    probe = ("import json, sys\nfrom pathlib import Path\nfrom costbench.harness.execute.plan import Case\n"
             "from costbench.harness.measure.worker import execute\n"
             "execute(Case.from_dict(json.loads(sys.argv[1])), Path(sys.argv[2]))\n"
             "print('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(case.to_dict()), str(cache)],
                         capture_output=True, text=True, timeout=300)
    assert "torch imported: False" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs to choose between")
def test_pin_cpus_runs_a_one_thread_case_on_a_core_of_its_own(tmp_path):
    (tmp_path / "pinned.toml").write_text("""
name = "pinned"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [{name = "onnxruntime", threads = 1}, "torch"]
accuracy = false
processes = 1
pin_cpus = true

[[scenarios]]
kind = "single_stream"
warmup_count = 2
min_count = 30
min_duration_s = 0.1
""")
    suite = load_suite(tmp_path / "pinned.toml")
    summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    allowed = sorted(os.sched_getaffinity(0))
    by = {o.case.backend: o for o in summary.outcomes}
    assert all(o.status == "ok" for o in by.values()), [o.reason for o in by.values()]
    one = by["onnxruntime"].info
    assert one["cpu_affinity"]["pinned"] and one["cpus_allowed"] == one["cpu_affinity"]["worker_cpus"] == allowed[-1:]
    # torch sizes its threads to every core: nothing to spare, the process runs where the runner may
    every = by["torch"].info
    assert not every["cpu_affinity"]["pinned"] and every["cpus_allowed"] == allowed
    assert os.sched_getaffinity(0) == set(allowed)  # the runner's threads are back where they were
