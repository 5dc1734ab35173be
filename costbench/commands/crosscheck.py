"""``costbench crosscheck RUN_OR_SUITE``: costbench's latency beside the vendors' own benchmark tools.

``register(app)`` adds the command to the ``costbench`` typer app; heavy imports wait until it runs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from costbench.commands.common import fail

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

RESULTS_HELP = ("Results folder to find runs in (repeatable). Default: results/, plus results/reference/ when it "
                "exists.")


def _is_suite(ref: str) -> bool:
    return ref.endswith(".toml") or Path(ref).is_file()


def _run_targets(refs: list[str], results: list[Path]):
    """(targets, skipped pairs, {run_id: env_id}) of the referenced runs, resolved as `costbench report` does."""
    from costbench.commands.reports import _dirs
    from costbench.harness.crosscheck.vendor import targets_from_selection
    from costbench.harness.reports.data import RunNotFound, list_all_runs, load_selection, resolve_runs
    from costbench.harness.results.store import StoreError

    dirs = _dirs(results)
    try:
        runs = list_all_runs(dirs)
        if runs.empty:
            fail(f"no runs in {', '.join(str(d) for d in dirs)} (costbench run SUITE, or give a suite file)")
        ids = resolve_runs(refs, runs)
        sel = load_selection(dirs, ids, runs)
    except (FileNotFoundError, RunNotFound, StoreError) as exc:
        fail(str(exc))
    targets, skipped = targets_from_selection(sel, ids)
    env_ids = dict(zip(sel.runs["run_id"], sel.runs["env_id"]))
    from costbench.harness.crosscheck import optimum_benchmark as ob

    gen_targets, gen_skipped = ob.targets_from_selection(sel, ids)
    return targets, skipped, env_ids, gen_targets, gen_skipped


def _suite_targets(path: Path, only: list[str]):
    """Targets for a suite's cases (costbench measures each afresh), and skipped pairs for cases the plan skipped."""
    from costbench.harness.crosscheck.vendor import TOOLS, Pair, cases_from_suite, target_from_record
    from costbench.harness.execute.plan import parse_filters
    from costbench.harness.execute.load import SuiteError

    try:
        planned, not_planned, never = cases_from_suite(path, parse_filters(only))
    except (SuiteError, ValueError) as exc:
        fail(str(exc))
    if never:
        err.print(f"{never} combination(s) of the suite can never run (the variant's format is not one the backend "
                  "loads): left out", highlight=False)
    skipped = [Pair(target_from_record(c.to_dict(), {}, [], "suite"), TOOLS[c.backend_name].name, "skipped", c.reason)
               for c in not_planned]
    from costbench.harness.crosscheck import optimum_benchmark as ob

    try:
        gen_planned, gen_not_planned, gen_never = ob.cases_from_suite(path, parse_filters(only))
    except (SuiteError, ValueError) as exc:
        fail(str(exc))
    if gen_never:
        err.print(f"{gen_never} generate combination(s) of the suite can never run: left out", highlight=False)
    gen_skipped = [ob.GenerativePair(ob.generative_target(c.to_dict(), {}, [], "suite"), "skipped", c.reason)
                   for c in gen_not_planned]
    gen_targets = [ob.generative_target(c.to_dict(), {}, [], "suite") for c in gen_planned]
    return [target_from_record(c.to_dict(), {}, [], "suite") for c in planned], skipped, gen_targets, gen_skipped


def _render(pairs) -> Table:
    from costbench.harness.crosscheck.vendor import COLUMNS, table_rows

    t = Table(title="costbench vs the vendors' tools (ratio = costbench / tool; offline: by throughput)",
              title_justify="left")
    for col in COLUMNS:
        t.add_column(col, overflow="fold", justify="right" if col in ("costbench", "vendor", "ratio") else "left")
    for p, row in zip(pairs, table_rows(pairs)):
        style = {"agrees": "green", "ok": ""}.get(p.verdict, "yellow" if p.status == "ok" else "red")
        cells = [escape(row[c]) for c in COLUMNS]
        if style:
            cells[COLUMNS.index("verdict")] = f"[{style}]{cells[COLUMNS.index('verdict')]}[/]"
        t.add_row(*cells)
    return t


def _render_generative(pairs) -> Table:
    from costbench.harness.crosscheck.optimum_benchmark import COLUMNS, table_rows

    t = Table(title="costbench vs optimum-benchmark, generate (ratio = costbench / optimum-benchmark: TTFT p50 / "
                    "prefill p50, TPOT p50 / (decode p50 / (n - 1)))", title_justify="left")
    numeric = {"costbench TTFT", "ob prefill", "ratio TTFT", "costbench TPOT", "ob decode/token", "ratio TPOT"}
    for col in COLUMNS:
        t.add_column(col, overflow="fold", justify="right" if col in numeric else "left")
    for p, row in zip(pairs, table_rows(pairs)):
        style = "green" if p.verdict == "agrees" else ("yellow" if p.status == "ok" else "red")
        cells = [escape(row[c]) for c in COLUMNS]
        cells[COLUMNS.index("verdict")] = f"[{style}]{cells[COLUMNS.index('verdict')]}[/]"
        t.add_row(*cells)
    return t


