"""CLI commands for reports: report, compare, dashboard, prices, pytest-benchmark import/export.

``register(app)`` adds them to the ``costbench`` typer app; heavy imports wait until a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from costbench.commands.common import fail

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_RESULTS = Path("results")
REFERENCE_RESULTS = DEFAULT_RESULTS / "reference"  # committed reference runs from real hardware
RESULTS_HELP = ("Results folder to read (repeatable). Default: results/, plus every committed reference folder "
                "under results/reference/.")


def _warn(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


STORE_HELP = ("Team store to read, postgresql://USER@HOST:PORT/DB (repeatable; the password from ~/.pgpass, "
              "PGPASSWORD or the URL). With --store, results/ is read only when --results names it.")


def _dirs(results: list[Path], stores: list[str] | None = None) -> list:
    if stores:
        from costbench.harness.results.store import is_url, redact

        bad = [redact(s) for s in stores if not is_url(s)]
        if bad:
            fail(f"--store {bad[0]}: expected a PostgreSQL URL, postgresql://USER@HOST:PORT/DB")
        return [*results, *stores]
    if results:
        return results
    return [DEFAULT_RESULTS, *reference_dirs()]


def reference_dirs(root: Path = REFERENCE_RESULTS) -> list[Path]:
    """Every committed reference results folder under ``root``: each folder with a ``runs/`` folder of its own
    (``results/reference/<date>-<machine>/<what>/runs/``)."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("**/runs") if p.is_dir())


def _select(refs: list[str], results: list[Path], stores: list[str] | None = None):
    """(selection of the referenced runs, their ids in the order given); errors exit with a message."""
    from costbench.harness.reports.data import RunNotFound, list_all_runs, load_selection, resolve_runs
    from costbench.harness.results.store import StoreError, redact

    dirs = _dirs(results, stores)
    try:
        runs = list_all_runs(dirs)
        if runs.empty:
            fail(f"no runs in {', '.join(redact(str(d)) for d in dirs)} (costbench run SUITE --out {dirs[0]})")
        ids = resolve_runs(refs, runs)
        return load_selection(dirs, ids, runs), ids
    except (FileNotFoundError, RunNotFound, StoreError) as exc:
        fail(str(exc))


def report(
    runs: list[str] = typer.Argument(..., help="Run ids (or unique prefixes, or 'last') to put in one report."),
    results: list[Path] = typer.Option([], "--results", "-r", help=RESULTS_HELP),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for report.html, report.md, report.csv."),
    slo_ms: Optional[float] = typer.Option(None, "--slo-ms", help="Latency SLO in ms (at --latency)."),
    max_drop: Optional[float] = typer.Option(1.0, "--max-drop", help="Task-accuracy budget (models with labels): "
                                             "largest drop in task accuracy against fp32, in percentage points."),
    max_parity_loss: Optional[float] = typer.Option(1.0, "--max-parity-loss", help="Parity budget (models without "
                                                    "labels): largest top-1 disagreement with fp32 on the samples "
                                                    "where fp32 is confident, in percentage points."),
    infer_machine: bool = typer.Option(True, "--infer-machine/--no-infer-machine", help="Infer a run's machine type "
                                       "from its fingerprint when nothing assigns one (the report says so)."),
    latency: str = typer.Option("p99", "--latency", help="Single-stream percentile for the SLO and frontier: p50 or p99."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Price table TOML laid over the defaults "
                                          "(`costbench prices --toml` prints them)."),
    machine_type: list[str] = typer.Option([], "--machine-type", "-m", help="Machine type the runs ran on: TYPE for "
                                           "every unassigned run, or ENV_ID=TYPE / RUN_ID=TYPE; repeatable."),
    guarantee: bool = typer.Option(False, "--guarantee", help="Bill a searched server capacity at its 95% "
                                   "interval's lower end instead of its estimate."),
    store: list[str] = typer.Option([], "--store", help=STORE_HELP),
) -> None:
    """Hardware-selection report: cost, Pareto frontier and a recommendation per model (HTML, Markdown, CSV)."""
    from costbench.harness.reports.hardware import Criteria, build_report, run_environments
    from costbench.harness.reports.hardware_pages import terminal_summary, write_report
    from costbench.harness.reports.prices import PriceError, load_prices

    if max_drop is not None and max_drop < 0:
        fail(f"--max-drop {max_drop}: the task-accuracy budget is a drop in percentage points, >= 0")
    if max_parity_loss is not None and max_parity_loss < 0:
        fail(f"--max-parity-loss {max_parity_loss}: the parity budget is in percentage points, >= 0")
    if latency not in ("p50", "p99"):
        fail(f"--latency {latency!r}: expected p50 or p99")
    sel, ids = _select(runs, results, store)
    try:
        machines = [(r["run_id"], env_id) for r, env_id, _ in run_environments(sel.runs, sel.results)]
        table = load_prices(prices).with_assignments(machine_type, machines)
        rep = build_report(sel, table, Criteria(slo_ms=slo_ms, max_drop_pt=max_drop, latency=latency,
                                                   max_parity_loss_pt=max_parity_loss, infer_machines=infer_machine,
                                                   guarantee=guarantee))
    except PriceError as exc:
        fail(str(exc))
    paths = write_report(rep, out)
    # The terminal gets the decisions; the tables are in the files.
    for line in rep.notes + terminal_summary(rep):
        console.print(line, highlight=False, soft_wrap=True, markup=False)  # notes name "[assign]"
    console.print(f"wrote {paths['html']}, {paths['markdown']}, {paths['csv']}", highlight=False)


