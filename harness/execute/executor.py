"""Executors: how the runner gets cases measured. ``local`` (the default) runs each in a child process here.

The contract (:class:`Executor`): ``plan`` fits a suite's cases to where this executor measures;
``run_cases`` takes the planned cases and yields one :class:`CaseOutcome` per case as each ends, with
every way a case can end (ok, skipped, failed: crashed, hung, out of memory, raised, node lost) turned
into an outcome, never an exception. A case and its outcome are plain, serialisable data
(``Case.to_dict``, ``CaseOutcome.record``), so an executor may measure cases elsewhere and several at
once: the Ray executor (:mod:`.executor_ray`) sends each to a node that can run it, one measuring case
per node, and runs the same :func:`run_case_in_child` there. The runner keeps the rest: the run file,
the store and the instability flag, written in the order outcomes arrive.

The local executor measures one case at a time, each in a fresh process with its own session (so a
timeout kills whatever the runtime forked), a memory limit over the process tree, and a parent-death
signal so an orphan never keeps measuring.
"""

from __future__ import annotations

import abc
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator

from costbench.harness.execute.plan import PLANNED, Case
from costbench.harness.machine.affinity import allowed_cpus, harness_on, plan_cpus
from costbench.harness.suite.case import SKIPPED
from costbench.harness.measure.stages import read_stage, stage_file
from costbench.harness.suite.schema import ExecutorSettings

if TYPE_CHECKING:
    from costbench.harness.suite.schema import Suite

