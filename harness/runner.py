"""The runner: each planned case in its own child process with a timeout, one at a time.

One case measures at a time, so none steals another's cores or memory bandwidth. A case that
crashes, hangs or raises costs that case only: it is recorded as failed with what happened,
the run goes on, and every finished case is already on disk.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import costbench
from costbench.core.artifacts import default_cache_dir
from costbench.harness.env import fingerprint
from costbench.harness.plan import PLANNED, Case
from costbench.harness.store import RunFile, Store
from costbench.harness.suite_schema import Suite

STDERR_TAIL_LINES = 25


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
class CaseOutcome:
    """What happened to one case, as written to the run file."""

    case: Case
    status: str  # ok | failed | skipped
    reason: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stderr_tail: str = ""

    def record(self, run_id: str) -> dict[str, Any]:
        return {"type": "case", "run_id": run_id, "case": self.case.to_dict(), "status": self.status,
                "reason": self.reason, "elapsed_s": self.elapsed_s, "metrics": self.metrics, "info": self.info,
                "stderr_tail": self.stderr_tail,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"child process killed by {name}{hint}"
    return f"child process exited with code {code}"


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it if the runner dies (kill -9 included).

    Without this a case started in its own session would outlive a killed runner and keep
    measuring, stealing cores from whatever runs next (a resumed run, say).
    """
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the timeout still bounds an orphan


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _wait(proc: subprocess.Popen, timeout_s: float, memory_limit_mb: float | None) -> tuple[int | None, str]:
    """Wait for the child; return (exit code, '') or (None, why it was killed)."""
    timed_out = f"timeout: no result after {timeout_s:g} s; process group killed"
    if memory_limit_mb is None:
        try:
            return proc.wait(timeout=timeout_s), ""
        except subprocess.TimeoutExpired:
            return None, timed_out
    # With a limit, poll the process tree's RSS; 50 ms costs well under 1% of one core.
    deadline = time.monotonic() + timeout_s
    limit = memory_limit_mb * 2**20
    peak = 0
    while True:
        try:
            return proc.wait(timeout=0.05), ""
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            return None, timed_out
        rss = _tree_rss(proc.pid)
        peak = max(peak, rss)
        if rss > limit:
            return None, (f"out of memory: the case's processes reached {rss / 2**20:.0f} MiB RSS, over "
                          f"memory_limit_mb={memory_limit_mb:g}; process group killed")


def run_case_in_child(case: Case, cache_dir: Path, workdir: Path, memory_limit_mb: float | None = None) -> CaseOutcome:
    """Run one case in a fresh Python process; turn every way it can end into an outcome."""
    job = workdir / f"{case.case_id}.job.json"
    result = workdir / f"{case.case_id}.result.json"
    errlog = workdir / f"{case.case_id}.stderr.log"
    job.write_text(json.dumps({"case": case.to_dict(), "cache_dir": str(cache_dir)}))
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(errlog, "wb") as err:
        # A new session, so a timeout kills the whole process group (runtimes may fork helpers).
        proc = subprocess.Popen([sys.executable, "-m", "costbench.harness.worker", str(job), str(result)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                                preexec_fn=_die_with_parent)
        code, killed = _wait(proc, case.timeout_s, memory_limit_mb)
        if code is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return CaseOutcome(case, "failed", killed, elapsed_s=time.perf_counter() - t0, stderr_tail=_tail(errlog))
    elapsed = time.perf_counter() - t0
    tail = _tail(errlog)
    if code != 0 or not result.exists():
        return CaseOutcome(case, "failed", _describe_exit(code) + (f"; last stderr: {tail.splitlines()[-1]}" if tail else ""),
                           elapsed_s=elapsed, stderr_tail=tail)
    payload = json.loads(result.read_text())
    if payload["status"] == "skipped":
        return CaseOutcome(case, "skipped", payload["reason"], elapsed_s=elapsed)
    if payload["status"] != "ok":
        return CaseOutcome(case, "failed", payload.get("reason", "unknown error"), elapsed_s=elapsed,
                           stderr_tail=payload.get("traceback", tail))
    return CaseOutcome(case, "ok", "", payload["metrics"], payload["info"], elapsed)


@dataclass
class RunSummary:
    run_id: str
    run_file: Path
    outcomes: list[CaseOutcome]


UNSTABLE_CV_FACTOR = 3.0  # spread this many times the case's usual spread...
UNSTABLE_CV_FLOOR = 0.05  # ...and above 5% CV: below that, run-to-run jitter is not worth flagging
UNSTABLE_MIN_HISTORY = 3  # runs of the same case on the same env_id needed to know what "usual" is


def flag_instability(store: Store, outcome: CaseOutcome, env_id: str, run_id: str) -> dict[str, Any] | None:
    """An ``unstable`` metric row when this case's CV is far above its history on this environment."""
    cv_row = next((m for m in outcome.metrics if m["metric"] in ("latency_cv", "batch_latency_cv")), None)
    if cv_row is None or cv_row["value"] != cv_row["value"]:  # no timing, or NaN
        return None
    c = outcome.case
    history = store.history(cv_row["metric"], env_id, exclude_run=run_id, model=c.model, variant=c.variant,
                            backend=c.backend, device=c.device, scenario=c.scenario, batch_size=c.batch_size)
    details = {"cv": cv_row["value"], "history_runs": len(history),
               "rule": f"cv > max({UNSTABLE_CV_FACTOR:g} x median of this case's earlier CVs on this env_id, "
                       f"{UNSTABLE_CV_FLOOR:g}), with at least {UNSTABLE_MIN_HISTORY} earlier runs"}
    if len(history) < UNSTABLE_MIN_HISTORY:
        return {"metric": "unstable", "value": 0.0, "unit": "bool", "details": {**details, "judged": False}}
    usual = float(sorted(history)[(len(history) - 1) // 2])
    unstable = cv_row["value"] > max(UNSTABLE_CV_FACTOR * usual, UNSTABLE_CV_FLOOR)
    return {"metric": "unstable", "value": float(unstable), "unit": "bool",
            "details": {**details, "judged": True, "history_median_cv": usual}}


def _execute(run_file: RunFile, header: dict[str, Any], cases: list[Case], results_dir: Path, cache_dir: Path,
             memory_limit_mb: float | None, on_start, on_done) -> list[CaseOutcome]:
    store = Store(results_dir)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix=f"costbench-{header['run_id']}-") as tmp:
        for i, case in enumerate(cases):
            if on_start:
                on_start(i, case)
            if case.status != PLANNED:
                outcome = CaseOutcome(case, case.status, case.reason)
            else:
                outcome = run_case_in_child(case, cache_dir, Path(tmp), memory_limit_mb)
                if outcome.status == "ok":
                    flag = flag_instability(store, outcome, header["env_id"], header["run_id"])
                    if flag:
                        outcome.metrics.append(flag)
            run_file.append(outcome.record(header["run_id"]))
            outcomes.append(outcome)
            if on_done:
                on_done(i, outcome)
    store.sync()
    return outcomes


def run_plan(
    suite: Suite,
    cases: list[Case],
    results_dir: Path,
    cache_dir: Path | None = None,
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, CaseOutcome], None] | None = None,
    only: list[dict[str, str]] | None = None,
    timeout_override: float | None = None,
) -> RunSummary:
    """Run every case in order, appending each outcome to a new run file as soon as it is known."""
    cache_dir = cache_dir or default_cache_dir()
    results_dir.mkdir(parents=True, exist_ok=True)
    env = fingerprint()
    run_id = new_run_id()
    source_dir = suite.source.parent if suite.source else Path.cwd()
    header = {
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(source_dir),
        "harness_version": costbench.__version__,
        "env_id": env["env_id"],
        "env": env,
        "suite": {"name": suite.name, "source": str(suite.source) if suite.source else None,
                  "spec": suite.model_dump(mode="json")},
        "only": only or [],
        "timeout_override": timeout_override,
        "planned_cases": len(cases),
        "argv": sys.argv,
    }
    run_file = RunFile.create(results_dir, header)
    outcomes = _execute(run_file, header, cases, results_dir, cache_dir, suite.memory_limit_mb, on_start, on_done)
    return RunSummary(run_id, run_file.path, outcomes)