def compare(
    base: str = typer.Argument(..., help="Baseline run id (or unique prefix)."),
    new: str = typer.Argument(..., help="New run id (or unique prefix, or 'last')."),
    results: list[Path] = typer.Option([], "--results", "-r", help=RESULTS_HELP),
    threshold: float = typer.Option(0.05, "--threshold", help="Practical threshold: a change must move the median "
                                    "by at least this fraction (0.05 = 5%) as well as be significant."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when any series regressed."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the comparison as JSON."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write it as Markdown."),
    store: list[str] = typer.Option([], "--store", help=STORE_HELP),
) -> None:
    """Compare two runs series by series (only cases in both), with the processes as replicates: ratio with CI,
    Welch p on log per-process medians (single-process runs: Mann–Whitney on samples, said so), BH, verdict."""
    from costbench.harness.reports.compare import compare_runs

    sel, ids = _select([base, new], results, store)
    if len(ids) < 2:
        fail(f"BASE and NEW are the same run ({ids[0]})")
    try:
        result = compare_runs(sel, ids[0], ids[1], threshold=threshold)
    except ValueError as exc:
        fail(str(exc))
    show_comparison(result, json_out, markdown_out, fail_on_regression)


def show_comparison(result, json_out: Optional[Path] = None, markdown_out: Optional[Path] = None,
                    fail_on_regression: bool = False) -> None:
    """Print a :class:`~costbench.harness.reports.compare.CompareResult` (and write it); exit 1 on a regression
    when asked."""
    from rich.table import Table

    from costbench.harness.reports.compare import paired_note, render_markdown

    if result.env_warning:
        _warn(result.env_warning)
        for d in result.env_diffs:
            err.print(f"  {d}", highlight=False)
    t = Table(title=f"{result.base['run_id']} → {result.new['run_id']}", title_justify="left")
    for col in ("series", "base", "new", "ratio", "95% CI", "p", "q", "verdict", "why"):
        t.add_column(col, justify="right" if col in ("base", "new", "ratio", "p", "q") else "left",
                     overflow="fold")
    style = {"regressed": "bold red", "improved": "bold green", "unstable": "bold yellow", "unchanged": "dim"}
    for s in result.series:
        t.add_row(s.label, f"{s.base_median:.4g}", f"{s.new_median:.4g}", f"{s.ratio:.3f}",
                  f"{s.ratio_ci_low:.3f}–{s.ratio_ci_high:.3f}", f"{s.p_value:.2g}", f"{s.q_value:.2g}",
                  f"[{style[s.verdict]}]{s.verdict}[/]", s.reason)
    console.print(t)
    if result.paired:
        console.print(paired_note(result.paired), highlight=False)
    fallback = sum(s.method == "samples" for s in result.series)
    if fallback:
        _warn(f"{fallback} of {len(result.series)} series were measured in a single process in BASE or NEW: tested on "
              "raw samples, which cannot see the variation between process launches (over-confident; measure "
              "with processes >= 2)")
    if not result.series:
        _warn("the two runs share no series with raw samples: nothing was compared")
    for title, items in (("only in BASE", result.only_base), ("only in NEW", result.only_new)):
        if items:
            console.print(f"{len(items)} series {title}, not compared", highlight=False)
    c = result.counts()
    console.print(f"{c['regressed']} regressed, {c['improved']} improved, {c['unstable']} unstable, "
                  f"{c['unchanged']} unchanged (threshold ±{result.threshold:.0%}, BH q < {result.alpha:g})",
                  highlight=False)
    if json_out:
        json_out.write_text(json.dumps(result.as_dict(), indent=1, default=str))
    if markdown_out:
        markdown_out.write_text(render_markdown(result))
    if fail_on_regression and c["regressed"]:
        raise typer.Exit(1)


def dashboard(
    results_dir: Path = typer.Argument(DEFAULT_RESULTS, help="Results folder whose history to show."),
    out: Path = typer.Option(Path("site"), "--out", "-o", help="Folder for index.html, changes.csv, dashboard.json."),
    threshold: float = typer.Option(0.05, "--threshold", help="Practical threshold for change points (fraction)."),
    store: Optional[str] = typer.Option(None, "--store", help="Team store whose history to show instead of "
                                        "RESULTS_DIR, postgresql://USER@HOST:PORT/DB."),
) -> None:
    """History of every series across runs, with change points, environment changes and filters."""
    from costbench.harness.reports.dashboard import build_dashboard, changes_frame, write_dashboard
    from costbench.harness.reports.data import load_selection
    from costbench.harness.results.store import StoreError, redact

    # The default folder brings the committed reference runs with it, as for report and compare.
    sources = _dirs([], [store]) if store else _dirs([] if results_dir == DEFAULT_RESULTS else [results_dir])
    try:
        sel = load_selection(sources)
    except (FileNotFoundError, StoreError) as exc:
        fail(str(exc))
    if sel.runs.empty:
        fail(f"{redact(store)}: no runs yet (costbench store push RESULTS_DIR --to URL)" if store else
              f"{results_dir}: no runs yet (costbench run SUITE --out {results_dir})")
    dash = build_dashboard(sel, threshold=threshold)
    paths = write_dashboard(dash, out)
    changes = changes_frame(dash)
    reg = changes[changes["verdict"] == "regressed"]
    console.print(f"{len(sel.runs)} run(s), {len(dash.series)} series, {len(changes)} change point(s), "
                  f"{len(reg)} regression(s)", highlight=False)
    for r in reg.to_dict("records"):
        console.print(f"  regressed: {r['series']} ×{r['ratio']:.3f} ({r['ratio_ci_low']:.3f}–{r['ratio_ci_high']:.3f}) "
                      f"between {r['last_good_run']} and {r['first_bad_run']}", highlight=False)
    console.print(f"wrote {paths['html']}, {paths['csv']}, {paths['json']}", highlight=False)


def _hardware(m) -> str:
    """What a machine type runs on, short: its GPUs and host vendor, or its CPU."""
    if m.gpu:
        return m.gpu.replace("NVIDIA ", "") + (f" ({m.cpu_vendor} host)" if m.cpu_vendor else "")
    return m.description or m.cpu_vendor


def _machine_rows(machines: list, currency: str, pick: str = "") -> "Table":
    from rich.table import Table

    t = Table(title_justify="left")
    cols = [*([""] if pick else []), "type", "vCPUs", "GiB", "hardware", "ISA", f"{currency}/h", "region", "as of"]
    for col in cols:
        t.add_column(col, justify="right" if col in ("vCPUs", "GiB", f"{currency}/h") else "left", overflow="fold")
    for m in machines:
        t.add_row(*(["*" if m.name == pick else ""] if pick else []), m.name, str(m.vcpus or ""),
                  f"{m.memory_gib:g}" if m.memory_gib else "", _hardware(m), " ".join(m.isa),
                  f"{'≈' if m.approximate else ''}{m.hourly:g}", m.region, m.as_of)
    return t


def _family_rows(machines: list, currency: str) -> "Table":
    from rich.table import Table

    t = Table(title_justify="left")
    for col in ("family or type", "vCPUs", "GiB", "hardware", "ISA", f"{currency}/h", "region", "as of"):
        t.add_column(col, justify="right" if col in ("GiB", f"{currency}/h") else "left", overflow="fold")
    groups: dict[str, list] = {}
    for m in machines:
        groups.setdefault(m.family or m.name, []).append(m)
    for key, ms in groups.items():
        ms = sorted(ms, key=lambda m: (m.vcpus or 0, m.hourly))
        first, last = ms[0], ms[-1]
        sizes = f"{first.vcpus}–{last.vcpus} ({len(ms)} sizes)" if len(ms) > 1 else str(first.vcpus or "")
        per = (f"{first.memory_gib / first.vcpus:g}/vCPU" if first.family and first.memory_gib and first.vcpus
               else f"{first.memory_gib:g}" if first.memory_gib else "")
        price = f"{first.hourly:g}" + (f"–{last.hourly:g}" if len(ms) > 1 else "")
        t.add_row(key, sizes, per, _hardware(first), " ".join(first.isa), ("≈" if first.approximate else "") + price,
                  first.region, first.as_of)
    return t


def _read_fingerprint(path: Path) -> dict:
    """A fingerprint from `costbench env --json` output, or a file that holds one under "fingerprint"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"--fingerprint {path}: cannot read it as JSON ({exc}); write one with `costbench env --json > {path}`")
    data = data.get("fingerprint", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        fail(f"--fingerprint {path}: no fingerprint in it (expected `costbench env --json` output, with a \"key\")")
    return data


def prices(
    toml: bool = typer.Option(False, "--toml", help="Print the default price table as TOML, to copy and edit: "
                              "costbench prices --toml > prices.toml."),
    cloud: Optional[str] = typer.Option(None, "--cloud", help="Only this cloud: aws, gcp, azure (the part of the "
                                        "type's name before '/')."),
    vcpus: Optional[int] = typer.Option(None, "--vcpus", help="Only types with this many vCPUs."),
    cpu: Optional[str] = typer.Option(None, "--cpu", help="Only types with this CPU: amd, intel, arm, or a word of "
                                      "its description (graviton, genoa, amx)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Only types with this GPU (H100, H200, 'A100 80'); "
                                      "'any' for every GPU type, 'none' for CPU types only."),
    all_sizes: bool = typer.Option(False, "--all", help="List every size; without a filter the table has one row per "
                                   "family."),
    this_machine: bool = typer.Option(False, "--this-machine", "--match", help="The type `costbench report` infers "
                                      "for this machine, how sure it is, and what else fits."),
    fingerprint_file: Optional[Path] = typer.Option(None, "--fingerprint", help="Infer for a recorded fingerprint "
                                                    "(`costbench env --json` output, or a reference env.json) "
                                                    "instead of this machine."),
    prices_file: Optional[Path] = typer.Option(None, "--prices", help="Price table TOML laid over the defaults, as "
                                               "for `costbench report --prices`."),
) -> None:
    """Show the price table (filter it by cloud, vCPUs, CPU, GPU), the type this machine would be priced as
    (--this-machine), or print the defaults as TOML to copy (--toml)."""
    from costbench.harness.reports.prices import PriceError, default_prices_text, infer_machine, load_prices, \
        select_machines

    if toml:
        if any(x is not None for x in (cloud, vcpus, cpu, gpu, fingerprint_file, prices_file)) or this_machine:
            fail("--toml prints the whole default table, to copy and edit; it takes no filter, --prices or "
                 "--this-machine (drop --toml to see a filtered table)")
        sys.stdout.write(default_prices_text())
        return
    try:
        table = load_prices(prices_file)
    except PriceError as exc:
        fail(str(exc))
    cur = table.currency
    if this_machine or fingerprint_file:
        if fingerprint_file:
            fp, what = _read_fingerprint(fingerprint_file), f"fingerprint {fingerprint_file}"
        else:
            from costbench.harness.machine.env import fingerprint

            fp, what = fingerprint(), "this machine"
        from costbench.harness.reports.prices import cpu_generation

        key, mem = fp.get("key", {}), (fp.get("recorded") or {}).get("memory_bytes")
        gpus = ", ".join(f"{g.get('name')} ({g.get('memory')})" for g in key.get("gpus") or []) or "no GPU"
        gen = cpu_generation(key)
        console.print(f"{what}: env {str(fp.get('env_id', ''))[:12]}, CPU '{key.get('cpu_model')}'"
                      f"{f' ({gen})' if gen else ''}, {key.get('machine', '?')}, {key.get('logical_cores')} logical "
                      f"cores, {mem / 2**30:.1f} GiB, {gpus}" if mem else f"{what}: CPU '{key.get('cpu_model')}'",
                      highlight=False, markup=False, soft_wrap=True)
        guess = infer_machine(fp, table)
        console.print(guess.describe(str(fp.get("env_id", "")), cur), highlight=False, markup=False, soft_wrap=True)
        if guess.options:
            console.print(_machine_rows(list(guess.options), cur, pick=guess.machine.name))
            console.print("* the pick. Ranked by the host CPU (GPU types), then memory that matches this machine's, "
                          "then a firm price over an approximate (≈) one, then the cheapest.",
                          highlight=False, markup=False, soft_wrap=True)
        return
    rows = select_machines(table, cloud=cloud, vcpus=vcpus, cpu=cpu, gpu=gpu)
    if not rows:
        clouds = ", ".join(sorted({m.cloud for m in table.machines.values() if m.cloud}))
        fail(f"no machine type in the price table passes these filters (clouds: {clouds}; `costbench prices` "
             "lists the families)")
    filtered = any(x is not None for x in (cloud, vcpus, cpu, gpu))
    console.print(_machine_rows(rows, cur) if filtered or all_sizes else _family_rows(rows, cur))
    families, single = len({m.family for m in rows if m.family}), sum(not m.family for m in rows)
    console.print(f"{len(rows)} machine type(s): the sizes of {families} families and {single} single types; {cur} "
                  f"per hour, on-demand list prices for the region shown; ≈: approximate, check it. Sources: "
                  f"{', '.join(table.sources)}.",
                  highlight=False, markup=False, soft_wrap=True)
    if not filtered and not all_sizes:
        console.print("Every size: --all, or filter with --cloud, --vcpus, --cpu, --gpu. This machine's type: "
                      "--this-machine. To edit: costbench prices --toml > prices.toml, then "
                      "costbench report --prices prices.toml.", highlight=False, markup=False, soft_wrap=True)


pb_app = typer.Typer(no_args_is_help=True, help="pytest-benchmark JSON into the store and out of it.")


@pb_app.command("import")
def pb_import(
    files: list[Path] = typer.Argument(..., help="pytest-benchmark JSON files (pytest --benchmark-json=FILE)."),
    out: Path = typer.Option(DEFAULT_RESULTS, "--out", "-o", help="Results folder to add the runs to."),
) -> None:
    """Add pytest-benchmark results to a results folder, one run per file."""
    from costbench.harness.reports.interop_pytest_benchmark import InteropError, import_file
    from costbench.harness.results.store import Store

    for f in files:
        if not f.is_file():
            fail(f"{f}: no such file")
        try:
            run_id = import_file(f, out)
        except InteropError as exc:
            fail(str(exc))
        console.print(f"imported {f} as run {run_id}", highlight=False)
    Store(out).sync()


@pb_app.command("export")
def pb_export(
    run: str = typer.Argument(..., help="Run id (or unique prefix, or 'last')."),
    results: list[Path] = typer.Option([], "--results", "-r", help=RESULTS_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default: stdout)."),
    data: bool = typer.Option(True, "--data/--no-data", help="Include every raw sample."),
) -> None:
    """Write a run's latency series as pytest-benchmark JSON (readable by `pytest-benchmark compare`)."""
    from costbench.harness.reports.interop_pytest_benchmark import export_run

    sel, ids = _select([run], results)
    doc = export_run(sel, ids[0], include_data=data)
    text = json.dumps(doc, indent=1, default=str)
    if out:
        out.write_text(text)
        console.print(f"wrote {len(doc['benchmarks'])} benchmark(s) of run {ids[0]} to {out}", highlight=False)
    else:
        sys.stdout.write(text + "\n")


def register(app: typer.Typer) -> None:
    """Add the report commands to the costbench CLI."""
    app.command()(report)
    app.command()(compare)
    app.command()(dashboard)
    app.command()(prices)
    app.add_typer(pb_app, name="pytest-benchmark")
