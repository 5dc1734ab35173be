"""costbench from Python: run a suite and get the run back, exactly as ``costbench run`` does.

::

    import costbench.api as cb

    run = cb.run("suites/smoke.toml", out="results", processes=2)
    print(run.counts)            # {'ok': ..., 'skipped': ..., 'failed': ...}
    frame = run.results()        # the load_results frame of this run

``run`` loads the suite (a TOML file, a dict shaped like one, or a ``Suite``), applies the overrides to
its top-level keys *before* validation (so the run header stores the suite as measured and a resume plans
the same), plans it with its executor, and measures every case in fresh processes through the runner:
run file, replication, instability flag and all. ``resume`` finishes an interrupted run. The
``costbench run`` command, ``costbench compress``, the crosscheck and the benchmarks all come through
here; nothing else plans and runs a suite. ``ab`` measures two sides of the same cases side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from costbench.harness.execute.executor import CaseOutcome, Executor, ExecutorError  # noqa: F401 (the API's errors)
from costbench.harness.execute.load import SuiteError, parse_suite
from costbench.harness.execute.plan import parse_filters
from costbench.harness.execute.registry import executor_for
from costbench.harness.execute.runner import ResumeError, RunSummary, resume_run, run_plan  # noqa: F401
from costbench.harness.suite.case import Case
from costbench.harness.suite.schema import Suite, read_suite_file

SuiteSource = str | Path | Mapping[str, Any] | Suite
OnPlan = Callable[[Suite, list[Case], int], None]  # the suite, the processes still to measure, those already done
OnStart = Callable[[int, Case], None]
OnDone = Callable[[int, CaseOutcome], None]


@dataclass
class Run:
    """A finished run: its id, its run file, and one outcome per case measured here (processes merged)."""

    run_id: str
    run_file: Path
    results_dir: Path
    outcomes: list[CaseOutcome]

    @property
    def counts(self) -> dict[str, int]:
        """Cases ok, skipped and failed; a case counts as failed too when any of its processes failed."""
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
            counts["failed"] += int(o.status == "ok" and bool(o.info.get("processes", {}).get("failed")))
        return counts

    def results(self):
        """This run's rows, one per case and metric (the ``load_results`` frame)."""
        from costbench.harness.results.store import load_results

        return load_results(self.results_dir, self.run_id)

    @classmethod
    def of(cls, summary: RunSummary, results_dir: Path) -> "Run":
        return cls(summary.run_id, summary.run_file, results_dir, summary.outcomes)


def load(suite: SuiteSource, **overrides: Any) -> Suite:
    """A suite checked against the registries, with ``overrides`` (top-level suite keys) applied first.

    ``executor`` may be a table: its keys go over the suite's own ``[executor]`` (``{"address": ...}``).
    A key that is not a suite key, or a value the suite does not accept, raises SuiteError naming it.
    """
    if isinstance(suite, Suite):
        data, path = suite.model_dump(mode="json", exclude_none=True), suite.source or Path.cwd() / "<suite>"
    elif isinstance(suite, Mapping):
        data, path = dict(suite), Path.cwd() / "<suite>"
    else:
        data, path = read_suite_file(suite)
    unknown = sorted(set(overrides) - set(Suite.model_fields) - {"source"})
    if unknown:
        keys = sorted(set(Suite.model_fields) - {"source"})
        verb = "is not a suite key" if len(unknown) == 1 else "are not suite keys"
        raise SuiteError(f"{path}: {', '.join(map(repr, unknown))} {verb}; overrides name top-level keys of a "
                         f"suite ({', '.join(keys)})")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "executor" and isinstance(value, Mapping) and isinstance(data.get("executor"), Mapping):
            value = {**data["executor"], **value}
        data[key] = value
    return parse_suite(data, path)


def plan(suite: SuiteSource, *, only: list[str] | None = None, on: Executor | None = None,
         **overrides: Any) -> tuple[Suite, list[Case], Executor]:
    """(suite, cases, executor): the suite as it would run, planned by ``on`` or by the suite's own executor
    (built here; the caller closes it).

    Raises SuiteError (bad suite, or filters that leave nothing), ExecutorError (the executor cannot start).
    """
    chosen = load(suite, **overrides)
    filters = parse_filters(list(only or []))
    ex = on or executor_for(chosen.executor)
    try:
        cases = ex.plan(chosen, filters)
        if not cases:
            raise SuiteError(f"{chosen.source}: the filters leave no case to run")
    except BaseException:
        if on is None:
            ex.close()
        raise
    return chosen, cases, ex


