"""The ``costbench`` command: env, plan, run, results, store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from costbench.commands.common import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure which hardware, backend and compression to deploy a model on.")
store_app = typer.Typer(no_args_is_help=True, help="The stores built from run files: DuckDB, and a team's PostgreSQL.")
app.add_typer(store_app, name="store")
app.add_typer(__import__("costbench.commands.kernels", fromlist=["app"]).app, name="kernels")
# Piped output (CI logs, files) gets a width that fits the results table instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_RESULTS = Path("results")


STORE_HELP = ("Team store: postgresql://USER@HOST:PORT/DB (or ...?host=SOCKET_DIR); the password from ~/.pgpass, "
              "PGPASSWORD or the URL, never recorded.")


def _store_url(url: str) -> str:
    """``url`` when it names a PostgreSQL store; otherwise a clear error before anything runs."""
    from costbench.harness.results.store import redact, store_kind

    if store_kind(url) != "postgresql":
        fail(f"--store {redact(url)}: expected a PostgreSQL URL, postgresql://USER@HOST:PORT/DB")
    return url


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print the fingerprint as JSON.")) -> None:
    """Print this machine's fingerprint and whether each registered backend can run here."""
    from costbench.backends.registry import load_registry
    from costbench.harness.machine.env import fingerprint

    fp = fingerprint()
    registry = load_registry()
    probes = {name: entry.probe() for name, entry in registry.items()}
    if as_json:
        fp["backends"] = {n: {"available": p.available, "reason": p.reason, "versions": p.versions}
                          for n, p in probes.items()}
        console.print_json(json.dumps(fp, default=str))
        return
    key, rec = fp["key"], fp["recorded"]
    t = Table(title=f"environment {fp['env_id']}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("CPU", key["cpu_model"])
    t.add_row("cores", f"{key['physical_cores']} physical, {key['logical_cores']} logical")
    t.add_row("memory", f"{rec['memory_bytes'] / 2**30:.1f} GiB")
    t.add_row("int8 ISA", "  ".join(f"{f}={'yes' if v else 'no'}" for f, v in key["isa"].items()))
    t.add_row("GPU", ", ".join(f"{g['name']} ({g['memory']}, driver {g['driver']})" for g in key["gpus"]) or "none")
    t.add_row("python", key["python"])
    libs = key["libraries"]
    t.add_row("libraries", "  ".join(f"{k}={v}" for k, v in libs.items() if v != "not installed"))
    t.add_row("not installed", ", ".join(k for k, v in libs.items() if v == "not installed") or "-")
    t.add_row("threads env", "  ".join(f"{k}={v}" for k, v in key["threads"].items() if v) or "(unset)")
    t.add_row("runtime env", "  ".join(f"{k}={v}" for k, v in rec["runtime_env"].items()) or "(unset)")
    t.add_row("huge pages", f"{rec['transparent_hugepages']} (defrag {rec['transparent_hugepages_defrag']})")
    t.add_row("CPU governor", str(rec["cpu_governor"]))
    console.print(t)
    b = Table(title="backends", title_justify="left")
    for col in ("backend", "available", "details"):
        b.add_column(col)
    for name, p in probes.items():
        # escape(): reasons hold install hints like 'costbench[edge]' that rich would read as markup.
        details = escape("  ".join(f"{k}={v}" for k, v in p.versions.items()) if p.available else p.reason)
        b.add_row(name, "[green]yes[/]" if p.available else "[red]no[/]", details)
    console.print(b)


def _load_plan(suite_path: Path, only: list[str], executor: Optional[str] = None, address: Optional[str] = None,
               placement: Optional[list] = None):
    """(suite, cases, executor) from costbench.api.plan, with the command line's executor options over the suite's."""
    import costbench.api as api

    try:
        return api.plan(suite_path, only=only, executor=_executor_overrides(executor, address, placement))
    except (api.SuiteError, api.ExecutorError) as exc:
        fail(str(exc))
    except ValueError as exc:  # a malformed --only filter
        fail(f"{suite_path}: {exc}")


def _executor_overrides(executor: Optional[str], address: Optional[str], placement: Optional[list]) -> dict | None:
    """--executor/--address/--placement as keys over the suite's [executor] (its settings model validates them)."""
    data = {k: v for k, v in (("kind", executor), ("address", address), ("placement", placement or None)) if v}
    return data or None


EXECUTOR_HELP = "Where cases are measured: 'local' (here, the default) or 'ray' (a Ray cluster's nodes)."
ADDRESS_HELP = "With --executor ray: the cluster's HOST:PORT (default: the suite's, $RAY_ADDRESS or the local cluster)."
PLACEMENT_HELP = ("With --executor ray: 'every-class' (each case on every machine class, the default) or a node "
                  "selector 'label:KEY=VALUE', 'isa:FLAG', 'gpu:NAME', 'host:GLOB'; repeatable (all must match).")


def _plan_table(cases, executor=None) -> Table:
    where = getattr(executor, "placement_of", None)  # a fleet executor says which nodes may run each case
    t = Table(title=f"{len(cases)} cases", title_justify="left")
    for col in ("#", "model", "variant", "backend", "scenario", "batch", "plan") + (("machine", "nodes") if where else ()):
        t.add_column(col, overflow="fold")
    for i, c in enumerate(cases, 1):
        plan = f"{c.artifact_format}" if c.status == "planned" else f"[yellow]skip[/]: {escape(c.reason)}"
        nodes = (c.machine or "", ", ".join(f"{n.hostname}/{n.node_id[:8]}" for n in where(c))) if where else ()
        t.add_row(str(i), c.model, c.variant, c.backend, c.scenario, str(c.batch_size), plan, *nodes)
    return t


def _machines_table(executor) -> Table | None:
    """A fleet executor's nodes: machine class (env_id), CPU, GPUs, backends it lacks, or why it is not used."""
    if not getattr(executor, "nodes", None):
        return None
    t = Table(title=f"{len(executor.nodes)} Ray nodes", title_justify="left")
    for col in ("node", "host", "machine (env_id)", "CPU", "GPU", "labels", "cannot run / not used"):
        t.add_column(col, overflow="fold")
    for n in executor.nodes:
        key = n.fingerprint.get("key", {})
        lacking = ", ".join(k for k, a in n.probes.items() if "@" not in k and not a.available)
        t.add_row(n.node_id[:12], f"{n.hostname} ({n.ip})", n.env_id if not n.unusable else "-",
                  escape(str(key.get("cpu_model", "?"))), ", ".join(g["name"] for g in key.get("gpus", [])) or "-",
                  " ".join(f"{k}={v}" for k, v in n.labels.items()), escape(n.unusable or lacking or "-"))
    return t


def _publisher(store: str | None, out: Path, resume: str | None):
    """A RunPublisher for ``run --store`` (None without it); a wrong URL, password or schema fails here."""
    if not store:
        return None
    from costbench.harness.execute.runner import ResumeError, find_run
    from costbench.harness.results.store import StoreError, redact
    from costbench.harness.results.store_pg import RunPublisher

    sys.argv[:] = [redact(a) for a in sys.argv]  # the run header records argv: never a password
    try:
        return RunPublisher(_store_url(store), out, find_run(out, resume).path if resume else None)
    except (StoreError, ResumeError) as exc:
        fail(str(exc))


def _publish_end(publisher, run_file: Path) -> None:
    if publisher is None:
        return
    pushed = publisher.finish(run_file)
    if pushed is None:
        err.print(f"[bold yellow]warning:[/] not pushed to the team store: {escape(publisher.failed or '')}",
                  highlight=False)
    else:
        console.print(f"pushed {pushed.cases} case(s) to {publisher.store.name}", highlight=False)


ONLY_HELP = "Keep only cases matching KEY=GLOB (model, variant, backend, device, scenario, batch_size); repeatable."


@app.command()
def plan(suite: Path = typer.Argument(..., help="Suite TOML file."),
         only: list[str] = typer.Option([], "--only", help=ONLY_HELP),
         executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
         address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
         placement: list[str] = typer.Option([], "--placement", help=PLACEMENT_HELP)) -> None:
    """Validate a suite and show the cases it would run (and, on a Ray cluster, where), without running them."""
    _, cases, ex = _load_plan(suite, only, executor, address, placement)
    with ex:
        machines = _machines_table(ex)
        if machines is not None:
            console.print(machines)
        console.print(_plan_table(cases, ex))


@app.command()
def run(
    suite: Optional[Path] = typer.Argument(None, help="Suite TOML file (omit with --resume)."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder (run files + DuckDB store)."),
    only: list[str] = typer.Option([], "--only", help=ONLY_HELP),
    timeout: Optional[float] = typer.Option(None, help="Override the suite's per-case timeout, in seconds."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or ~/.cache/costbench)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this interrupted run (id or prefix) in --out."),
    force: bool = typer.Option(False, "--force", help="With --resume: resume even on a different environment."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP + " Each case is pushed there as it ends."),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP + " With --resume: where the cluster is now."),
    placement: list[str] = typer.Option([], "--placement", help=PLACEMENT_HELP),
    processes: Optional[int] = typer.Option(None, "--processes", min=1, help=(
        "Override the suite's processes per case (the unit of replication; 5 is compare-grade, 8 on a small "
        "shared VM, 1 the fastest).")),
    precision: Optional[float] = typer.Option(None, "--precision", help=(
        "Measure each case to this relative half-width of its headline's 95% interval (e.g. 0.05), adding "
        "processes after the first (at least 3) up to the suite's max_processes.")),
) -> None:
    """Run a suite: each case in fresh processes with a timeout, interleaved; results appended as each process ends."""
    import costbench.api as api
    from costbench.harness.reports.run_table import render

    publisher = _publisher(store, out, resume)  # a bad store stops here, before a cluster is reached or a case runs
    if resume is not None:
        if suite is not None or only or timeout is not None or processes is not None or precision is not None:
            fail("--resume continues a run as it was planned: give no SUITE, --only, --timeout, --processes or "
                 "--precision with it")
        if executor or placement:
            fail("--resume continues a run where it was planned: give no --executor or --placement with it")
    elif suite is None:
        fail("give a SUITE file, or --resume RUN")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("planning", total=None)

        def on_plan(suite_obj, jobs, done):
            progress.update(task, total=len(jobs), description="starting")
            if resume is not None:
                progress.console.print(f"[bold]resuming {resume}[/] ({suite_obj.name}): {done} processes recorded, "
                                       f"{len(jobs)} to go")
                return
            cases = {j.case_id: j.status for j in jobs}
            runnable = sum(s == "planned" for s in cases.values())
            progress.console.print(f"[bold]{suite_obj.name}[/]: {len(cases)} cases ({runnable} to run, "
                                   f"{len(cases) - runnable} skipped), {len(jobs)} processes -> {out}/")

        def on_start(i, case):
            if i + 1 > (progress.tasks[task].total or 0):  # a round added for the precision asked
                progress.update(task, total=i + 1)
            if case.processes <= 1:
                of = ""
            elif case.process < case.processes:
                of = f" · process {case.process + 1}/{case.processes}"
            else:
                of = f" · process {case.process + 1}, for precision"
            progress.update(task, description=f"{case.model} / {case.variant} / {case.backend} / {case.scenario} "
                                              f"/ b{case.batch_size}{of}")

        def on_done(i, outcome):
            if outcome.status == "failed":
                c = outcome.case
                of = f" (process {c.process + 1}/{c.processes})" if c.processes > 1 else ""
                progress.console.print(f"[red]failed[/] {c.model} / {c.variant} / {c.backend} / {c.scenario}{of}: "
                                       f"{escape(outcome.reason)}", highlight=False)
            progress.advance(task)
            if publisher:
                publisher.case_done()

        callbacks = {"cache_dir": cache_dir, "on_plan": on_plan, "on_start": on_start, "on_done": on_done}
        try:
            if resume is not None:
                done = api.resume(resume, out, force=force, address=address, **callbacks)
            else:
                overrides = {"precision": precision} if precision is not None else {}
                done = api.run(suite, out, only=only, processes=processes, timeout_s=timeout, **overrides,
                               executor=_executor_overrides(executor, address, placement), **callbacks)
        except (api.SuiteError, api.ExecutorError, api.ResumeError) as exc:
            fail(str(exc))
        except ValueError as exc:  # a malformed --only filter
            fail(f"{suite}: {exc}")
    counts = done.counts
    _publish_end(publisher, done.run_file)
    render(done.results(), console)
    console.print(f"run [bold]{done.run_id}[/]: {counts['ok']} ok, {counts['skipped']} skipped, "
                  f"{counts['failed']} failed; run file {done.run_file}")
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def results(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Show this run as a table (default: list runs)."),
    last: bool = typer.Option(False, "--last", help="Show the most recent run."),
    csv: Optional[Path] = typer.Option(None, help="Also write the long-form rows to this CSV file."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP + " Read it instead of RESULTS_DIR."),
) -> None:
    """List runs, or show one run as a table per model."""
    from costbench.harness.reports.run_table import render
    from costbench.harness.results.store import StoreError, list_runs, load_results, redact

    source = _store_url(store) if store else results_dir
    where = redact(store) if store else str(results_dir)
    if not store and not results_dir.exists():
        fail(f"{results_dir}: no such results folder")
    try:
        runs = list_runs(source)
    except StoreError as exc:
        fail(str(exc))
    if runs.empty:
        fail(f"{where}: no runs yet (costbench store push RESULTS_DIR --to URL)" if store else
              f"{results_dir}: no runs yet (costbench run SUITE --out {results_dir})")
    if last:
        run_id = str(runs["run_id"].iloc[-1])
    if run_id is None:
        t = Table(title=f"runs in {where}", title_justify="left")
        for col in runs.columns:
            t.add_column(col)
        for row in runs.itertuples(index=False):
            t.add_row(*[str(v) for v in row])
        console.print(t)
        return
    matches = [r for r in runs["run_id"] if str(r).startswith(run_id)]
    if len(matches) != 1:
        fail(f"run {run_id!r}: {'no such run' if not matches else 'ambiguous: ' + ', '.join(matches)}")
    try:
        df = load_results(source, matches[0])
    except StoreError as exc:
        fail(str(exc))
    render(df, console)
    if csv:
        df.drop(columns=["samples"]).to_csv(csv, index=False)
        console.print(f"wrote {len(df)} rows to {csv}")


@app.command()
def compress(
    model: str = typer.Argument(..., help="Zoo model, e.g. digits-cnn, efficientnet-lite0, all-minilm-l6-v2."),
    recipes: list[str] = typer.Option(..., "--recipes", help="Recipes to try besides fp32 (comma-separated, repeatable)."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Task-accuracy budget, for models with labels: largest "
                                   "drop in task accuracy against fp32 (0.01 = 1 point)."),
    max_parity_loss: float = typer.Option(0.01, "--max-parity-loss", help="Parity budget, for models without labels: "
                                          "largest top-1 disagreement with fp32 on the samples where fp32 is "
                                          "confident (0.01 = 1 point)."),
    backends: list[str] = typer.Option(["torch,onnxruntime,openvino"], "--backends", help="Backends (comma-separated)."),
    option: list[str] = typer.Option([], "--option", help="Recipe option as RECIPE.KEY=VALUE; repeatable."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Batch size for latency and accuracy."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder (the run file lands there)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the selection and provenance as JSON."),
    timeout: float = typer.Option(1800.0, help="Per-case limit in seconds (training recipes build inside it)."),
    min_count: int = typer.Option(50, help="Single-stream queries to measure at least."),
    min_duration: float = typer.Option(1.0, help="Seconds to measure at least (in each process)."),
    processes: int = typer.Option(3, "--processes", min=1, help="Fresh processes per variant x backend; the latency "
                                  "interval is across them."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or ~/.cache/costbench)."),
) -> None:
    """Build variants, measure them, and name per backend the fastest one within budget: task accuracy where the
    model has labels, parity with fp32 where it has none; the output says which basis decided each pick."""
    from costbench.commands import compress as select

    split = lambda items: [x.strip() for item in items for x in item.split(",") if x.strip()]  # noqa: E731
    try:
        summary, res, choices = select.run_compress(
            model, split(recipes), max_drop, max_parity_loss=max_parity_loss, backends=split(backends),
            options=select.parse_options(option),
            batch_size=batch_size, out=out, cache_dir=cache_dir, timeout_s=timeout, min_count=min_count,
            min_duration_s=min_duration, processes=processes,
            on_start=lambda i, c: err.print(f"[{i + 1}] {c.variant} / {c.backend}"
                                            + (f" (process {c.process + 1}/{c.processes})" if c.processes > 1 else ""),
                                            highlight=False),
        )
    except (ValueError, KeyError) as exc:
        fail(str(exc))
    select.render(model, max_drop, res, choices, console, max_parity_loss)
    if json_out:
        select.write_json(json_out, select.report_json(model, max_drop, summary.run_id, res, choices, max_parity_loss))
    console.print(f"run [bold]{summary.run_id}[/]; run file {summary.run_file}")


@store_app.command("rebuild")
def store_rebuild(results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder.")) -> None:
    """Rebuild the DuckDB store from the run files (they are the source of truth)."""
    from costbench.harness.results.store import Store

    n = Store(results_dir).rebuild()
    console.print(f"ingested {n} run file(s) into {results_dir / 'costbench.duckdb'}")


@store_app.command("push")
def store_push(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder whose run files to publish."),
    to: str = typer.Option(..., "--to", help=STORE_HELP),
    run_id: list[str] = typer.Option([], "--run", help="Push only this run (id or prefix); repeatable."),
) -> None:
    """Publish run files to a team's PostgreSQL store; pushing a run again adds only what the store lacks."""
    from costbench.harness.results.store import StoreError, run_files
    from costbench.harness.results.store_pg import PgStore

    if not (results_dir / "runs").is_dir() or not run_files(results_dir):
        fail(f"{results_dir}: no run files to push")
    pg = PgStore(_store_url(to))
    try:
        pushed = pg.push(results_dir, run_id or None)
    except StoreError as exc:
        fail(str(exc))
    if not pushed:
        fail(f"{results_dir}: no run matches {', '.join(run_id)}")
    for r in pushed:
        state = "complete" if r.complete else "incomplete"
        what = f"{r.cases_added} case(s), {r.rows_added} row(s) added" if r.cases_added else "already in the store"
        console.print(f"{r.run_id}: {what} ({r.cases} cases, {state})", highlight=False)
    fresh = sum(1 for r in pushed if r.cases_added)
    console.print(f"pushed {len(pushed)} run(s) to {pg.name}: {fresh} with new cases, "
                  f"{len(pushed) - fresh} already there", highlight=False)


# report, compare, dashboard, prices, pytest-benchmark: their own module, registered here.
from costbench.commands.reports import register as _register_reports  # noqa: E402

_register_reports(app)
__import__("costbench.commands.crosscheck", fromlist=["register"]).register(app)  # costbench crosscheck
__import__("costbench.commands.ab", fromlist=["register"]).register(app)  # costbench ab


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
