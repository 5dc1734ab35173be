"""A case whose failure repeats starts no more processes: recorded once, and the case says so (issue 28)."""

from costbench.harness.execute.failures import cause, why_stop
from costbench.harness.execute.load import load_suite
from costbench.harness.execute.plan import make_plan
from costbench.harness.execute.runner import run_plan
from costbench.harness.results.store import RunFile


def rec(process, status, reason="", stage=None):
    return {"process": process, "status": status, "reason": reason, "info": {"stage": stage} if stage else {}}


def test_a_failure_while_building_or_preparing_stops_the_case():
    assert "preparing the session" in why_stop([rec(0, "failed", "RuntimeError: no", "prepare")])
    assert "building the artifact" in why_stop([rec(0, "failed", "timed out after 60 s", "build")])


def test_the_same_failure_twice_while_measuring_stops_it_and_different_ones_do_not():
    first = rec(0, "failed", "RuntimeError: bad value at 0.123 s (4096 MiB)", "measure")
    assert why_stop([first]) is None  # once while measuring: the next process may well succeed
    assert why_stop([first, rec(1, "failed", "RuntimeError: bad value at 7.5 s (4100 MiB)", "measure")]) == \
        "processes 0 and 1 failed the same way"
    assert why_stop([first, rec(1, "failed", "killed by SIGSEGV", "measure")]) is None
    assert cause("timed out after 60 s at 12.5") == "timed out after # s at #"


def test_a_case_with_a_process_that_succeeded_is_never_stopped():
    assert why_stop([rec(0, "ok"), rec(1, "failed", "RuntimeError: x", "prepare"),
                     rec(2, "failed", "RuntimeError: x", "prepare")]) is None


SUITE = """
name = "repeats"
models = ["digits-cnn"]
variants = ["fp32"]
backends = [
  {name = "faulty", label = "raises", fail = "raise"},
  {name = "faulty", label = "segfaults", fail = "segfault"},
  {name = "faulty", label = "run-fails", fail = "run"},
  {name = "faulty", label = "fine"},
]
timeout_s = 60
remeasure_contended = false  # counts processes exactly: a noisy neighbour must not add one
processes = 4
accuracy = false
[[scenarios]]
kind = "single_stream"
warmup_count = 1
min_count = 5
min_duration_s = 0.0
"""


def test_the_runner_starts_no_process_a_repeating_failure_would_waste(tmp_path, plugin_backends):
    (tmp_path / "repeats.toml").write_text(SUITE)
    suite = load_suite(tmp_path / "repeats.toml")
    summary = run_plan(suite, make_plan(suite), tmp_path / "results")
    records = RunFile(summary.run_file).cases()
    by_backend: dict[str, list] = {}
    for r in records:
        by_backend.setdefault(r["case"]["backend"], []).append(r)
    # Every process of every case is recorded (a resume has nothing left to do), but only these ran:
    ran = {b: [r["process"] for r in rs if not r["info"].get("not_started")] for b, rs in by_backend.items()}
    assert ran == {"raises": [0], "segfaults": [0], "run-fails": [0, 1], "fine": [0, 1, 2, 3]}
    assert all(len(rs) == 4 for rs in by_backend.values())
    # A crash leaves no result, but the stage file says where it died.
    assert by_backend["segfaults"][0]["info"]["stage"] == "prepare"
    assert by_backend["run-fails"][1]["info"]["stage"] == "measure"
    outcomes = {o.case.backend: o for o in summary.outcomes}
    assert outcomes["fine"].status == "ok"
    raises = outcomes["raises"]
    assert raises.status == "failed" and raises.reason.startswith("RuntimeError: faulty backend asked to raise")
    assert "(3 of 4 processes not started: process 0 failed while preparing the session" in raises.reason
    assert "(2 of 4 processes not started: processes 0 and 1 failed the same way)" in outcomes["run-fails"].reason