def _render_generative_breakdown(pair) -> Table:
    t = Table(title=f"what each number includes: {pair.gt.label}", title_justify="left")
    for col in ("quantity", "costbench", "ms", "optimum-benchmark", "ms ", "ratio"):
        t.add_column(col, overflow="fold", justify="right" if col.strip() in ("ms", "ratio") else "left")
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for b in pair.breakdown():
        t.add_row(escape(b["quantity"]), escape(b["costbench"]), fmt(b["costbench_ms"], ".3f"),
                  escape(b["optimum_benchmark"]), fmt(b["optimum_benchmark_ms"], ".3f"), fmt(b["ratio"], ".3f"))
    return t


def _render_breakdown(label: str, bd: dict) -> Table:
    t = Table(title=f"where the time goes: {label} ({bd['rounds']} rounds x {bd['per_round']} calls per step, "
                    "interleaved)", title_justify="left")
    for col in ("step", "host median ms", "over a", "runtime latency ms", "what"):
        t.add_column(col, overflow="fold")
    for name, s in bd["steps"].items():
        t.add_row(name, f"{s['host_median_ms']:.4f}", f"{s['over_a_ms'] * 1000:+.1f} µs ({s['over_a_pct']:+.1f}%)",
                  f"{s['runtime_latency_median_ms']:.4f}", escape(s["what"]))
    return t