class ResumeError(RuntimeError):
    """A run cannot be resumed (unknown id, another machine, a changed suite)."""


def find_run(results_dir: Path, run_id: str) -> RunFile:
    """The run file whose id starts with ``run_id``; ResumeError if none or several match."""
    from costbench.harness.store import RUNS_DIR

    matches = sorted((results_dir / RUNS_DIR).glob(f"{run_id}*.jsonl"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted((results_dir / RUNS_DIR).glob("*.jsonl"))[-5:]) or "none"
        raise ResumeError(f"run {run_id!r}: {'no such run' if not matches else 'ambiguous'} in {results_dir} "
                          f"(latest: {known})")
    return RunFile(matches[0])


def plan_remaining(run_file: RunFile) -> tuple[Suite, dict[str, Any], list[Case], int]:
    """Re-plan a run from its stored suite; drop the cases it already recorded. (suite, header, todo, done)."""
    from costbench.harness.plan import make_plan
    from costbench.harness.suite import parse_suite

    header = run_file.header()
    stored = header["suite"]
    source = Path(stored["source"]) if stored.get("source") else run_file.path
    suite = parse_suite(stored["spec"], source)
    cases = make_plan(suite, header.get("only") or None)
    if header.get("timeout_override") is not None:
        for c in cases:
            c.timeout_s = header["timeout_override"]
    done = {r["case"]["case_id"] for r in run_file.cases()}
    return suite, header, [c for c in cases if c.case_id not in done], len(done)


def resume_run(
    results_dir: Path,
    run_id: str,
    cache_dir: Path | None = None,
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, CaseOutcome], None] | None = None,
    force: bool = False,
) -> RunSummary:
    """Finish an interrupted run in its own run file, without redoing the cases it recorded."""
    run_file = find_run(results_dir, run_id)
    suite, header, todo, _ = plan_remaining(run_file)
    env_id = fingerprint()["env_id"]
    if env_id != header["env_id"] and not force:
        raise ResumeError(f"run {header['run_id']} was measured on env_id {header['env_id']}, this machine is "
                          f"{env_id}: its cases would not be comparable (use --force to resume anyway)")
    run_file.repair_tail()
    outcomes = _execute(run_file, header, todo, results_dir, cache_dir or default_cache_dir(), suite.memory_limit_mb,
                        on_start, on_done)
    return RunSummary(header["run_id"], run_file.path, outcomes)
