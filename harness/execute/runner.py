"""The runner: planned cases measured by an executor (:mod:`.executor`), each outcome recorded as it ends.

One case measures at a time on a machine, so none steals another's cores or memory bandwidth: the
local executor runs them one after another in plan order; the Ray executor runs one per node at a
time and its outcomes arrive as they end. A case that crashes, hangs, raises or loses its node costs
that case only: it is recorded as failed with what happened, the run goes on, and every finished case
is already on disk (the run file, then the store).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import costbench
from costbench.core.metrics import UNSTABLE, catalogue
from costbench.core.artifacts import default_cache_dir
from costbench.harness.machine.env import fingerprint
# CaseOutcome and run_case_in_child are re-exported: callers know them from here.
from costbench.harness.execute.executor import (CaseOutcome, Executor, ExecutorError, LocalExecutor,  # noqa: F401
                                        run_case_in_child)
from costbench.harness.execute.plan import PLANNED, Case, interleave
from costbench.harness.execute.failures import why_stop
from costbench.harness.results.rounds import Precision, needs_more, rounds_of
from costbench.harness.results.replicates import merge_metrics, merge_records, process_of
from costbench.harness.execute.registry import executor_for
from costbench.harness.results.store import RunFile, Store
from costbench.harness.suite.schema import Suite

def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the source tree costbench runs from (where the suite lives), if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=cwd, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=cwd).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunSummary:
    run_id: str
    run_file: Path
    outcomes: list[CaseOutcome]  # one per case this call measured (a resumed run: not the ones recorded before), its processes merged


UNSTABLE_CV_FACTOR = 3.0  # spread this many times the case's usual spread...
UNSTABLE_CV_FLOOR = 0.05  # ...and above 5% CV: below that, run-to-run jitter is not worth flagging
UNSTABLE_MIN_HISTORY = 3  # runs of the same case on the same env_id needed to know what "usual" is


def flag_instability(store: Store, outcome: CaseOutcome, env_id: str, run_id: str) -> dict[str, Any] | None:
    """An ``unstable`` metric row when this case's processes disagree far more than in its history on this environment.

    ``outcome`` holds the case's metrics over all its processes (:func:`costbench.harness.results.replicates.merge_metrics`).
    With several processes the spread judged is between processes (``*_process_spread``, the standard
    deviation of log per-process medians); a single-process case falls back to its samples' CV.
    """
    cat = catalogue()
    reports = cat.scenarios.get(outcome.case.scenario_kind)
    if reports is None:  # a scenario whose package registered no primary series: nothing to judge by
        return None
    primary = cat.series[reports.primary]
    names = (primary.process_spread, primary.stat("cv"))
    spread_row = next((m for n in names for m in outcome.metrics if m["metric"] == n), None)
    if spread_row is None or spread_row["value"] != spread_row["value"]:  # no timing, or NaN
        return None
    what = "process spread" if spread_row["metric"].endswith("_process_spread") else "cv"
    c = outcome.case
    history = store.history(spread_row["metric"], env_id, exclude_run=run_id, model=c.model, variant=c.variant,
                            backend=c.backend, device=c.device, scenario=c.scenario, batch_size=c.batch_size)
    details = {"metric": spread_row["metric"], "cv" if what == "cv" else "spread": spread_row["value"],
               "history_runs": len(history),
               "rule": f"{what} > max({UNSTABLE_CV_FACTOR:g} x median of this case's earlier values on this env_id, "
                       f"{UNSTABLE_CV_FLOOR:g}), with at least {UNSTABLE_MIN_HISTORY} earlier runs"}
    if len(history) < UNSTABLE_MIN_HISTORY:
        return {"metric": UNSTABLE, "value": 0.0, "unit": "bool", "details": {**details, "judged": False}}
    usual = float(sorted(history)[(len(history) - 1) // 2])
    unstable = spread_row["value"] > max(UNSTABLE_CV_FACTOR * usual, UNSTABLE_CV_FLOOR)
    return {"metric": UNSTABLE, "value": float(unstable), "unit": "bool",
            "details": {**details, "judged": True, "history_median": usual,
                        **({"history_median_cv": usual} if what == "cv" else {})}}


def _merged_outcome(outcomes: list[CaseOutcome]) -> CaseOutcome:
    """One outcome per case from its processes' outcomes (the metrics merged as the store merges them)."""
    if len(outcomes) == 1:
        return outcomes[0]
    rec = merge_records([o.record("") for o in outcomes])
    first = outcomes[0]
    return CaseOutcome(replace(first.case, process=0), rec["status"], rec["reason"], rec["metrics"], rec["info"],
                       rec["elapsed_s"], rec.get("stderr_tail", ""), first.env_id)