def crosscheck(
    run_or_suite: list[str] = typer.Argument(..., help="Run ids (or unique prefixes, or 'last'), or one suite file "
                                             "(its cases are measured now)."),
    results: list[Path] = typer.Option([], "--results", "-r", help=RESULTS_HELP),
    only: list[str] = typer.Option([], "--only", help="With a suite: keep only cases matching KEY=GLOB; repeatable."),
    time_s: float = typer.Option(12.0, "--time", "-t", help="Seconds each vendor-tool run measures (benchmark_app "
                                 "-t, trtexec --duration; optimum-benchmark's duration, with at least the case's "
                                 "min_count requests)."),
    tool: list[str] = typer.Option([], "--tool", help="Run only these tools (repeatable): benchmark_app (OpenVINO "
                                   "cases), trtexec (TensorRT cases), optimum-benchmark (transformers generate cases). "
                                   "Default: every tool that covers a case."),
    fresh: bool = typer.Option(False, "--fresh", help="With runs: measure costbench again here (each case in its "
                               "own process, the artifact rebuilt if the cache lacks it) instead of using the run's "
                               "number."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Alternate (costbench, tool) this many times per case "
                               "and keep the median of each side (costbench is re-measured each time with --fresh or "
                               "a suite; otherwise only the tool repeats)."),
    breakdown: bool = typer.Option(False, "--breakdown", help="Also time, on one compiled model, each step between "
                                   "benchmark_app's timed region and costbench's (OpenVINO cases); and, on one loaded "
                                   "model in one process, costbench's stamped generate and optimum-benchmark's tracked "
                                   "generate alternated (transformers generate cases)."),
    breakdown_rounds: int = typer.Option(30, "--breakdown-rounds", min=1, help="Interleaved rounds for --breakdown."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the pairs (settings, commands, numbers) as "
                                            "JSON."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the table as Markdown."),
    cache_dir: Optional[Path] = typer.Option(None, help="Artifact cache (default $COSTBENCH_CACHE_DIR or "
                                             "~/.cache/costbench)."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Keep the tools' reports and logs in this folder."),
) -> None:
    """Run the vendors' own benchmark tools (OpenVINO benchmark_app; trtexec on NVIDIA; optimum-benchmark for
    transformers generate cases) on the same artifacts with the same threads, precision, hint and shape, and report
    each pair's medians and ratio (generate: TTFT vs prefill, TPOT vs decode per token, with what each includes)."""
    from costbench.core.artifacts import default_cache_dir
    from costbench.harness.crosscheck import optimum_benchmark as ob
    from costbench.harness.crosscheck.vendor import TOOLS, crosscheck as run_crosscheck, openvino_breakdown, to_markdown
    from costbench.harness.machine.env import fingerprint

    names = sorted([t.name for t in TOOLS.values()] + [ob.TOOL])
    unknown = [n for n in tool if n not in names]
    if unknown:
        fail(f"--tool {', '.join(unknown)}: not a cross-check tool; choose from {', '.join(names)}")

    cache = cache_dir or default_cache_dir()
    suite = len(run_or_suite) == 1 and _is_suite(run_or_suite[0])
    if suite and not Path(run_or_suite[0]).is_file():
        fail(f"{run_or_suite[0]}: no such suite file")
    if only and not suite:
        fail("--only is for a suite file; a run's cases are all cross-checked")
    fp = fingerprint()
    with tempfile.TemporaryDirectory(prefix="costbench-crosscheck-") as tmp:
        workdir = keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if suite:
            targets, pre, gen_targets, gen_pre = _suite_targets(Path(run_or_suite[0]), only)
            env_ids: dict[str, str] = {}
        else:
            targets, pre, env_ids, gen_targets, gen_pre = _run_targets(run_or_suite, results)
        if tool:
            targets = [t for t in targets if TOOLS[t.backend_name].name in tool]
            pre = [p for p in pre if p.tool in tool]
            if ob.TOOL not in tool:
                gen_targets, gen_pre = [], []
        if not targets and not pre and not gen_targets and not gen_pre:
            fail("no case to cross-check: only " + ", ".join(sorted(TOOLS)) + " cases (single_stream, offline) "
                 f"and {ob.BACKEND} cases ({', '.join(ob.KINDS)}) have a tool" +
                 (f" (--tool {', '.join(tool)})" if tool else ""))
        for name in sorted({t.backend_name for t in targets}):
            why = TOOLS[name]().probe()
            if why:
                err.print(f"[yellow]{name}:[/] {escape(why)}; its cases are skipped", highlight=False)
        if gen_targets and ob.probe():
            err.print(f"[yellow]{ob.TOOL}:[/] {escape(ob.probe())}; its cases are skipped", highlight=False)
        pairs = run_crosscheck(targets, workdir, time_s=time_s, fresh=fresh or suite, repeat=repeat,
                               cache_dir=cache, here_env_id=fp["env_id"], run_env_ids=env_ids,
                               on_start=lambda t: err.print(f"{TOOLS[t.backend_name].name}: {t.label}",
                                                            highlight=False))
        pairs = pre + pairs
        gen_pairs = gen_pre + ob.crosscheck(gen_targets, workdir, time_s=time_s, fresh=fresh or suite, repeat=repeat,
                                            cache_dir=cache, here_env_id=fp["env_id"], run_env_ids=env_ids,
                                            on_start=lambda t: err.print(f"{ob.TOOL}: {t.label}", highlight=False),
                                            breakdown_rounds=breakdown_rounds if breakdown else None)
        if pairs:
            console.print(_render(pairs))
        for p in pairs:
            for note in p.notes:
                console.print(f"note: {p.target.label}: {note}", highlight=False, markup=False)
        if gen_pairs:
            console.print(_render_generative(gen_pairs))
        for p in gen_pairs:
            for note in p.notes:
                console.print(f"note: {p.gt.label}: {note}", highlight=False, markup=False)
            if p.status == "ok":
                console.print(_render_generative_breakdown(p))
            if p.interleaved:
                console.print("\n".join(ob.interleaved_markdown(p.gt.label, p.interleaved)), markup=False,
                              highlight=False)
        breakdowns = {}
        if breakdown:
            seen = set()
            for p in pairs:
                # One breakdown per compiled model: a case's scenarios share its artifact, options and batch.
                same = (p.target.artifact.get("key"), json.dumps(p.target.backend_options, sort_keys=True),
                        p.target.batch_size)
                if p.status == "ok" and p.target.backend_name == "openvino" and same not in seen:
                    seen.add(same)
                    err.print(f"breakdown: {p.target.label}", highlight=False)
                    bd = openvino_breakdown(p.target, rounds=breakdown_rounds)
                    breakdowns[p.target.label] = bd
                    console.print(_render_breakdown(p.target.label, bd))
        key = fp["key"]
        header = {"machine": f"{key.get('cpu_model')} ({key.get('physical_cores')} cores, "
                             f"{key.get('logical_cores')} threads), env_id {fp['env_id']}",
                  "command": "costbench " + " ".join(sys.argv[1:]),
                  "costbench numbers": "measured now" if suite or fresh else "from the run file"}
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps({**header, "pairs": [p.to_dict() for p in pairs],
                                            "breakdown": breakdowns,
                                            "generative_pairs": [p.to_dict() for p in gen_pairs]},
                                           indent=2, default=str))
            console.print(f"wrote {json_out}", highlight=False)
        if md_out:
            md_out.parent.mkdir(parents=True, exist_ok=True)
            title = ["# costbench vs the vendors' own tools", "", *(f"- {k}: {v}" for k, v in header.items())]
            page = to_markdown(pairs, header, breakdowns) if pairs else "\n".join(title) + "\n"
            if gen_pairs:
                page += "\n" + ob.to_markdown(gen_pairs)
            md_out.write_text(page)
            console.print(f"wrote {md_out}", highlight=False)
    if any(p.status == "failed" for p in [*pairs, *gen_pairs]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``crosscheck`` to the costbench CLI."""
    app.command()(crosscheck)
