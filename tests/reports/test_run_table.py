"""The end-of-run table: task accuracy with its interval where labelled, parity under its own name otherwise."""

import io

from rich.console import Console

from costbench.harness.reports.run_table import render, summary_tables
from costbench.harness.results.store import load_results
from synth_runs import case, write_run


def test_accuracy_column_is_task_accuracy_or_named_parity(tmp_path):
    labelled = case(variant="int8", acc_delta=-3 / 360, top1=0.99)
    for m in labelled["metrics"]:
        if m["metric"] == "task_accuracy_delta":
            m.update(ci_low=-0.0242, ci_high=0.0027, details={"kind": "task_accuracy", "samples": 360})
    unlabelled = case(model="efficientnet-lite0", variant="int8", acc_delta=None, top1=0.781)
    unlabelled["metrics"].append({"metric": "top1_agreement_confident", "value": 1.0, "unit": "ratio",
                                  "ci_low": 0.908, "ci_high": 1.0, "details": {"kind": "parity", "samples": 38}})
    write_run(tmp_path, "20260101-000000-tab001", [labelled, unlabelled])
    tables, _ = summary_tables(load_results(tmp_path))
    digits, eff = tables["digits-cnn"].iloc[0], tables["efficientnet-lite0"].iloc[0]
    assert digits["acc Δ"] == "-0.8 pt [-2.4, +0.3]" and "agree@conf" not in tables["digits-cnn"]
    assert eff["agree@conf"] == "100.0% (38)" and "acc Δ" not in tables["efficientnet-lite0"]
    assert eff["top-1 agree"] == "78.1%"  # parity on every sample, named as such, not an accuracy
    out = io.StringIO()
    render(load_results(tmp_path), Console(file=out, width=200))
    assert "agree@conf: parity, not accuracy" in out.getvalue() and "paired 95% interval" in out.getvalue()


def test_combinations_that_can_never_run_are_one_note_not_rows(tmp_path):
    from costbench.harness.suite.skips import format_mismatch

    never = case(variant="int8-xnnpack", backend="onnxruntime", status="skipped",
                 reason=format_mismatch("int8-xnnpack", ["executorch-pte"], "onnxruntime", ["onnx"]))
    fixable = case(variant="fp32", backend="executorch", status="skipped",
                   reason="backend executorch unavailable: executorch is not installed: pip install 'costbench[edge]'")
    write_run(tmp_path, "20260101-000000-tab002", [case(variant="fp32"), never, fixable])
    tables, notes = summary_tables(load_results(tmp_path))
    rows = tables["digits-cnn"][["backend", "variant"]].values.tolist()
    assert rows == [["onnxruntime", "fp32"], ["executorch", "fp32"]]  # the fixable skip stays listed
    assert notes[0].startswith("digits-cnn: 1 combination(s) can never run") and "onnxruntime×int8-xnnpack" in notes[0]
    assert any("costbench[edge]" in n for n in notes)


def test_a_fleet_run_shows_each_machine(tmp_path):
    a, b = case(variant="fp32", median_ms=1.0), case(variant="fp32", median_ms=2.0)
    write_run(tmp_path, "20260101-000000-tab003", [{**a, "env_id": "aaaaaaaaaaaa"}, {**b, "env_id": "bbbbbbbbbbbb"}])
    table = summary_tables(load_results(tmp_path))[0]["digits-cnn"]
    assert table["machine"].tolist() == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert table["p50 ms"].tolist()[0] < table["p50 ms"].tolist()[1]