def _execute(run_file: RunFile, header: dict[str, Any], jobs: list[Case], results_dir: Path, cache_dir: Path,
             memory_limit_mb: float | None, on_start, on_done, executor: Executor | None = None,
             precision: Precision | None = None, remeasure: bool = True, sync: bool = True) -> list[CaseOutcome]:
    """Measure ``jobs`` (one Case per process, :func:`~costbench.harness.execute.plan.interleave`); one merged outcome per case.

    Each process's outcome is appended to the run file as it ends. When a case's first ``processes`` are
    recorded, the case is judged for instability over them (those recorded before a resume included) and
    the flag goes into that process's record. A case whose failure repeats (:func:`why_stop`) starts no
    more processes: each is recorded as not started, with why. Rounds of one more process per case
    follow for the cases that lost processes to contention, and with ``precision`` for those short of it
    (:mod:`~costbench.harness.results.rounds`). ``sync``: bring the DuckDB store up to date at the end (a caller
    that measures one process per call leaves it to the readers, which sync before they read).
    """
    executor = executor or LocalExecutor()
    store = Store(results_dir)
    index = {c.job_id: i for i, c in enumerate(jobs)}  # callbacks get the process's place in the schedule
    earlier: dict[str, list[dict[str, Any]]] = {}
    for rec in run_file.cases():
        earlier.setdefault(rec["case"]["case_id"], []).append(rec)
    # One case of each id to add processes to: from the schedule, else from what a resumed run recorded.
    templates = {cid: Case.from_dict(recs[0]["case"]) for cid, recs in earlier.items()}
    templates.update({c.case_id: c for c in jobs})
    by_case: dict[str, list[CaseOutcome]] = {}

    def records(case_id: str) -> list[dict[str, Any]]:
        return earlier.get(case_id, []) + [o.record("") for o in by_case.get(case_id, [])]

    def stop(case: Case) -> str | None:  # asked before each process starts: does its case's failure repeat?
        return why_stop(records(case.case_id))

    def handle(outcome: CaseOutcome) -> None:
        c = outcome.case
        mine = by_case.setdefault(c.case_id, [])
        mine.append(outcome)
        before = earlier.get(c.case_id, [])
        if outcome.status != "skipped" and len(before) + len(mine) == c.processes:
            ok = [r for r in before if r["status"] == "ok"] + [o.record("") for o in mine if o.status == "ok"]
            if ok:
                merged = replace(outcome, metrics=merge_metrics([r["metrics"] for r in sorted(ok, key=process_of)]))
                flag = flag_instability(store, merged, outcome.env_id or header["env_id"], header["run_id"])
                if flag:
                    outcome.metrics.append(flag)
        if precision is not None and outcome.status == "ok":
            outcome.metrics.append(precision.row())
        run_file.append(outcome.record(header["run_id"]))
        if on_done:
            on_done(index[c.job_id], outcome)

    with tempfile.TemporaryDirectory(prefix=f"costbench-{header['run_id']}-") as tmp:
        started = (lambda case: on_start(index[case.job_id], case)) if on_start else None
        batch = jobs
        while True:
            for outcome in executor.run_cases(batch, cache_dir, Path(tmp), memory_limit_mb, on_start=started,
                                              stop=stop):
                handle(outcome)
            # Another round: one more process for each case that lost one to contention or is short of the
            # precision asked, in plan order.
            batch = [replace(t, process=len(records(cid))) for cid, t in templates.items()
                     if t.status == PLANNED and needs_more(records(cid), precision, t.processes, remeasure)]
            if not batch:
                break
            index.update({c.job_id: len(index) + i for i, c in enumerate(batch)})
    if sync:
        store.sync()
    return [_merged_outcome(sorted(group, key=lambda o: o.case.process)) for group in by_case.values()]


def rounds_for(suite: Suite) -> tuple[Precision | None, bool]:
    """The precision and re-measuring ``suite`` asks (the same rule a store reads from the run header)."""
    return rounds_of(suite.model_dump(mode="json"))


def run_header(run_id: str, suite: Suite, cases: list[Case], executor: Executor, env: dict[str, Any],
               only: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """What a run file's first line records: the run, the code, the machine, the suite as measured, where."""
    source_dir = suite.source.parent if suite.source else Path.cwd()
    return {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(source_dir),
        "harness_version": costbench.__version__,
        "env_id": env["env_id"],
        "env": env,
        "suite": {"name": suite.name, "source": str(suite.source) if suite.source else None,
                  "spec": suite.model_dump(mode="json")},
        "only": only or [],
        "planned_cases": len(cases),
        "argv": sys.argv,
        # Where the cases ran; a fleet run's cases carry their own machine's env_id (the header's is the driver's).
        "executor": executor.describe(),
    }


def run_plan(
    suite: Suite,
    cases: list[Case],
    results_dir: Path,
    cache_dir: Path | None = None,
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, CaseOutcome], None] | None = None,
    only: list[dict[str, str]] | None = None,
    executor: Executor | None = None,
    on_plan: Callable[[Suite, list[Case], int], None] | None = None,
) -> RunSummary:
    """Run every case, appending each outcome to a new run file as soon as it is known.

    ``executor`` measures the cases (default: :class:`LocalExecutor`, one at a time in a child process
    here); ``cases`` must come from its :meth:`~Executor.plan`. ``on_plan(suite, jobs, 0)`` is called with
    the processes to measure before the first starts. Overrides belong in the suite (:func:`costbench.api.load`),
    never on the cases, so the header's suite is the one measured.
    """
    cache_dir = cache_dir or default_cache_dir()
    executor = executor or LocalExecutor()
    results_dir.mkdir(parents=True, exist_ok=True)
    header = run_header(new_run_id(), suite, cases, executor, fingerprint(), only)
    run_id = header["run_id"]
    run_file = RunFile.create(results_dir, header)
    jobs = interleave(cases)
    if on_plan:
        on_plan(suite, jobs, 0)
    outcomes = _execute(run_file, header, jobs, results_dir, cache_dir, suite.memory_limit_mb, on_start, on_done,
                        executor, *rounds_for(suite))
    return RunSummary(run_id, run_file.path, outcomes)


