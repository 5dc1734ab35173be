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

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure which hardware, backend and compression to deploy a model on.")
store_app = typer.Typer(no_args_is_help=True, help="The DuckDB store built from run files.")
app.add_typer(store_app, name="store")
app.add_typer(__import__("costbench.commands.kernels", fromlist=["app"]).app, name="kernels")
# Piped output (CI logs, files) gets a width that fits the results table instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_RESULTS = Path("results")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print the fingerprint as JSON.")) -> None:
    """Print this machine's fingerprint and whether each registered backend can run here."""
    from costbench.backends.registry import load_registry
    from costbench.harness.env import fingerprint

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


def _load_plan(suite_path: Path, only: list[str]):
    from costbench.harness.plan import make_plan, parse_filters
    from costbench.harness.suite import SuiteError, load_suite

    try:
        suite = load_suite(suite_path)
        filters = parse_filters(only)
        cases = make_plan(suite, filters)
    except SuiteError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(f"{suite_path}: {exc}")
    if not cases:
        _fail(f"{suite_path}: the filters leave no case to run")
    return suite, cases


def _plan_table(cases) -> Table:
    t = Table(title=f"{len(cases)} cases", title_justify="left")
    for col in ("#", "model", "variant", "backend", "scenario", "batch", "plan"):
        t.add_column(col, overflow="fold")
    for i, c in enumerate(cases, 1):
        plan = f"{c.artifact_format}" if c.status == "planned" else f"[yellow]skip[/]: {escape(c.reason)}"
        t.add_row(str(i), c.model, c.variant, c.backend, c.scenario, str(c.batch_size), plan)
    return t


ONLY_HELP = "Keep only cases matching KEY=GLOB (model, variant, backend, device, scenario, batch_size); repeatable."


@app.command()
def plan(suite: Path = typer.Argument(..., help="Suite TOML file."),
         only: list[str] = typer.Option([], "--only", help=ONLY_HELP)) -> None:
    """Validate a suite and show the cases it would run, without running them."""
    _, cases = _load_plan(suite, only)
    console.print(_plan_table(cases))


@app.command()
def run(
    suite: Optional[Path] = typer.Argument(None, help="Suite TOML file (omit with --resume)."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder (run files + DuckDB store)."),
    only: list[str] = typer.Option([], "--only", help=ONLY_HELP),
    timeout: Optional[float] = typer.Option(None, help="Override the suite's per-case timeout, in seconds."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or ~/.cache/costbench)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this interrupted run (id or prefix) in --out."),
    force: bool = typer.Option(False, "--force", help="With --resume: resume even on a different environment."),
) -> None:
    """Run a suite: each case in its own process with a timeout; results appended as each case ends."""
    from costbench.harness.reports.run_table import render
    from costbench.harness.runner import ResumeError, find_run, plan_remaining, resume_run, run_plan
    from costbench.harness.store import load_results

    if resume is not None:
        if suite is not None or only or timeout is not None:
            _fail("--resume continues a run as it was planned: give no SUITE, --only or --timeout with it")
        try:
            _, header, todo, done = plan_remaining(find_run(out, resume))
        except (ResumeError, ValueError) as exc:
            _fail(str(exc))
        name, cases = header["suite"]["name"], todo
        console.print(f"[bold]resuming {header['run_id']}[/] ({name}): {done} cases recorded, {len(todo)} to go")
    else:
        if suite is None:
            _fail("give a SUITE file, or --resume RUN")
        suite_obj, cases = _load_plan(suite, only)
        if timeout is not None:
            for c in cases:
                c.timeout_s = timeout
        runnable = sum(c.status == "planned" for c in cases)
        console.print(f"[bold]{suite_obj.name}[/]: {len(cases)} cases ({runnable} to run, "
                      f"{len(cases) - runnable} skipped) -> {out}/")
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(cases))

        def on_start(i, case):
            progress.update(task, description=f"{case.model} / {case.variant} / {case.backend} / {case.scenario} "
                                              f"/ b{case.batch_size}")

        def on_done(i, outcome):
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "failed":
                c = outcome.case
                progress.console.print(f"[red]failed[/] {c.model} / {c.variant} / {c.backend} / {c.scenario}: "
                                       f"{escape(outcome.reason)}", highlight=False)
            progress.advance(task)

        if resume is not None:
            try:
                summary = resume_run(out, resume, cache_dir=cache_dir, on_start=on_start, on_done=on_done, force=force)
            except ResumeError as exc:
                _fail(str(exc))
        else:
            from costbench.harness.plan import parse_filters

            summary = run_plan(suite_obj, cases, out, cache_dir=cache_dir, on_start=on_start, on_done=on_done,
                               only=parse_filters(only), timeout_override=timeout)
    render(load_results(out, summary.run_id), console)
    console.print(f"run [bold]{summary.run_id}[/]: {counts['ok']} ok, {counts['skipped']} skipped, "
                  f"{counts['failed']} failed; run file {summary.run_file}")
    if counts["failed"]:
        raise typer.Exit(1)


