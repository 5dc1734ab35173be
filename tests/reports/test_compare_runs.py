"""costbench compare: shared series only, ratio with CI, BH-corrected p, verdicts, env warning, exit codes."""

import json

import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.reports.compare import compare_runs, render_markdown, verdict
from costbench.harness.reports.data import load_selection
from costbench.core.stats import benjamini_hochberg, mann_whitney_p
from synth_runs import case, make_env, write_run


@pytest.fixture
def two_runs(tmp_path):
    write_run(tmp_path, "base-run", [
        case(variant="fp32", median_ms=1.0, seed=1),
        case(variant="int8", median_ms=1.0, seed=2),
        case(variant="int8-nncf", median_ms=1.0, seed=3),
        case(variant="noisy", median_ms=1.0, seed=4),
        case(variant="tiny-shift", median_ms=1.0, seed=5),
        case(variant="gone", median_ms=1.0, seed=6),
    ], created="2026-01-01T00:00:00+00:00")
    write_run(tmp_path, "new-run", [
        case(variant="fp32", median_ms=1.0, seed=11),          # same distribution
        case(variant="int8", median_ms=1.2, seed=12),          # 20% slower
        case(variant="int8-nncf", median_ms=0.8, seed=13),     # 20% faster
        case(variant="noisy", median_ms=1.3, seed=14, spread=0.4),  # far noisier than before
        case(variant="tiny-shift", median_ms=1.02, seed=15),   # significant but only 2%
        case(variant="added", median_ms=1.0, seed=16),
    ], created="2026-01-02T00:00:00+00:00")
    return tmp_path


def test_verdicts_and_shared_series_only(two_runs):
    sel = load_selection([two_runs])
    res = compare_runs(sel, "base-run", "new-run")
    by = {s.variant: s for s in res.series}
    assert set(by) == {"fp32", "int8", "int8-nncf", "noisy", "tiny-shift"}
    assert by["int8"].verdict == "regressed" and by["int8-nncf"].verdict == "improved"
    assert by["fp32"].verdict == "unchanged" and "not significant" in by["fp32"].reason
    assert by["noisy"].verdict == "unstable" and "spread" in by["noisy"].reason
    assert by["tiny-shift"].verdict == "unchanged" and "within ±5%" in by["tiny-shift"].reason
    assert by["int8"].ratio == pytest.approx(1.2, rel=0.02)
    assert by["int8"].ratio_ci_low < by["int8"].ratio < by["int8"].ratio_ci_high
    assert [s.endswith("/ latency_p50") for s in res.only_base] == [True] and "gone" in res.only_base[0]
    assert "added" in res.only_new[0]
    # The p-values are Mann-Whitney's on the stored samples, and q is BH over exactly these series.
    df = sel.results
    lat = df[df.metric == "latency_p50"].set_index(["run_id", "variant"])["samples"]
    assert by["int8"].p_value == mann_whitney_p(lat[("base-run", "int8")], lat[("new-run", "int8")])
    assert [s.q_value for s in res.series] == pytest.approx(list(benjamini_hochberg([s.p_value for s in res.series])))
    assert res.env_warning == ""
    md = render_markdown(res)
    assert "1 regressed, 1 improved, 1 unstable, 2 unchanged" in md


def test_verdict_rule():
    args = dict(base_spread=0.02, new_spread=0.02, base_valid=True, new_valid=True, threshold=0.05, alpha=0.002)
    assert verdict(1.10, 1.08, 1.12, 1e-6, **args)[0] == "regressed"
    assert verdict(1.10, 1.08, 1.12, 0.01, **args)[0] == "unchanged"  # p above 0.002: not claimed
    assert verdict(1.04, 1.03, 1.05, 1e-9, **args)[0] == "unchanged"  # significant but small
    assert verdict(0.90, 0.88, 0.92, 1e-6, **args)[0] == "improved"
    assert verdict(0.90, 0.88, 0.92, 1e-6, **{**args, "new_valid": False})[0] == "unstable"
    assert verdict(1.10, 1.08, 1.12, 1e-6, **args, higher_is_better=True)[0] == "improved"