def run(suite: SuiteSource, out: str | Path = "results", *, only: list[str] | None = None,
        cache_dir: str | Path | None = None, on: Executor | None = None, on_plan: OnPlan | None = None,
        on_start: OnStart | None = None, on_done: OnDone | None = None, **overrides: Any) -> Run:
    """Load, plan and measure a suite into the results folder ``out``; returns the run.

    ``only``: filters such as ``"backend=onnxruntime"`` (``costbench run --only``). ``on``: an executor you
    built and will close yourself; by default the suite's own (local unless it names another) is built and
    closed here. ``overrides``: top-level suite keys, e.g. ``processes=2, timeout_s=120`` or
    ``executor={"kind": "ray", "address": "10.0.0.5:6379"}``.
    Raises SuiteError (bad suite or filters), ExecutorError (the executor cannot start).
    """
    chosen, cases, ex = plan(suite, only=only, on=on, **overrides)
    try:
        out = Path(out)
        summary = run_plan(chosen, cases, out, cache_dir=Path(cache_dir) if cache_dir else None, on_plan=on_plan,
                           on_start=on_start, on_done=on_done, only=parse_filters(list(only or [])), executor=ex)
    finally:
        if on is None:
            ex.close()
    return Run.of(summary, out)


def resume(run_id: str, out: str | Path = "results", *, cache_dir: str | Path | None = None, force: bool = False,
           address: str | None = None, on_plan: OnPlan | None = None, on_start: OnStart | None = None,
           on_done: OnDone | None = None) -> Run:
    """Finish the interrupted run ``run_id`` (id or unique prefix) in ``out``, measuring only what it lacks.

    It is re-planned from the suite its header stored, with the executor it was measured with (at
    ``address`` if the cluster moved). ``force`` resumes on a machine whose env_id differs.
    Raises ResumeError (unknown run, another machine, another executor).
    """
    out = Path(out)
    summary = resume_run(out, run_id, cache_dir=Path(cache_dir) if cache_dir else None, on_plan=on_plan,
                         on_start=on_start, on_done=on_done, force=force, address=address)
    return Run.of(summary, out)


def ab(base: SuiteSource, new: SuiteSource | None = None, out: str | Path = "results", *,
       base_python: str | None = None, new_python: str | None = None, base_env: Mapping[str, str] | None = None,
       new_env: Mapping[str, str] | None = None, only: list[str] | None = None,
       threshold: float = 0.05, cache_dir: str | Path | None = None, on_plan: Callable | None = None,
       on_start: Callable | None = None, on_done: Callable | None = None, **overrides: Any):
    """Measure BASE and NEW side by side in one window (``costbench ab``): two runs whose comparison the
    drift between windows does not touch. Returns a :class:`~costbench.harness.execute.paired.PairedSummary`.

    ``new``: NEW's suite (default: BASE's, measured by ``new_python`` or with ``new_env``).
    ``base_python``/``new_python``: the interpreter that measures each side (another virtual environment, with
    its own costbench). ``base_env``/``new_env``: variables set in each side's processes. ``overrides``
    go over both suites (``processes=8``). Callbacks: see :func:`~costbench.harness.execute.paired.run_paired`. Raises SuiteError, and PairingError when the sides cannot be paired.
    """
    from costbench.harness.execute.paired import Side, run_paired, series_key
    from costbench.harness.reports.compare import compare_runs, needs_another_look
    from costbench.harness.reports.data import load_selection

    def judge(base_id: str, new_id: str) -> set[tuple]:
        result = compare_runs(load_selection([Path(out)], [base_id, new_id]), base_id, new_id, threshold=threshold)
        return {series_key(s) for s in result.series if needs_another_look(s, threshold)}

    envs = {"base": dict(base_env or {}), "new": dict(new_env or {})}
    if new is None and base_python == new_python and envs["base"] == envs["new"]:
        raise SuiteError("an A/B run needs two sides: a NEW suite, another interpreter or another environment "
                         "for one side")
    sides = [Side(name, load(src, **overrides), py, envs[name]) for name, src, py in
             (("base", base, base_python), ("new", base if new is None else new, new_python))]
    return run_paired(*sides, Path(out), judge, cache_dir=Path(cache_dir) if cache_dir else None,
                      only=parse_filters(list(only or [])), on_plan=on_plan, on_start=on_start, on_done=on_done)