@app.command()
def results(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Show this run as a table (default: list runs)."),
    last: bool = typer.Option(False, "--last", help="Show the most recent run."),
    csv: Optional[Path] = typer.Option(None, help="Also write the long-form rows to this CSV file."),
) -> None:
    """List runs, or show one run as a table per model."""
    from costbench.harness.reports.run_table import render
    from costbench.harness.store import list_runs, load_results

    if not results_dir.exists():
        _fail(f"{results_dir}: no such results folder")
    runs = list_runs(results_dir)
    if runs.empty:
        _fail(f"{results_dir}: no runs yet (costbench run SUITE --out {results_dir})")
    if last:
        run_id = str(runs["run_id"].iloc[-1])
    if run_id is None:
        t = Table(title=f"runs in {results_dir}", title_justify="left")
        for col in runs.columns:
            t.add_column(col)
        for row in runs.itertuples(index=False):
            t.add_row(*[str(v) for v in row])
        console.print(t)
        return
    matches = [r for r in runs["run_id"] if str(r).startswith(run_id)]
    if len(matches) != 1:
        _fail(f"run {run_id!r}: {'no such run' if not matches else 'ambiguous: ' + ', '.join(matches)}")
    df = load_results(results_dir, matches[0])
    render(df, console)
    if csv:
        df.drop(columns=["samples"]).to_csv(csv, index=False)
        console.print(f"wrote {len(df)} rows to {csv}")


@app.command()
def compress(
    model: str = typer.Argument(..., help="Zoo model, e.g. digits-cnn, efficientnet-lite0, all-minilm-l6-v2."),
    recipes: list[str] = typer.Option(..., "--recipes", help="Recipes to try besides fp32 (comma-separated, repeatable)."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Largest accuracy drop allowed (0.01 = 1 point)."),
    backends: list[str] = typer.Option(["torch,onnxruntime,openvino"], "--backends", help="Backends (comma-separated)."),
    option: list[str] = typer.Option([], "--option", help="Recipe option as RECIPE.KEY=VALUE; repeatable."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Batch size for latency and accuracy."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder (the run file lands there)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the selection and provenance as JSON."),
    timeout: float = typer.Option(1800.0, help="Per-case limit in seconds (training recipes build inside it)."),
    min_count: int = typer.Option(50, help="Single-stream queries to measure at least."),
    min_duration: float = typer.Option(1.0, help="Seconds to measure at least."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or ~/.cache/costbench)."),
) -> None:
    """Build variants, measure them, and name per backend the fastest one within the accuracy budget."""
    from costbench.commands import compress as select

    split = lambda items: [x.strip() for item in items for x in item.split(",") if x.strip()]  # noqa: E731
    try:
        summary, res, choices = select.run_compress(
            model, split(recipes), max_drop, backends=split(backends), options=select.parse_options(option),
            batch_size=batch_size, out=out, cache_dir=cache_dir, timeout_s=timeout, min_count=min_count,
            min_duration_s=min_duration,
            on_start=lambda i, c: err.print(f"[{i + 1}] {c.variant} / {c.backend}", highlight=False),
        )
    except (ValueError, KeyError) as exc:
        _fail(str(exc))
    select.render(model, max_drop, res, choices, console)
    if json_out:
        select.write_json(json_out, select.report_json(model, max_drop, summary.run_id, res, choices))
    console.print(f"run [bold]{summary.run_id}[/]; run file {summary.run_file}")


@store_app.command("rebuild")
def store_rebuild(results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder.")) -> None:
    """Rebuild the DuckDB store from the run files (they are the source of truth)."""
    from costbench.harness.store import Store

    n = Store(results_dir).rebuild()
    console.print(f"ingested {n} run file(s) into {results_dir / 'costbench.duckdb'}")


# report, compare, dashboard, prices, pytest-benchmark: their own module, registered here.
from costbench.commands.reports import register as _register_reports  # noqa: E402

_register_reports(app)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
