"""Run files are the source of truth; the DuckDB store is rebuilt from them; torn writes lose one record only."""

import json
import threading

import pandas as pd

from costbench.harness.results.store import RESULT_COLUMNS, RunFile, Store, list_runs, load_results


def make_run(results_dir, run_id, n_cases=2, value=1.0):
    rf = RunFile.create(results_dir, {"run_id": run_id, "env_id": "e1", "created": f"2026-01-01T00:00:0{run_id[-1]}",
                                      "commit": "abc", "suite": {"name": "s"}})
    for i in range(n_cases):
        case = {"case_id": f"c{i}", "model": "m", "variant": "fp32", "backend": "b", "device": "cpu",
                "scenario": "single_stream", "batch_size": 1, "recipe": "fp32"}
        rf.append({"type": "case", "case": case, "status": "ok", "reason": "",
                   "metrics": [{"metric": "latency_p50", "value": value + i, "unit": "ms", "ci_low": value,
                                "ci_high": value + 2, "valid": True, "samples": [value, value + i]},
                               {"metric": "model_size", "value": 10.0, "unit": "bytes"}]})
    return rf


def test_long_form_columns_and_values(tmp_path):
    make_run(tmp_path, "run1")
    df = load_results(tmp_path)
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 4
    lat = df[df.metric == "latency_p50"].sort_values("case_id")
    assert lat["value"].tolist() == [1.0, 2.0]
    assert list(lat["samples"].iloc[1]) == [1.0, 2.0]
    assert df["batch_size"].iloc[0] == 1


def test_store_resyncs_appended_cases_and_rebuilds(tmp_path):
    rf = make_run(tmp_path, "run1", n_cases=1)
    assert len(load_results(tmp_path)) == 2
    rf.append({"type": "case", "case": {"case_id": "c9", "model": "m", "variant": "int8", "backend": "b", "device": "cpu",
                                        "scenario": "single_stream", "batch_size": 1, "recipe": "int8"},
               "status": "skipped", "reason": "no int8 here", "metrics": []})
    df = load_results(tmp_path)
    skipped = df[df.status == "skipped"]
    assert len(skipped) == 1 and skipped["reason"].iloc[0] == "no int8 here" and pd.isna(skipped["value"].iloc[0])
    (tmp_path / "costbench.duckdb").unlink()
    assert len(load_results(tmp_path)) == 3
    assert Store(tmp_path).rebuild() == 1


def test_torn_last_line_is_skipped(tmp_path):
    rf = make_run(tmp_path, "run1", n_cases=2)
    with open(rf.path, "a") as f:
        f.write('{"type": "case", "case": {"case_id": "c5"')  # killed mid-write
    assert len(rf.cases()) == 2
    assert len(load_results(tmp_path)) == 4


def test_runs_listed_and_filtered(tmp_path):
    make_run(tmp_path, "run1")
    make_run(tmp_path, "run2", value=5.0)
    runs = list_runs(tmp_path)
    assert runs["run_id"].tolist() == ["run1", "run2"]
    assert set(load_results(tmp_path, "run2")["run_id"]) == {"run2"}


def test_concurrent_appends_lose_nothing(tmp_path):
    rf = make_run(tmp_path, "run1", n_cases=0)

    def writer(k):
        for i in range(50):
            rf.append({"type": "case", "case": {"case_id": f"w{k}-{i}"}, "status": "ok", "pad": "x" * 2000})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = rf.path.read_text().splitlines()
    assert len(lines) == 1 + 200
    assert all(json.loads(line) for line in lines)
