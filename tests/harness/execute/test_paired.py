"""BASE and NEW side by side in one window (costbench ab, issue 28): alternation, pairing, the looks."""

import json
import os
import stat
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.execute.load import load_suite
import costbench.api as api
from costbench.harness.execute.paired import (LOOK_ROUNDS, LOOKS, PAIRED_ALPHA, PairingError, Side, match_cases,
                                              run_paired, series_key)
from costbench.harness.execute.plan import make_plan
from costbench.harness.reports.compare import INVALID_NOTE, compare_runs, needs_another_look
from costbench.harness.reports.data import load_selection
from costbench.harness.results.runfile import run_files

SUITE = """
name = "ab"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [
  {{name = "sleepy", label = "changed", base_ms = 2.0, slowdown = {slowdown}, process_sd = 0.0}},
  {{name = "sleepy", label = "same", base_ms = 2.0, slowdown = 0.0, process_sd = 0.0}},
]
accuracy = false
timeout_s = 120
processes = {processes}
[[scenarios]]
kind = "single_stream"
warmup_count = 5
min_count = 50
min_duration_s = 0.1
"""


@pytest.fixture
def sleepy(plugin_backends, monkeypatch):
    monkeypatch.setenv("COSTBENCH_EXTRA_BACKENDS", "sleepy=sleepy_backend:SleepyBackend")


def suite_file(tmp_path, name, slowdown=0.0, processes=3):
    p = tmp_path / f"{name}.toml"
    p.write_text(SUITE.format(slowdown=slowdown, processes=processes))
    return p


def records(results_dir, run_id):
    (rf,) = [f for f in run_files(results_dir) if f.path.stem.startswith(run_id)]
    return rf.cases()


def test_the_sides_alternate_in_one_window_and_a_planted_change_is_called(tmp_path, sleepy):
    out = tmp_path / "results"
    started = []
    done = api.ab(suite_file(tmp_path, "base"), suite_file(tmp_path, "new", slowdown=0.5), out,
                  on_start=lambda side, c: started.append((side, c.backend, c.process)))
    assert len(done.matched) == 2 and not done.only_base and not done.only_new
    recs = {side: records(out, s.run_id) for side, s in (("base", done.base), ("new", done.new))}
    assert len(started) == sum(map(len, recs.values()))
    # Round k: process k of a case on both sides back to back, BASE first in even rounds and NEW first in odd ones.
    for i in range(0, len(started), 2):
        (s1, b1, k1), (s2, b2, k2) = started[i], started[i + 1]
        assert (b1, k1) == (b2, k2) and (s1, s2) == (("base", "new") if k1 % 2 == 0 else ("new", "base"))
    assert [k for _, b, k in started if b == "changed"][::2] == [0, 1, 2]
    for side in recs:
        for r in recs[side]:
            assert r["info"]["paired"] == {"with": (done.new if side == "base" else done.base).run_id, "side": side,
                                           "looks": LOOKS, "alpha": PAIRED_ALPHA}
    result = compare_runs(load_selection([out]), done.base.run_id, done.new.run_id)
    assert result.paired is not None and result.alpha == PAIRED_ALPHA
    by = {s.backend: s for s in result.series}
    assert by["changed"].verdict == "regressed" and by["changed"].ratio > 1.3
    assert by["same"].verdict in ("unchanged", "unstable"), by["same"].reason  # never called
    # A case decided at a look stops there; an undecided one gets the next look's rounds (3, 9, then 15 pairs a side).
    assert PAIRED_ALPHA * LOOKS == pytest.approx(0.002) and LOOK_ROUNDS == (1, 3, 5)
    assert all(set(later) <= set(earlier) for earlier, later in zip([done.matched, *done.more_looks], done.more_looks))
    for label in done.matched:
        backend = label.split(" / ")[2]
        looks = 1 + sum(label in cases for cases in done.more_looks)
        for side in recs:
            n = sum(r["case"]["backend"] == backend for r in recs[side])
            assert n == 3 * LOOK_ROUNDS[looks - 1], (label, side, n, done.more_looks)


def test_a_series_is_measured_again_while_a_change_past_the_threshold_is_not_ruled_out():
    s = lambda verdict, lo, hi, reason="": SimpleNamespace(  # noqa: E731
        verdict=verdict, ratio_ci_low=lo, ratio_ci_high=hi, reason=reason)
    assert needs_another_look(s("unchanged", 0.97, 1.06), 0.05)  # a change past +5% is not ruled out
    assert needs_another_look(s("unchanged", 0.94, 1.02), 0.05)
    assert not needs_another_look(s("unchanged", 0.97, 1.03), 0.05)  # shown within +-5%: decided
    assert not needs_another_look(s("regressed", 1.06, 1.2), 0.05)
    # processes that disagree: more pairs settle it; an invalid result stays invalid however long it is measured
    assert needs_another_look(s("unstable", 0.5, 2.0, "NEW: the runner flagged it unstable (...)"), 0.05)
    assert needs_another_look(s("unstable", 0.5, 2.0, "NEW's process spread 9.0% is 4.1× the other run's"), 0.05)
    assert not needs_another_look(s("unstable", 0.5, 2.0, f"BASE {INVALID_NOTE}"), 0.05)