def test_different_environments_warn(tmp_path):
    write_run(tmp_path, "a", [case(seed=1)], env=make_env(onnxruntime="1.31.0"), created="2026-01-01T00:00:00+00:00")
    write_run(tmp_path, "b", [case(seed=2)], env=make_env(onnxruntime="1.32.0"), created="2026-01-02T00:00:00+00:00")
    res = compare_runs(load_selection([tmp_path]), "a", "b")
    assert "different environments" in res.env_warning
    assert res.env_diffs == ["libraries.onnxruntime: 1.31.0 → 1.32.0"]


def test_cli_exit_codes_and_outputs(two_runs, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["compare", "base-run", "new-run", "--results", str(two_runs),
                             "--json", str(tmp_path / "c.json"), "--markdown", str(tmp_path / "c.md")])
    assert ok.exit_code == 0, ok.output
    assert "1 regressed, 1 improved, 1 unstable, 2 unchanged" in ok.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["counts"]["regressed"] == 1 and len(doc["series"]) == 5
    gate = runner.invoke(app, ["compare", "base", "new", "--results", str(two_runs), "--fail-on-regression"])
    assert gate.exit_code == 1
    clean = runner.invoke(app, ["compare", "base", "base", "--results", str(two_runs)])
    assert clean.exit_code == 2 and "same run" in clean.output
    wide = runner.invoke(app, ["compare", "base", "new", "--results", str(two_runs), "--threshold", "0.5",
                               "--fail-on-regression"])
    assert wide.exit_code == 0  # a 20% change is below a 50% threshold
    missing = runner.invoke(app, ["compare", "base-rnu", "new", "--results", str(two_runs)])
    assert missing.exit_code == 2 and "similar: base-run" in missing.output


def test_runner_instability_flag_makes_a_series_unstable(tmp_path):
    write_run(tmp_path, "a", [case(seed=1)], created="2026-01-01T00:00:00+00:00")
    write_run(tmp_path, "b", [case(seed=2, median_ms=1.5, runner_unstable=True)], created="2026-01-02T00:00:00+00:00")
    (s,) = compare_runs(load_selection([tmp_path]), "a", "b").series
    assert s.verdict == "unstable" and "NEW: the runner flagged it unstable (CV 30.0% vs 2.0% usual" in s.reason


def test_processes_are_the_replicates(tmp_path, rng):
    """Identical runs whose launches differ by 3% (and whose samples are tight) are unchanged with processes as
    replicates, although a single process's samples 'see' a difference; a 30% step is still called; a run from
    before replication falls back to the samples and says so."""
    from synth_runs import process_cases

    base = process_cases(rng, variant="fp32") + process_cases(rng, variant="int8", median_ms=1.0)
    new = process_cases(rng, variant="fp32") + process_cases(rng, variant="int8", median_ms=1.3)
    write_run(tmp_path, "base-run", base, created="2026-01-01T00:00:00+00:00")
    write_run(tmp_path, "new-run", new, created="2026-01-02T00:00:00+00:00")
    write_run(tmp_path, "old-run", [case(variant="fp32", median_ms=1.0, seed=7)], created="2026-01-03T00:00:00+00:00")
    sel = load_selection([tmp_path])
    by = {s.variant: s for s in compare_runs(sel, "base-run", "new-run").series}
    assert by["fp32"].method == by["int8"].method == "processes"
    assert (by["fp32"].n_base, by["fp32"].n_new) == (5, 5)
    assert by["fp32"].verdict in ("unchanged", "unstable")
    assert by["int8"].verdict == "regressed" and 1.2 < by["int8"].ratio < 1.4
    assert by["int8"].ratio_ci_low < by["int8"].ratio < by["int8"].ratio_ci_high
    # The rows: one per metric over the 5 processes, the interval across them, accuracy from process 0.
    rows = sel.results[(sel.results.run_id == "base-run") & (sel.results.variant == "fp32")]
    lat = rows[rows.metric == "latency_p50"].iloc[0]
    details = json.loads(lat["details"])["processes"]
    assert details["count"] == 5 and sum(details["sizes"]) == len(lat["samples"]) == 2000
    assert lat["ci_low"] < lat["value"] < lat["ci_high"]
    assert (rows.metric == "top1_agreement").sum() == 1 and (rows.metric == "latency_process_share").sum() == 1
    fallback = compare_runs(sel, "base-run", "old-run")
    (s,) = fallback.series
    assert s.method == "samples" and "single process in NEW" in s.reason
    assert "measured in a single process" in render_markdown(fallback)
