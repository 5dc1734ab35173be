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
from costbench.harness.artifacts import default_cache_dir
from costbench.harness.env import fingerprint
from costbench.harness.plan import PLANNED, Case
from costbench.harness.store import RunFile, Store
from costbench.harness.suite import Suite

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


def run_case_in_child(case: Case, cache_dir: Path, workdir: Path) -> CaseOutcome:
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
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=case.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return CaseOutcome(case, "failed", f"timeout: no result after {case.timeout_s:g} s; process group killed",
                               elapsed_s=time.perf_counter() - t0, stderr_tail=_tail(errlog))
    elapsed = time.perf_counter() - t0
    tail = _tail(errlog)
    if code != 0 or not result.exists():
        return CaseOutcome(case, "failed", _describe_exit(code) + (f"; last stderr: {tail.splitlines()[-1]}" if tail else ""),
                           elapsed_s=elapsed, stderr_tail=tail)
    payload = json.loads(result.read_text())
    if payload["status"] != "ok":
        return CaseOutcome(case, "failed", payload.get("reason", "unknown error"), elapsed_s=elapsed,
                           stderr_tail=payload.get("traceback", tail))
    return CaseOutcome(case, "ok", "", payload["metrics"], payload["info"], elapsed)


@dataclass
class RunSummary:
    run_id: str
    run_file: Path
    outcomes: list[CaseOutcome]


def run_plan(
    suite: Suite,
    cases: list[Case],
    results_dir: Path,
    cache_dir: Path | None = None,
    on_start: Callable[[int, Case], None] | None = None,
    on_done: Callable[[int, CaseOutcome], None] | None = None,
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
        "planned_cases": len(cases),
        "argv": sys.argv,
    }
    run_file = RunFile.create(results_dir, header)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix=f"costbench-{run_id}-") as tmp:
        for i, case in enumerate(cases):
            if on_start:
                on_start(i, case)
            if case.status != PLANNED:
                outcome = CaseOutcome(case, case.status, case.reason)
            else:
                outcome = run_case_in_child(case, cache_dir, Path(tmp))
            run_file.append(outcome.record(run_id))
            outcomes.append(outcome)
            if on_done:
                on_done(i, outcome)
    Store(results_dir).sync()
    return RunSummary(run_id, run_file.path, outcomes)