class ResumeError(RuntimeError):
    """A run cannot be resumed (unknown id, another machine, a changed suite)."""


def find_run(results_dir: Path, run_id: str) -> RunFile:
    """The run file whose id starts with ``run_id``; ResumeError if none or several match."""
    from costbench.harness.results.store import RUNS_DIR

    matches = sorted((results_dir / RUNS_DIR).glob(f"{run_id}*.jsonl"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted((results_dir / RUNS_DIR).glob("*.jsonl"))[-5:]) or "none"
        raise ResumeError(f"run {run_id!r}: {'no such run' if not matches else 'ambiguous'} in {results_dir} "
                          f"(latest: {known})")
    return RunFile(matches[0])


def recorded_executor(header: dict[str, Any], address: str | None = None) -> Executor:
    """The executor a run was measured with (from its header), at ``address`` if given."""
    spec = dict(header.get("executor") or {"kind": "local"})
    if address is not None:
        spec["address"] = address
    return executor_for(spec)


def plan_remaining(run_file: RunFile, executor: Executor | None = None) -> tuple[Suite, dict[str, Any], list[Case], int]:
    """Re-plan a run from its stored suite; drop the processes it already recorded. (suite, header, todo, done):
    ``todo`` is one Case per process still to measure, interleaved; ``done`` counts the processes recorded.

    ``executor`` plans it (default: local); a fleet run re-plans on the cluster as it is now, and the
    cases of a machine class it recorded keep their ids.
    """
    from costbench.harness.execute.load import parse_suite

    header = run_file.header()
    stored = header["suite"]
    source = Path(stored["source"]) if stored.get("source") else run_file.path
    suite = parse_suite(stored["spec"], source)
    kind = (header.get("executor") or {}).get("kind", "local")
    executor = executor or LocalExecutor()
    if executor.name != kind:
        raise ResumeError(f"run {header['run_id']} was measured with the {kind} executor; resume it with "
                          f"--executor {kind}, not {executor.name}")
    cases = executor.plan(suite, header.get("only") or None)
    if header.get("timeout_override") is not None:  # runs recorded before --timeout became a suite override
        for c in cases:
            c.timeout_s = header["timeout_override"]
    # A case is done when all its processes are recorded (ok or not); a resume measures only the missing processes.
    recorded = run_file.cases()
    done = {(r["case"]["case_id"], process_of(r)) for r in recorded}
    return suite, header, interleave(cases, done), len(done)


def resume_run(
    results_dir: Path,
    run_id: str,
    cache_dir: Path | None = None,
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, CaseOutcome], None] | None = None,
    force: bool = False,
    executor: Executor | None = None,
    address: str | None = None,
    on_plan: Callable[[Suite, list[Case], int], None] | None = None,
) -> RunSummary:
    """Finish an interrupted run in its own run file, without redoing the cases it recorded.

    ``executor``: default, the one the run was measured with (at ``address`` if given; see
    :func:`recorded_executor`), closed here. ``on_plan(suite, todo, done)`` before the first process starts.
    """
    run_file = find_run(results_dir, run_id)
    own = executor is None
    executor = executor or recorded_executor(run_file.header(), address)
    try:
        suite, header, todo, done = plan_remaining(run_file, executor)
        env_id = fingerprint()["env_id"]
        if executor.measures_here and env_id != header["env_id"] and not force:
            raise ResumeError(f"run {header['run_id']} was measured on env_id {header['env_id']}, this machine is "
                              f"{env_id}: its cases would not be comparable (use --force to resume anyway)")
        if on_plan:
            on_plan(suite, todo, done)
        run_file.repair_tail()
        outcomes = _execute(run_file, header, todo, results_dir, cache_dir or default_cache_dir(),
                            suite.memory_limit_mb, on_start, on_done, executor, *rounds_for(suite))
    finally:
        if own:
            executor.close()
    return RunSummary(header["run_id"], run_file.path, outcomes)
