"""costbench crosscheck: the vendors' own tools on the same artifact, with the same settings.

A real benchmark_app runs on a tiny real model (the tiny factory CNN, built to OpenVINO IR by the fp32 recipe
through the worker's build process and measured by costbench in its own process, as a suite case is), and
its real report is parsed; a synthetic run file is paired through the same resolution as `costbench report`;
a case whose artifact is gone and an absent trtexec are skipped with their reasons. No timed asserts: only
that numbers exist, are positive, and that the settings match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costbench.harness.crosscheck import vendor as cc
from costbench.harness.crosscheck.vendor import BenchmarkApp, Pair, Target, Trtexec
from costbench.harness.reports.data import list_all_runs, load_selection, resolve_runs

HERE = Path(__file__).resolve().parents[1]  # tests/harness: tiny_factory.py
REPORTS = HERE.parent / "reports"
MODEL = {"id": "tiny", "source": "torch", "factory": "tiny_factory:make_tiny",
         "inputs": [{"name": "input", "shape": [3, 8, 8]}]}
SINGLE_STREAM = {"kind": "single_stream", "warmup_count": 2, "min_count": 30, "min_duration_s": 0.05}
OPTIONS = {"hint": "latency", "threads": 1}


def _case(scenario: dict = SINGLE_STREAM) -> dict:
    from costbench.core.artifacts import FORMAT_OPENVINO
    from costbench.harness.execute.plan import Case

    return Case(model="tiny", variant="fp32", backend="openvino", device="cpu", scenario=scenario["kind"],
                batch_size=2, backend_name="openvino", recipe="fp32", recipe_options={}, backend_options=OPTIONS,
                model_spec=MODEL, scenario_spec=scenario, artifact_format=FORMAT_OPENVINO, timeout_s=600,
                measure_accuracy=False).to_dict()


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Target:
    """The tiny model measured by costbench the normal way: built by `worker --build`, timed in its own process."""
    cache, work = tmp_path_factory.mktemp("cc-cache"), tmp_path_factory.mktemp("cc-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
        target, why = cc.measure_case(_case(), cache, work)
    assert target is not None, why
    return target


@pytest.fixture(scope="module")
def pair(measured, tmp_path_factory) -> Pair:
    """A real benchmark_app run (1 s) on the artifact costbench measured."""
    return cc.crosscheck_target(measured, BenchmarkApp(), tmp_path_factory.mktemp("cc-app"), time_s=1)


def test_the_measured_case_records_what_benchmark_app_needs(measured):
    assert measured.p50_ms and measured.p50_ms > 0
    assert Path(measured.artifact["path"]).name == "model.xml" and Path(measured.artifact["path"]).exists()
    assert measured.artifact["inputs"] == [{"name": "input", "shape": [3, 8, 8], "dtype": "float32"}]
    assert measured.session["INFERENCE_NUM_THREADS"] == 1  # the case's threads, as compiled


def test_benchmark_app_runs_on_the_same_artifact_with_the_same_settings(pair, measured):
    assert pair.status == "ok", pair.reason
    argv = pair.command
    assert argv[argv.index("-m") + 1] == measured.artifact["path"]
    for flag, value in (("-hint", "latency"), ("-api", "sync"), ("-infer_precision", "f32"),
                        ("-shape", "[2,3,8,8]"), ("-t", "1"), ("-report_type", "no_counters")):
        assert argv[argv.index(flag) + 1] == value, flag
    assert "-nthreads" not in argv  # benchmark_app refuses it beside a hint: the threads go in -load_config
    config = json.loads(Path(argv[argv.index("-load_config") + 1]).read_text())
    assert config == {"CPU": {"INFERENCE_NUM_THREADS": "1"}}
    # What both sides compiled, as each reports it, is the same.
    props = pair.vendor.properties
    assert props["PERFORMANCE_HINT"] == "LATENCY" and props["INFERENCE_NUM_THREADS"] == "1"
    assert props["NUM_STREAMS"] == "1" and cc._norm_precision(props["INFERENCE_PRECISION_HINT"]) == "f32"
    assert pair.mismatches == []


def test_benchmark_apps_real_report_is_parsed(pair):
    v = pair.vendor
    report = v.report["execution_results"]
    assert v.median_ms > 0 and v.iterations == int(report["total number of iterations"]) > 0
    assert v.throughput == float(report["throughput"]) > 0
    assert v.min_ms <= v.mean_ms <= v.max_ms
    # Under 1 ms the log's µs median is used; the report's own rounds it to 0.01 ms.
    assert abs(v.median_ms - float(report["latency (ms)"])) <= 0.005 + 1e-9
    assert ("log" in v.median_source) == (v.mean_ms < 1.0)
    assert pair.ratio == pytest.approx(pair.target.p50_ms / v.median_ms)
    assert pair.verdict in ("agrees", "costbench slower", "costbench faster")


def test_property_log_parsing_reads_step_8_only():
    log = ("[Step 8/11] Querying optimal runtime parameters\n[ INFO ] Model:\n[ INFO ]   NUM_STREAMS: 1\n"
           "[ INFO ]   INFERENCE_PRECISION_HINT: <Type: 'float32'>\n[Step 9/11] Creating infer requests\n"
           "[ INFO ]   NOT_THIS: 2\n")
    assert cc.parse_benchmark_app_properties(log) == {"NUM_STREAMS": "1",
                                                      "INFERENCE_PRECISION_HINT": "<Type: 'float32'>"}


def test_offline_uses_the_async_api_with_costbenchs_requests_and_compares_throughput(measured, tmp_path):
    t = Target(**{**measured.__dict__, "scenario": "offline", "kind": "offline", "concurrency": 1, "throughput": 1000.0})
    argv, settings = BenchmarkApp().command(t, tmp_path, 2.5)
    assert argv[argv.index("-api") + 1] == "async" and argv[argv.index("-nireq") + 1] == "1"
    assert argv[argv.index("-t") + 1] == "3"  # whole seconds, rounded up
    p = Pair(t, "benchmark_app", "ok", vendor=cc.VendorResult(median_ms=0.1, throughput=1100.0))
    assert p.ratio == pytest.approx(1.1)  # tool's throughput over costbench's: > 1 means costbench slower


def _synth_run(results: Path, measured: Target, artifact_path: str | None = None) -> str:
    import sys

    sys.path.insert(0, str(REPORTS))
    try:
        from synth_runs import case, write_run
    finally:
        sys.path.remove(str(REPORTS))
    rec = case(model="tiny", variant="fp32", backend="openvino", median_ms=0.05, batch_size=2)
    rec["case"].update(backend_name="openvino", backend_options=OPTIONS)
    rec["info"] = {"artifact": {**measured.artifact, "path": artifact_path or measured.artifact["path"]},
                   "session": measured.session}
    other = case(model="tiny", variant="fp32", backend="onnxruntime", median_ms=0.04, batch_size=2, seed=3)
    write_run(results, "20261129-000000-cross", [rec, other])
    return "20261129-000000-cross"


def test_a_synthetic_run_is_paired_case_by_case(measured, tmp_path):
    run_id = _synth_run(tmp_path / "results", measured)
    dirs = [tmp_path / "results"]
    runs = list_all_runs(dirs)
    ids = resolve_runs(["last"], runs)
    targets, skipped = cc.targets_from_selection(load_selection(dirs, ids, runs), ids)
    assert ids == [run_id] and skipped == []
    assert len(targets) == 1  # onnxruntime has no vendor tool
    t = targets[0]
    assert t.backend_options == OPTIONS and t.p50_ms == pytest.approx(0.05, rel=0.1)
    assert t.source == f"run {run_id}"
    pairs = cc.crosscheck(targets, tmp_path / "work", time_s=1, here_env_id="here",
                          run_env_ids=dict(zip(runs.run_id, runs.env_id)))
    assert pairs[0].status == "ok", pairs[0].reason
    assert pairs[0].ratio == pytest.approx(t.p50_ms / pairs[0].vendor.median_ms)
    assert any("--fresh" in n for n in pairs[0].notes)  # the run's machine is not this one


def test_the_command_writes_the_table_json_and_markdown(measured, tmp_path):
    from costbench.commands.cli import app

    _synth_run(tmp_path / "results", measured)
    out_json, out_md = tmp_path / "cc.json", tmp_path / "cc.md"
    res = CliRunner().invoke(app, ["crosscheck", "last", "-r", str(tmp_path / "results"), "-t", "1",
                                   "--json", str(out_json), "--md", str(out_md)])
    assert res.exit_code == 0, res.output
    assert "benchmark_app" in res.output and "tiny / fp32" in res.output
    data = json.loads(out_json.read_text())
    (p,) = data["pairs"]
    assert p["status"] == "ok" and p["vendor"]["median_ms"] > 0 and p["ratio"] > 0
    assert p["settings"]["hint"] == "latency" and p["settings"]["load_config"] == {"INFERENCE_NUM_THREADS": "1"}
    md = out_md.read_text()
    assert "| tiny / fp32 | single_stream b2 |" in md and "benchmark_app -m" in md and "machine:" in md


def test_a_case_whose_artifact_is_gone_is_skipped_with_what_to_do(measured, tmp_path):
    gone = str(tmp_path / "pruned" / "model.xml")
    _synth_run(tmp_path / "results", measured, artifact_path=gone)
    res = CliRunner().invoke(__import__("costbench.commands.cli", fromlist=["app"]).app,
                             ["crosscheck", "last", "-r", str(tmp_path / "results"), "-t", "1"])
    assert res.exit_code == 0, res.output
    t = Target(**{**measured.__dict__, "artifact": {**measured.artifact, "path": gone}})
    p = cc.crosscheck_target(t, BenchmarkApp(), tmp_path / "w")
    assert p.status == "skipped" and gone in p.reason and "not on this machine" in p.reason and "--fresh" in p.reason
    assert "skipped" in res.output and "not on this machine" in " ".join(res.output.split())


def test_trtexec_absent_is_skipped_with_the_reason(monkeypatch, measured, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec on PATH
    monkeypatch.setattr(cc, "TRTEXEC_PATHS", (str(tmp_path / "nowhere" / "trtexec"),))
    t = Target(**{**measured.__dict__, "backend": "tensorrt", "backend_name": "tensorrt", "device": "cuda",
                  "artifact": {**measured.artifact, "format": "onnx"}})
    p = cc.crosscheck_target(t, Trtexec(), tmp_path / "w")
    assert p.status == "skipped" and "trtexec is not installed" in p.reason and p.vendor is None
    (q,) = cc.crosscheck([t], tmp_path / "w2", fresh=True)  # skipped before measuring anything
    assert q.status == "skipped" and "trtexec is not installed" in q.reason


def test_trtexec_command_uses_its_real_flags(measured, tmp_path):
    onnx = tmp_path / "artifacts" / "k" / "model.onnx"
    t = Target(**{**measured.__dict__, "backend": "tensorrt", "backend_name": "tensorrt", "device": "cuda:1",
                  "backend_options": {}, "session": {"engine_key": "e1"},
                  "artifact": {**measured.artifact, "format": "onnx", "path": str(onnx)}})
    argv, settings = Trtexec().command(t, tmp_path, 5)
    assert f"--onnx={onnx}" in argv and "--stronglyTyped" in argv and "--shapes=input:2x3x8x8" in argv
    assert "--device=1" in argv and "--duration=5" in argv and any(a.startswith("--exportTimes=") for a in argv)
    assert "--noDataTransfers" not in argv and "--useCudaGraph" not in argv  # costbench's boundary has copies
    engine = tmp_path / "artifacts" / "e1" / "model.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"x")
    argv, settings = Trtexec().command(t, tmp_path, 5)
    assert f"--loadEngine={engine}" in argv and not any(a.startswith("--onnx") for a in argv)
    assert "--shapes=input:2x3x8x8" in argv and "--stronglyTyped" not in argv  # the engine decides precision
    (tmp_path / "times.json").write_text(json.dumps([{"latencyMs": v} for v in (1.0, 3.0, 2.0)]))
    r = Trtexec().parse(tmp_path, "[I] Throughput: 512.5 qps\n")
    assert r.median_ms == 2.0 and r.throughput == 512.5 and r.iterations == 3


def test_breakdown_times_each_step_on_one_compiled_model(measured):
    bd = cc.openvino_breakdown(measured, rounds=2, per_round=5)
    assert list(bd["steps"]) == list(cc.BREAKDOWN_STEPS)
    for step in bd["steps"].values():
        assert step["samples"] == 10 and step["host_median_ms"] > 0 and step["runtime_latency_median_ms"] > 0
    assert bd["steps"]["a_fixed_tensor"]["over_a_ms"] == 0
    md = cc.to_markdown([], {"machine": "here"}, {"tiny": bd})
    assert "Where the time goes, tiny" in md and "| e_session_run |" in md


def test_a_suites_vendor_cases_are_planned_and_combinations_that_never_run_left_out():
    planned, skipped, never = cc.cases_from_suite(Path(__file__).parents[3] / "suites" / "full.toml",
                                                  [{"backend": "openvino"}])
    assert never == 4  # int8-xnnpack comes as an ExecuTorch program: 2 models x 2 scenarios
    assert skipped == [] and len(planned) == 12
    assert {c.variant for c in planned} == {"fp32", "int8", "int8-nncf"}
    assert {c.scenario for c in planned} == {"single_stream", "offline"}


def test_the_command_measures_a_suites_cases_afresh(tmp_path, monkeypatch):
    from costbench.commands.cli import app

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        'name = "cc-tiny"\nbatch_sizes = [2]\nvariants = ["fp32"]\nmodels = [{ id = "tiny", source = "torch", '
        'factory = "tiny_factory:make_tiny", inputs = [{ name = "input", shape = [3, 8, 8] }] }]\n'
        'backends = [{ name = "openvino", threads = 1 }, { name = "onnxruntime" }]\n'
        '[[scenarios]]\nkind = "single_stream"\nwarmup_count = 2\nmin_count = 30\nmin_duration_s = 0.05\n')
    out = tmp_path / "cc.json"
    res = CliRunner().invoke(app, ["crosscheck", str(suite), "-t", "1", "--json", str(out),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    (p,) = json.loads(out.read_text())["pairs"]
    assert p["status"] == "ok" and p["source"] == "measured now" and p["costbench"]["p50_ms"] > 0
    assert p["artifact"]["path"].startswith(str(tmp_path / "cache"))