STDERR_TAIL_LINES = 25


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
    # The env_id of the machine that measured the case when that is not the run's own (fleet runs; the
    # node's identity is then in info["node"]). None: the machine in the run header.
    env_id: str | None = None

    def record(self, run_id: str) -> dict[str, Any]:
        rec = {"type": "case", "run_id": run_id, "case": self.case.to_dict(), "process": self.case.process,
               "status": self.status,
               "reason": self.reason, "elapsed_s": self.elapsed_s, "metrics": self.metrics, "info": self.info,
               "stderr_tail": self.stderr_tail,
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.env_id is not None:
            rec["env_id"] = self.env_id
        return rec


class ExecutorError(RuntimeError):
    """An executor cannot start (cluster unreachable, no node able to run the cases); raised before any case runs."""


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


def _child_setup(cpus: tuple[int, ...] | None) -> Callable[[], None]:
    """What the child does before exec: die with its parent, and start on ``cpus`` when pinned (so every thread
    it creates inherits them, and OpenMP sizes its pool from them)."""

    def setup() -> None:
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


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


def _stage_info(result: Path) -> dict[str, Any]:
    """``{"stage": ...}``: the step a failed process was in, where it marked one."""
    stage = read_stage(result)
    return {"stage": stage} if stage else {}


def run_case_in_child(case: Case, cache_dir: Path, workdir: Path, memory_limit_mb: float | None = None,
                      env: dict[str, str] | None = None, python: str | None = None) -> CaseOutcome:
    """Run one case in a fresh Python process; turn every way it can end into an outcome.

    ``env``: the child's environment (default: this process's). ``python``: the interpreter that measures
    (default: this one); another environment's, with its own costbench, measures with that code.
    """
    job = workdir / f"{case.job_id}.job.json"
    result = workdir / f"{case.job_id}.result.json"
    errlog = workdir / f"{case.job_id}.stderr.log"
    job.write_text(json.dumps({"case": case.to_dict(), "cache_dir": str(cache_dir)}))
    result.unlink(missing_ok=True)
    stage_file(result).unlink(missing_ok=True)
    cpus = plan_cpus(case.backend_options.get("threads"), allowed_cpus()) if case.pin_cpus else None
    pinned = {"cpu_affinity": cpus.record()} if cpus else {}
    t0 = time.perf_counter()
    with open(errlog, "wb") as err, (harness_on(cpus.harness) if cpus and cpus.pins else nullcontext()):
        # A new session, so a timeout kills the whole process group (runtimes may fork helpers).
        proc = subprocess.Popen([python or sys.executable, "-m", "costbench.harness.measure.worker", str(job), str(result)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
                                preexec_fn=_child_setup(cpus.worker if cpus else None), env=env)
        code, killed = _wait(proc, case.timeout_s, memory_limit_mb)
        if code is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return CaseOutcome(case, "failed", killed, info={**_stage_info(result), **pinned},
                               elapsed_s=time.perf_counter() - t0, stderr_tail=_tail(errlog))
    elapsed = time.perf_counter() - t0
    tail = _tail(errlog)
    if code != 0 or not result.exists():
        return CaseOutcome(case, "failed", _describe_exit(code) + (f"; last stderr: {tail.splitlines()[-1]}" if tail else ""),
                           info=_stage_info(result), elapsed_s=elapsed, stderr_tail=tail)
    payload = json.loads(result.read_text())
    if payload["status"] == "skipped":
        return CaseOutcome(case, "skipped", payload["reason"], elapsed_s=elapsed)
    if payload["status"] != "ok":
        return CaseOutcome(case, "failed", payload.get("reason", "unknown error"), info=_stage_info(result),
                           elapsed_s=elapsed, stderr_tail=payload.get("traceback", tail))
    return CaseOutcome(case, "ok", "", payload["metrics"], {**payload["info"], **pinned}, elapsed)


OnStart = Callable[[Case], None]
#: The runner's judgment, asked just before a case's process would start: a reason not to start it (its
#: case's failure repeats: :func:`costbench.harness.execute.failures.why_stop`), or None.
Stop = Callable[[Case], "str | None"]


def not_started(case: Case, why: str) -> CaseOutcome:
    """The record of a process not started because its case's failure repeats; it counts as recorded."""
    return CaseOutcome(case, SKIPPED, f"not started: {why}", info={"not_started": True})


class Executor(abc.ABC):
    """How planned cases get measured; registered by ``name`` (its kind) with its settings model ``Settings``.

    Subclasses implement :meth:`run_cases`, and :meth:`from_settings` when their settings hold more than the
    kind. An executor that holds resources (a cluster connection) releases them in :meth:`close`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[ExecutorSettings]] = ExecutorSettings
    #: Whether cases are measured on the machine that runs the runner (then a resumed run must be on it too).
    measures_here: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, settings: ExecutorSettings) -> "Executor":
        """The executor for validated settings (by default it takes none beyond its kind)."""
        return cls()

    def plan(self, suite: "Suite", only: list[dict[str, str]] | None = None) -> list[Case]:
        """The suite's cases as this executor will run them (default: probed and planned on this machine)."""
        from costbench.harness.execute.plan import make_plan

        return make_plan(suite, only)

    def describe(self) -> dict[str, Any]:
        """What the run header records about where the cases ran."""
        return {"kind": self.name}

    @abc.abstractmethod
    def run_cases(self, cases: Iterable[Case], cache_dir: Path, workdir: Path, memory_limit_mb: float | None = None,
                  on_start: OnStart | None = None, stop: Stop | None = None) -> Iterator[CaseOutcome]:
        """One outcome per case, each yielded as soon as it is known (in any order); ``on_start`` as each starts.

        A case the plan skipped yields its skipped outcome without being measured; a case ``stop`` gives a
        reason for, asked just before it would start, yields :func:`not_started`; nothing a case does raises
        out of here.
        """

    def close(self) -> None:
        """Release what the executor holds (nothing, by default)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Each case in a fresh child process on this machine, one at a time, in plan order (the default).

    ``python``: the interpreter the children run (default: this one); ``env``: variables set in their
    environment over this process's.
    """

    name = "local"

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python
        self.env = dict(env or {})

    def run_cases(self, cases: Iterable[Case], cache_dir: Path, workdir: Path, memory_limit_mb: float | None = None,
                  on_start: OnStart | None = None, stop: Stop | None = None) -> Iterator[CaseOutcome]:
        for case in cases:
            if on_start:
                on_start(case)
            why = stop(case) if stop and case.status == PLANNED else None
            if case.status != PLANNED:
                yield CaseOutcome(case, case.status, case.reason)
            elif why:
                yield not_started(case, why)
            else:
                yield run_case_in_child(case, cache_dir, workdir, memory_limit_mb,
                                        env={**os.environ, **self.env} if self.env else None, python=self.python)
