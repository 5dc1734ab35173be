"""The report names a pick only when it beats each runner-up by more than the margin at 95% (issue 28, item 5)."""

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.core.stats import paired_ratio
from costbench.harness.reports.ties import MARGIN, compare_to_pick
from synth_runs import case, write_run


def test_paired_ratio_is_the_geometric_mean_of_the_ratios_with_a_t_interval(rng):
    a = np.exp(rng.normal(0.0, 0.2, 6))
    b = a * np.exp(rng.normal(0.1, 0.05, 6))
    ratio, low, high = paired_ratio(a, b)
    d = np.log(b) - np.log(a)
    half = 2.5705818366147395 * d.std(ddof=1) / math.sqrt(6)  # t(5) at 97.5%, computed in fp64 elsewhere
    assert ratio == pytest.approx(math.exp(d.mean()), rel=1e-12)
    assert (low, high) == pytest.approx((math.exp(d.mean() - half), math.exp(d.mean() + half)), rel=1e-9)


def row(values, run_id="r1"):
    return {"run_id": run_id, "throughput_values": list(values)}


def test_pairing_cancels_the_drift_both_share(rng):
    drift = np.exp(rng.normal(0.0, 0.25, 5))  # the machine's slow and fast rounds, shared by both
    pick = 500.0 * drift * np.exp(rng.normal(0.0, 0.005, 5))
    other = 400.0 * drift * np.exp(rng.normal(0.0, 0.005, 5))  # 25% more expensive
    paired = compare_to_pick(row(pick), row(other), "throughput_values", higher_is_better=True)
    assert paired.paired and paired.decided and paired.ratio == pytest.approx(1.25, rel=0.03)
    # The same numbers from two runs cannot be paired: the drift then stays in the interval.
    unpaired = compare_to_pick(row(pick), row(other, "r2"), "throughput_values", higher_is_better=True)
    assert not unpaired.paired and unpaired.high - unpaired.low > 4 * (paired.high - paired.low)


# Per-process deviations of a runner-up from the pick with a fixed spread (sd of the log ratio 0.05), so that
# whether the interval clears the margin does not hang on the draw: the pick's own values are drawn.
WOBBLE = np.exp(np.array([0.05, -0.05, 0.06, -0.06, 0.0]))


def test_a_close_runner_up_is_a_tie_that_says_what_would_decide_it(rng):
    pick = 500.0 * np.exp(rng.normal(0.0, 0.05, 5))
    other = pick / 1.06 / WOBBLE
    v = compare_to_pick(row(pick), row(other), "throughput_values", higher_is_better=True)
    assert not v.decided and v.low <= 1 + MARGIN
    text = v.describe("cost")
    assert "cost ratio" in text and "paired over 5 processes" in text
    assert ("processes a case would" in text) or ("be needed" in text)
    # Equal within the margin: a tight interval around 1 is a tie that more data will not break.
    same = compare_to_pick(row(pick), row(pick * np.exp(rng.normal(0.0, 0.001, 5))), "throughput_values",
                           higher_is_better=True)
    assert same.equal and "equal within 3%" in same.describe("cost")
    # One process a side: nothing to judge by.
    assert compare_to_pick(row([500.0]), row([400.0]), "throughput_values", higher_is_better=True) is None


def processes(variant, backend, throughputs, seed):
    """One record per process of a case, as the runner writes them (process k of each case in round k)."""
    out = []
    for k, thr in enumerate(throughputs):
        rec = case(variant=variant, backend=backend, throughput=float(thr), seed=seed + k, acc_delta=0.0)
        rec["case"]["processes"] = len(throughputs)
        rec["process"] = k
        out.append(rec)
    return out


def report_text(tmp_path, pick_thr, other_thr):
    write_run(tmp_path / "results", "20260101-000000-tie001",
              processes("int8", "openvino", pick_thr, 10) + processes("int8", "onnxruntime", other_thr, 20))
    out = CliRunner().invoke(app, ["report", "last", "--results", str(tmp_path / "results"), "--machine-type",
                                   "aws/c7i.xlarge", "--out", str(tmp_path / "rep")], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    return out.output, (tmp_path / "rep" / "report.md").read_text(), (tmp_path / "rep" / "report.html").read_text()


def test_the_report_names_the_tied_set_instead_of_a_pick(tmp_path, rng):
    pick = 500.0 * np.exp(rng.normal(0.0, 0.08, 5))
    text, md, html = report_text(tmp_path, pick, pick / 1.02 / WOBBLE)
    assert "tied, best estimate" in text and "No single pick" in text and "recommended" not in text
    assert "**Tied, best estimate:**" in md and "onnxruntime int8" in md.split("No single pick")[1]
    assert 'id="ties-' in html


def test_the_report_names_a_pick_that_clears_the_runner_up_with_its_ratio(tmp_path, rng):
    drift = np.exp(rng.normal(0.0, 0.1, 5))
    text, md, _ = report_text(tmp_path, 500.0 * drift, 300.0 * drift * np.exp(rng.normal(0.0, 0.01, 5)))
    assert "recommended openvino int8" in text and "clears the runner-up onnxruntime int8" in text
    assert "the pick is better by more than 3%" in text and "per million inferences (95% CI" in text
