"""``costbench ab``: BASE and NEW measured side by side in one window, then compared (harness/execute/paired.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from costbench.commands.common import fail

DEFAULT_RESULTS = Path("results")


def ab(
    base: Path = typer.Argument(..., help="BASE's suite TOML file."),
    new: Optional[Path] = typer.Argument(None, help="NEW's suite (default: BASE's, with --new-python or --new-env)."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder (both runs' files + DuckDB store)."),
    base_python: Optional[str] = typer.Option(None, "--base-python", help=(
        "Interpreter that measures BASE (another virtual environment with its own costbench; default: this one).")),
    new_python: Optional[str] = typer.Option(None, "--new-python", help="Interpreter that measures NEW."),
    base_env: list[str] = typer.Option([], "--base-env", help="KEY=VALUE set in BASE's processes; repeatable."),
    new_env: list[str] = typer.Option([], "--new-env", help=(
        "KEY=VALUE set in NEW's processes (a runtime's control: GLIBC_TUNABLES, OMP_WAIT_POLICY, ...); repeatable.")),
    only: list[str] = typer.Option([], "--only", help="Keep only cases matching KEY=GLOB; repeatable."),
    processes: Optional[int] = typer.Option(None, "--processes", min=3, help=(
        "Pairs of processes per case at the first look (default: the suites'); undecided cases get up to 3x, "
        "then 5x as many.")),
    threshold: float = typer.Option(0.05, "--threshold", help="Practical threshold (0.05 = 5%)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or ~/.cache/costbench)."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when any series regressed."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the comparison as JSON."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write it as Markdown."),
) -> None:
    """Measure BASE and NEW alternately, process by process, in one window, and compare them: the machine's
    drift between windows cancels. Cases still undecided after a look get the next (up to three)."""
    import costbench.api as api
    from costbench.commands.reports import console, show_comparison
    from costbench.harness.execute.paired import PairingError
    from costbench.harness.reports.compare import compare_runs
    from costbench.harness.reports.data import load_selection

    envs = {}
    for name, items in (("--base-env", base_env), ("--new-env", new_env)):
        bad = [i for i in items if "=" not in i or not i.partition("=")[0].strip()]
        if bad:
            fail(f"{name} {bad[0]!r}: expected KEY=VALUE")
        envs[name] = dict(i.split("=", 1) for i in items)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("planning", total=None)
        looks = []

        def on_plan(cases: int, jobs: int) -> None:
            looks.append(cases)
            total = (progress.tasks[task].total or 0) + jobs
            progress.update(task, total=total)
            which = "first look" if len(looks) == 1 else f"look {len(looks)}, for the undecided cases"
            progress.console.print(f"[bold]{which}[/]: {cases} cases, {jobs} processes, BASE and NEW alternating "
                                   f"-> {out}/")

        def on_start(side: str, case) -> None:
            progress.update(task, description=f"{side.upper()} · {case.model} / {case.variant} / {case.backend} / "
                                              f"{case.scenario} / b{case.batch_size} · process {case.process + 1}")

        def on_done(side: str, outcome) -> None:
            if outcome.status == "failed":
                progress.console.print(f"[red]failed[/] {side.upper()} {outcome.case.model} / {outcome.case.backend}: "
                                       f"{escape(outcome.reason)}", highlight=False)
            if outcome.case.status == "planned":
                progress.advance(task)

        try:
            done = api.ab(base, new, out, base_python=base_python, new_python=new_python,
                          base_env=envs["--base-env"], new_env=envs["--new-env"], only=only,
                          threshold=threshold, cache_dir=cache_dir, processes=processes,
                          on_plan=on_plan, on_start=on_start, on_done=on_done)
        except (api.SuiteError, PairingError) as exc:
            fail(str(exc))
        except ValueError as exc:  # a malformed --only filter
            fail(f"{base}: {exc}")
    for title, items in (("only in BASE", done.only_base), ("only in NEW", done.only_new)):
        if items:
            console.print(f"{len(items)} cases {title}, not measured: " + "; ".join(items), highlight=False)
    ids = [done.base.run_id, done.new.run_id]
    result = compare_runs(load_selection([out], ids), *ids, threshold=threshold)
    console.print(f"BASE run {ids[0]}, NEW run {ids[1]} (compare them again with costbench compare {ids[0]} "
                  f"{ids[1]} -r {out})", highlight=False)
    show_comparison(result, json_out, markdown_out, fail_on_regression)


def register(app: typer.Typer) -> None:
    """Add ``costbench ab`` to the CLI."""
    app.command()(ab)