def test_cases_are_matched_by_series_and_the_sides_must_agree(tmp_path, sleepy):
    base = make_plan(load_suite(suite_file(tmp_path, "base")))
    other = tmp_path / "other.toml"
    other.write_text(SUITE.format(slowdown=0.1, processes=3).replace('label = "same"', 'label = "renamed"'))
    pairs, only_b, only_n = match_cases(base, make_plan(load_suite(other)))
    assert [series_key(b)[2] for b, _ in pairs] == ["changed"]
    assert [c.backend for c in only_b] == ["same"] and [c.backend for c in only_n] == ["renamed"]
    with pytest.raises(PairingError, match="same number a side"):
        run_paired(Side("base", load_suite(suite_file(tmp_path, "b3"))),
                   Side("new", load_suite(suite_file(tmp_path, "n4", processes=4))), tmp_path / "r")
    with pytest.raises(PairingError, match="at least 3"):
        run_paired(Side("base", load_suite(suite_file(tmp_path, "b2", processes=2))),
                   Side("new", load_suite(suite_file(tmp_path, "n2", processes=2))), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_ab_measures_each_side_with_its_own_interpreter(tmp_path, sleepy):
    """--new-python: NEW's processes run under another interpreter (here a wrapper that leaves a mark)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    wrapper = tmp_path / "python-new"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marks}/$$"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    suite = tmp_path / "one.toml"
    suite.write_text(SUITE.format(slowdown=0.0, processes=3).replace(
        '  {name = "sleepy", label = "same", base_ms = 2.0, slowdown = 0.0, process_sd = 0.0},\n', ""))
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["ab", str(suite), "--new-python", str(wrapper), "-o", str(out),
                                   "--json", str(tmp_path / "cmp.json")])
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    new_id = cmp["new"]["run_id"]
    n_new = len(records(out, new_id))
    assert n_new in (3, 9, 15) and len(os.listdir(marks)) == n_new  # every NEW process, and only those
    assert cmp["paired"]["side"] in ("base", "new") and cmp["counts"]["regressed"] == 0
    assert "side by side in one window" in res.output


def test_ab_without_a_second_side_is_refused(tmp_path):
    res = CliRunner().invoke(app, ["ab", str(suite_file(tmp_path, "base"))])
    assert res.exit_code == 2 and "two sides" in res.output


def test_ab_sets_a_variable_in_one_sides_processes_and_records_it(tmp_path, sleepy):
    """--new-env: only NEW's processes see it (the sleepy backend reads SLEEPY_EXTRA_SLOWDOWN); the header keeps it."""
    suite = tmp_path / "one.toml"
    suite.write_text(SUITE.format(slowdown=0.0, processes=3).replace(
        '  {name = "sleepy", label = "same", base_ms = 2.0, slowdown = 0.0, process_sd = 0.0},\n', ""))
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["ab", str(suite), "--new-env", "SLEEPY_EXTRA_SLOWDOWN=0.5", "-o", str(out),
                                   "--json", str(tmp_path / "cmp.json"), "--fail-on-regression"])
    assert res.exit_code == 1, res.output  # the planted slowdown regressed NEW
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    (s,) = cmp["series"]
    assert s["verdict"] == "regressed" and s["ratio"] > 1.3
    headers = {f.header()["paired"]["side"]: f.header() for f in run_files(out)}
    assert headers["new"]["executor"]["env"] == {"SLEEPY_EXTRA_SLOWDOWN": "0.5"}
    assert headers["base"]["executor"]["env"] == {}
    bad = CliRunner().invoke(app, ["ab", str(suite), "--new-env", "NOEQUALS"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


def test_the_undecided_get_each_next_look_and_the_decided_stop(tmp_path, sleepy):
    """A scripted judge: the case stays undecided after the first look and is decided after the second, so it is
    measured 3 then 9 pairs a side; a judge that never decides takes it to the last look's 15."""
    suite = tmp_path / "one.toml"
    suite.write_text(SUITE.format(slowdown=0.0, processes=3).replace(
        '  {name = "sleepy", label = "same", base_ms = 2.0, slowdown = 0.0, process_sd = 0.0},\n', ""))
    key = series_key(make_plan(load_suite(suite))[0])
    for undecided_looks, pairs in ((1, 9), (2, 15)):
        calls = []

        def judge(base_id, new_id):
            calls.append((base_id, new_id))
            return {key} if len(calls) <= undecided_looks else set()

        out = tmp_path / f"r{undecided_looks}"
        done = run_paired(Side("base", load_suite(suite)), Side("new", load_suite(suite), env={"X": "1"}), out, judge)
        assert len(calls) == min(undecided_looks + 1, LOOKS - 1)  # no judging after the last look
        assert len(done.more_looks) == undecided_looks and done.second_look == done.matched
        for s in (done.base, done.new):
            assert len(records(out, s.run_id)) == pairs
