"""Regenerate the measured tables of README.md and the docs pages from the committed runs under ``results/reference/``.

Every generated block in README.md and in ``docs/**/*.md`` (the documentation site's pages) sits between two
markers that name the generator and its source::

    <!-- generated: pivot results/reference/2026-11-30-amd-epyc-avx2-2vcpu/compression -->
    ...the table, written by this script...
    <!-- end generated -->

``python scripts/readme_tables.py`` rewrites every block in place; ``--check`` rewrites nothing and exits 1
naming each block (and its file) that differs from what its source gives (the tests run it, so a table cannot
drift from its run). A block moves with its section from the README to a page and stays checked. A number
outside such a block names its run in the sentence beside it.

Generators (SOURCE is relative to the repository root):

- ``run-output FOLDER [--model NAME]... [--rows N]``: the end-of-run table ``costbench run`` printed, for the one
  run in FOLDER/runs; ``--model`` keeps only those models' tables, ``--rows`` the first N measured rows of each;
- ``cases FOLDER``: one Markdown row per measured case (p50 with its interval, size, parity and accuracy,
  load and first-inference time);
- ``pivot FOLDER``: per model, one row per variant and a p50 column per backend, with size and accuracy;
- ``crosscheck FILE.json``: costbench against the vendor's tool, from ``costbench crosscheck --json``;
- ``kernels-bench FILE.json``: the CPU GEMM benchmark, from ``costbench kernels bench --json``;
- ``gpu-models FILE.json``: the model cases of ``scripts/gpu_check.py``'s ``gpu_check.json``;
- ``report FOLDER ARGS...``: what ``costbench report`` prints for the run in FOLDER with those arguments;
- ``compare BASE NEW [--rows N]``: ``costbench compare`` of the runs in folders BASE and NEW, its Markdown with
  the N series that moved most and a count of the others' verdicts;
- ``dashboard FOLDER...``: what ``costbench dashboard`` prints for the runs of those folders together;
- ``serving FILE.json``: ``benchmarks/serving.py``'s tables, from its ``serving.json``;
- ``overhead FILE.json``: the harness's own cost, from ``benchmarks/overhead.py --json``.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from costbench.core.metrics import DEVICE_LATENCY, LATENCY

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- generated: (?P<gen>[\w-]+) (?P<src>\S+)(?P<args>(?: [^>]*?)?) -->\n)(?P<body>.*?)"
                   r"(<!-- end generated -->)", re.S)


class SourceError(ValueError):
    """A block's source is missing or unusable; the message names the block and the file."""


# ---------------------------------------------------------------------------------------------------- runs


def _run_file(folder: Path):
    """The one run file in ``folder/runs`` (a reference folder holds exactly one)."""
    from costbench.harness.results.runfile import RunFile

    files = sorted((folder / "runs").glob("*.jsonl"))
    if len(files) != 1:
        raise SourceError(f"{folder}/runs: expected exactly one run file, found {len(files)}")
    return RunFile(files[0])


def run_header(folder: Path) -> dict[str, Any]:
    """The header of the one run in ``folder/runs``, for generators that hand the run to costbench itself."""
    return _run_file(folder).read()[0]


def run_frame(folder: Path):
    """Long-form result rows of the one run in ``folder/runs``."""
    from costbench.harness.results.runfile import frame_of, rows_of

    run = _run_file(folder)
    header, cases = run.read()
    return header, cases, frame_of(rows_of(run, header, cases))


def _metric(g, name: str):
    rows = g[(g["metric"] == name) & g["value"].notna()]
    return None if rows.empty else rows.iloc[0]


def _details(row) -> dict[str, Any]:
    d = row["details"] if row is not None else None
    return json.loads(d) if isinstance(d, str) else (d or {})


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def _p50(g) -> str:
    # the single-stream latency, not an offline or server scenario's
    lat = g[(g["metric"] == LATENCY.p50) & g["value"].notna()]
    if lat.empty:
        return "-"
    r = lat.iloc[0]
    ci = "" if r["ci_low"] is None or math.isnan(r["ci_low"]) else f" [{_ms(r['ci_low'])}–{_ms(r['ci_high'])}]"
    return _ms(r["value"]) + ci + ("" if r["valid"] in (True, None) else "*")


def _pct(row) -> str:
    return "-" if row is None else f"{100 * row['value']:.1f}%"


def _accuracy_cell(g) -> str:
    """Task accuracy change with its interval where labelled, else agreement where fp32 is confident (parity)."""
    delta = _metric(g, "task_accuracy_delta")
    if delta is not None:
        return f"{100 * delta['value']:+.1f} pt [{100 * delta['ci_low']:+.1f}, {100 * delta['ci_high']:+.1f}]"
    conf = _metric(g, "top1_agreement_confident")
    if conf is not None:
        return f"{100 * conf['value']:.1f}% ({_details(conf).get('samples', '?')})"
    return "-"


def _num(row, spec: str, scale: float = 1.0) -> str:
    return "-" if row is None else format(row["value"] * scale, spec)


def _err(row) -> str:
    if row is None:
        return "-"
    v = row["value"]
    return f"{v:.1e}" if v < 0.01 else f"{v:.2g}"


def _measured_groups(df):
    """(model, variant, backend, rows) of each case that measured something, in run order."""
    ok = df[df["status"] == "ok"].sort_values("seq", kind="stable")
    for key, g in ok.groupby(["model", "variant", "backend"], sort=False):
        yield (*key, g)


def gen_cases(src: Path, args: list[str], root: Path = ROOT) -> str:
    _, _, df = run_frame(src)
    lines = ["| model | variant | backend | p50 ms [95% CI] | MB | top-1 vs fp32 | acc Δ / agree@conf | min cos "
             "| max abs err | load ms | 1st ms |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model, variant, backend, g in _measured_groups(df):
        lines.append(f"| {model} | {variant} | {backend} | {_p50(g)} | {_num(_metric(g, 'model_size'), '.2f', 1e-6)} "
                     f"| {_pct(_metric(g, 'top1_agreement'))} | {_accuracy_cell(g)} "
                     f"| {_num(_metric(g, 'cosine_similarity_min'), '.4f')} | {_err(_metric(g, 'max_abs_error'))} "
                     f"| {_num(_metric(g, 'load_time'), '.0f')} | {_num(_metric(g, 'first_inference'), '.1f')} |")
    return "\n".join(lines) + "\n"


def gen_pivot(src: Path, args: list[str], root: Path = ROOT) -> str:
    _, _, df = run_frame(src)
    out = []
    for model, mdf in df.groupby("model", sort=False):
        backends = list(dict.fromkeys(mdf["backend"]))
        labelled = (mdf["metric"] == "task_accuracy_delta").any()
        acc_head = "task accuracy (Δ vs fp32 [95% CI])" if labelled else "agree@conf (n) / top-1 vs fp32 / min cos"
        out.append(f"**{model}**\n")
        out.append("| variant | " + " | ".join(f"{b} ms" for b in backends) + f" | MB | {acc_head} |")
        out.append("| --- | " + " | ".join("---:" for _ in backends) + " | ---: | --- |")
        for variant, vdf in mdf.groupby("variant", sort=False):
            cells, sizes, acc = [], [], None
            for b in backends:
                g = vdf[(vdf["backend"] == b) & (vdf["status"] == "ok")]
                lat = _metric(g, LATENCY.p50)
                cells.append("–" if lat is None else _ms(lat["value"]) + ("" if lat["valid"] in (True, None) else "*"))
                size = _metric(g, "model_size")
                if size is not None:
                    sizes.append(f"{size['value'] / 1e6:.2f}")
                if acc is None and not g.empty and _metric(g, "top1_agreement") is not None:
                    acc = g
            if all(c == "–" for c in cells):
                reasons = sorted({r for r in vdf["reason"] if r})
                out.append(f"| {variant} | " + " | ".join(cells) + f" | | not measured: {'; '.join(reasons)[:160]} |")
                continue
            if acc is None:
                acc_cell = "-"
            elif labelled:
                ta = _metric(acc, "task_accuracy")
                acc_cell = f"{_pct(ta)} ({_accuracy_cell(acc)})"
            else:
                acc_cell = (f"{_accuracy_cell(acc)} / {_pct(_metric(acc, 'top1_agreement'))} / "
                            f"{_num(_metric(acc, 'cosine_similarity_min'), '.3f')}")
            out.append(f"| {variant} | " + " | ".join(cells) + f" | {'/'.join(dict.fromkeys(sizes))} | {acc_cell} |")
        out.append("")
    return "\n".join(out)


def gen_run_output(src: Path, args: list[str], root: Path = ROOT) -> str:
    """The end-of-run table, optionally cut down: ``--model NAME`` (repeatable) keeps those models' tables,
    ``--rows N`` the first N measured rows of each (in run order); a line says what was left out."""
    from rich.console import Console

    from costbench.harness.reports.run_table import render

    parser = argparse.ArgumentParser(prog="run-output block", add_help=False)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--rows", type=int, default=None)
    opts = parser.parse_args(args)
    header, cases, df = run_frame(src)
    models = list(dict.fromkeys(df["model"]))
    cut = []
    if opts.model:
        missing = [m for m in opts.model if m not in models]
        if missing:
            raise SourceError(f"{_shown(src)}: no model {', '.join(missing)} in the run (it has {', '.join(models)})")
        df = df[df["model"].isin(opts.model)]
        others = [m for m in models if m not in opts.model]
        if others:
            cut.append(f"(the tables of {', '.join(others)} are not shown)")
    if opts.rows is not None:
        keys = ["model", "backend", "variant", "batch_size"]
        ok = df[df["status"] == "ok"].sort_values("seq", kind="stable")
        shown: set[tuple] = set()
        left_out = 0
        for _, mdf in ok.groupby("model", sort=False):
            rows = list(dict.fromkeys(map(tuple, mdf[keys].itertuples(index=False))))
            shown.update(rows[:opts.rows])
            left_out += max(0, len(rows) - opts.rows)
        df = df[[s != "ok" or tuple(k) in shown for s, k in zip(df["status"], df[keys].itertuples(index=False))]]
        if left_out:
            cut.append(f"({left_out} more measured row(s) are not shown)")
    buf = io.StringIO()
    console = Console(file=buf, width=170, force_terminal=False, color_system=None, record=False)
    render(df, console)
    counts = {s: sum(1 for c in cases if c.get("status") == s) for s in ("ok", "skipped", "failed")}
    text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
    return (f"```\n{text}\n" + "".join(c + "\n" for c in cut)
            + f"run {header['run_id']}: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed\n```\n")


# ---------------------------------------------------------------------------------------------- JSON files


def _load_json(src: Path) -> Any:
    try:
        return json.loads(src.read_text())
    except FileNotFoundError:
        raise SourceError(f"{src}: no such file") from None
    except json.JSONDecodeError as exc:
        raise SourceError(f"{src}: not valid JSON: {exc}") from None


def gen_crosscheck(src: Path, args: list[str], root: Path = ROOT) -> str:
    data = _load_json(src)
    lines = ["| case | scenario | costbench | vendor tool | ratio | verdict |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for p in data["pairs"]:
        case = f"{p['model']} {p['variant']} ({p['backend']})"
        if p.get("status") != "ok" or p.get("ratio") is None:
            lines.append(f"| {case} | {p['scenario']} | - | - | - | {p.get('status')}: {p.get('reason', '')} |")
            continue
        cb, vendor = p["costbench"], p["vendor"]
        if p["scenario"] == "offline":  # throughput: samples per second
            ours, theirs = f"{cb['throughput']:.1f}/s", f"{vendor['throughput']:.1f}/s"
        else:
            ours, theirs = f"{cb['p50_ms']:.4g} ms", f"{vendor['median_ms']:.4g} ms"
        lines.append(f"| {case} | {p['scenario']} b{p['batch_size']} | {ours} | {theirs} ({p['tool']}) "
                     f"| {p['ratio']:.2f} | {p['verdict']} |")
    return "\n".join(lines) + "\n"


def gen_gpu_models(src: Path, args: list[str], root: Path = ROOT) -> str:
    data = _load_json(src)
    stage = next((v for k, v in data["stages"].items() if k.startswith("models")), None)
    if not stage or not isinstance(stage.get("result"), dict):
        raise SourceError(f"{src}: no models stage with results")
    lines = ["| model | variant | backend | p50 ms | device p50 ms | top-1 vs fp32 | peak device MiB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for c in stage["result"]["cases"]:
        if c.get("status") != "ok":
            continue
        m = c["metrics"]
        agree = m.get("top1_agreement")
        lines.append(f"| {c['model']} | {c['variant']} | {c['backend']} | {m[LATENCY.p50]:.3f} "
                     f"| {m.get(DEVICE_LATENCY.p50, float('nan')):.3f} "
                     f"| {'-' if agree is None else f'{100 * agree:.1f}%'} | {m.get('peak_device_memory', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def gen_kernels_bench(src: Path, args: list[str], root: Path = ROOT) -> str:
    data = _load_json(src)
    return _kernels_table(data)


def _kernels_table(data: dict[str, Any]) -> str:
    """The GEMM table ``costbench kernels bench`` prints, as Markdown, and the MiniLM line, from its JSON record."""
    from types import SimpleNamespace

    from costbench.commands.kernels import _VS_COLUMNS, RATIO_PAIRED, _gemm_cells, _minilm_rows, handed_over_note
    from costbench.kernels.bench import peak_name

    shapes, threads = data.get("shapes") or [], int(data["threads"])
    if not shapes:
        raise SourceError("kernels bench JSON: no 'shapes'")
    paired = data.get("ratio") == RATIO_PAIRED
    ours_name = next(iter(shapes[0]["series"]))  # the bench lists ours (its best path) first
    isa = ours_name.split()[-1]
    peak = float(data["peaks"][isa][str(threads)])
    notes = ["Ratios: median over rounds of each round's peer time / our time [95% bootstrap interval]."] if paired else []
    if any(peak_name(isa) in sh["series"] for sh in shapes):
        notes.append("% of peak: our median GOPS over the register-only loop's best rate, at the start of the run and "
                     "in the shape's rounds.")
    if data.get("vnni_max_k"):
        notes.append(handed_over_note(isa, int(data["vnni_max_k"])) + ".")
    lines = [" ".join(notes), ""] if notes else []
    lines += [f"| shape (M×K×N) | ours ({isa}) GOPS | % of {threads}-thread peak | "
              + " | ".join(c for c, _ in _VS_COLUMNS) + " | other paths GOPS |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in _VS_COLUMNS) + " | --- |"]
    for sh in shapes:
        series = {nm: SimpleNamespace(times=s["times_s"], note=s.get("note", ""), ops=s.get("ops", 0.0))
                  for nm, s in sh["series"].items()}
        cells = _gemm_cells(2.0 * sh["m"] * sh["k"] * sh["n"], series, ours_name, peak, paired)
        lines.append(f"| {sh['m']}×{sh['k']}×{sh['n']} ({sh['label']}) | " + " | ".join(cells) + " |")
    r = data.get("minilm")
    if r:
        lines.append("")
        lines.append(f"all-MiniLM-L6-v2, batch {r['batch']} × {r['seq_len']} tokens, {r['int8_layers']} Linear layers "
                     f"on {r['isa']}, same run{' (speed-ups: median of per-round ratios)' if paired else ''}:")
        lines.append("")
        lines.append("| model | median ms | speed-up vs torch dynamic int8 [95% CI] | mean / min cos vs fp32 |")
        lines.append("| --- | ---: | ---: | ---: |")
        for name, ms, speedup, mean_cos, min_cos in _minilm_rows(r, paired):
            lines.append(f"| {name} | {ms} | {speedup} | {mean_cos} / {min_cos} |")
    return "\n".join(lines) + "\n"


def gen_report(src: Path, args: list[str], root: Path = ROOT) -> str:
    """What ``costbench report`` prints for the one run in FOLDER with the marker's extra arguments."""
    import tempfile

    header = run_header(src)
    with tempfile.TemporaryDirectory() as tmp:
        text = _costbench(["report", header["run_id"], "-r", str(src), "-o", tmp, *args],
                          f"costbench report on {_shown(src)}").replace(tmp, "report")
    shown = " ".join(["costbench report", header["run_id"][:15], "-r", _shown(src), *map(shlex.quote, args)])
    lines = [line.rstrip() for line in text.splitlines()]
    return "```\n$ " + shown + "\n" + "\n".join(lines).strip("\n") + "\n```\n"


def _shown(src: Path) -> str:
    """A path as the marker names it: from results/ on, whichever checkout (or copy) the README is in."""
    return str(src)[str(src).rfind("results/"):] if "results/" in str(src) else str(src)


def _costbench(args: list[str], what: str) -> str:
    """stdout of ``costbench ARGS`` run from the repository root, plain text at 200 columns."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "costbench.commands.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    if proc.returncode != 0:
        raise SourceError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def gen_compare(src: Path, args: list[str], root: Path = ROOT) -> str:
    """``costbench compare`` of the one run in BASE (the source) and the one in NEW (first argument), abridged."""
    import tempfile

    parser = argparse.ArgumentParser(prog="compare block", add_help=False)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rows", type=int, default=8)
    opts = parser.parse_args(args)
    new = root / opts.new
    base_header, new_header = run_header(src), run_header(new)
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "compare.md"
        _costbench(["compare", base_header["run_id"], new_header["run_id"], "-r", str(src), "-r", str(new),
                    "--markdown", str(md)], f"costbench compare {_shown(src)} {_shown(new)}")
        lines = md.read_text().splitlines()
    table = [i for i, line in enumerate(lines) if line.startswith("| ")]
    if not table:
        raise SourceError(f"costbench compare {_shown(src)} {_shown(new)}: no series compared")
    head, rows, tail = lines[1:table[0] + 2], lines[table[0] + 2:table[-1] + 1], lines[table[-1] + 1:]

    def moved(row: str) -> float:  # |log ratio|, from the "ratio (95% CI)" cell
        return abs(math.log(float(row.split("|")[4].split()[0])))

    ranked = sorted(rows, key=moved, reverse=True)
    shown, cut = ranked[:opts.rows], ranked[opts.rows:]
    verdicts = [re.search(r"\*\*(\w+)\*\*", r)[1] for r in cut]
    tally = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
    cmd = (f"$ costbench compare {base_header['run_id'][:15]} {new_header['run_id'][:15]} -r {_shown(src)} "
           f"-r {_shown(opts.new)} --markdown compare.md")
    note = [f"| … {len(cut)} more series, each moved less ({tally}) | | | | | | | | |"] if cut else []
    return "```\n" + cmd + "\n```\n\n" + "\n".join([*head, *shown, *note, *tail]).strip("\n") + "\n"


def gen_dashboard(src: Path, args: list[str], root: Path = ROOT) -> str:
    """What ``costbench dashboard`` prints for the runs of the source folder and the folders in ``args`` together."""
    import shutil
    import tempfile

    folders = [src, *((root / a) for a in args)]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs").mkdir()
        for folder in folders:
            files = sorted((folder / "runs").glob("*.jsonl"))
            if not files:
                raise SourceError(f"{_shown(folder)}/runs: no run files")
            for f in files:
                shutil.copy(f, Path(tmp) / "runs" / f.name)
        text = _costbench(["dashboard", tmp, "-o", str(Path(tmp) / "site")], "costbench dashboard")
        text = text.replace(str(Path(tmp) / "site"), "site")
    lines = [line.rstrip() for line in text.splitlines()]
    shown = "costbench dashboard RESULTS -o site    # RESULTS: the runs of " + ", ".join(map(_shown, folders))
    return "```\n$ " + shown + "\n" + "\n".join(lines).strip("\n") + "\n```\n"


def _benchmark_markdown(script: str, data: dict[str, Any], drop_title: bool) -> str:
    """A benchmark's own ``markdown(data)`` (benchmarks/<script>.py), its headings made bold."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{script}_benchmark", ROOT / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.markdown(data).splitlines()[1 if drop_title else 0:]
    out = [f"**{line[3:]}**" if line.startswith("## ") else line for line in lines]
    return "\n".join(out).strip("\n") + "\n"


def gen_serving(src: Path, args: list[str], root: Path = ROOT) -> str:
    """The tables ``benchmarks/serving.py`` wrote to serving.md, from its serving.json (without its title)."""
    return _benchmark_markdown("serving", _load_json(src), drop_title=True)


def gen_capacity(src: Path, args: list[str], root: Path = ROOT) -> str:
    """The tables ``benchmarks/capacity.py`` wrote to capacity.md, from its capacity.json."""
    return _benchmark_markdown("capacity", _load_json(src), drop_title=False)


def gen_overhead(src: Path, args: list[str], root: Path = ROOT) -> str:
    """The harness's own cost, from ``benchmarks/overhead.py --json``."""
    r = _load_json(src)["results"]
    try:
        rows = [
            ("single_stream loop overhead per query (no-op session)",
             f"{r['loop_overhead_per_query_us']:.2f} µs (timer floor {r['noop_timed_region_median_us']:.2f} µs)",
             "< 5 µs"),
            ("reported median vs. a known 1 ms query", f"{r['busy_1ms_median_error_pct']:+.2f}%", "within 1%"),
            ("reported median vs. known 0.1 ms / 10 ms",
             f"{r['busy_0.1ms_median_error_pct']:+.2f}% / {r['busy_10ms_median_error_pct']:+.2f}%", "—"),
            ("server scheduler lateness p99 (max) at 100 QPS (Poisson)",
             f"{r['server_100qps_lateness_p99_us']:.1f} µs ({r['server_100qps_lateness_max_us']:.0f} µs)", "—"),
            ("server scheduler lateness p99 (max) at 1,000 QPS (Poisson)",
             f"{r['server_1000qps_lateness_p99_us']:.1f} µs ({r['server_1000qps_lateness_max_us']:.0f} µs)",
             "< 100 µs"),
        ]
    except KeyError as exc:
        raise SourceError(f"{src}: no {exc} in 'results' (written by an older benchmarks/overhead.py?)") from None
    lines = ["| measurement | result | goal |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[..., str]] = {
    "run-output": gen_run_output,
    "cases": gen_cases,
    "pivot": gen_pivot,
    "crosscheck": gen_crosscheck,
    "kernels-bench": gen_kernels_bench,
    "gpu-models": gen_gpu_models,
    "report": gen_report,
    "compare": gen_compare,
    "dashboard": gen_dashboard,
    "serving": gen_serving,
    "capacity": gen_capacity,
    "overhead": gen_overhead,
}


def regenerate(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """README text with every generated block rebuilt from its source, and the labels of blocks that changed."""
    changed: list[str] = []

    def one(m: re.Match) -> str:
        gen, src = m["gen"], m["src"]
        label = f"{gen} {src}"
        if gen not in GENERATORS:
            raise SourceError(f"block '{label}': unknown generator {gen!r} (known: {', '.join(GENERATORS)})")
        path = root / src
        if not path.exists():
            raise SourceError(f"block '{label}': {src} does not exist")
        body = GENERATORS[gen](path, shlex.split(m["args"]), root=root)
        if body != m["body"]:
            changed.append(label)
        return m.group(1) + body + m.group(6)

    return BLOCK.sub(one, text), changed


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The files whose blocks are kept: README.md and every page of the documentation site (docs/**/*.md)."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="Markdown files to regenerate (default: README.md and docs/**/*.md under --root)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the folder blocks' sources are relative to (default: this repository)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="one file whose sources are relative to its own folder (as README.md's are)")
    args = parser.parse_args(argv)
    if args.readme is not None:
        root, files = args.readme.resolve().parent, [args.readme]
    else:
        root = args.root.resolve()
        files = args.files or markdown_files(root)
    texts = {f: f.read_text() for f in files}
    new: dict[Path, str] = {}
    changed: dict[Path, list[str]] = {}
    try:
        for f, text in texts.items():
            new[f], changed[f] = regenerate(text, root)
    except SourceError as exc:
        print(f"error: {_name(f, root)}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for f, labels in changed.items():
            for label in labels:
                print(f"out of date: {label} (in {_name(f, root)})")
            if labels:
                diff = difflib.unified_diff(texts[f].splitlines(), new[f].splitlines(), _name(f, root), "regenerated",
                                            lineterm="", n=1)
                print("\n".join(list(diff)[:80]))
        return 1 if any(changed.values()) else 0
    for f, labels in changed.items():
        if labels:
            f.write_text(new[f])
        print(f"{_name(f, root)}: {len(BLOCK.findall(texts[f]))} generated block(s); rewrote {len(labels)}"
              + (f": {', '.join(labels)}" if labels else ""))
    return 0


def _name(f: Path, root: Path) -> str:
    try:
        return str(f.resolve().relative_to(root))
    except ValueError:
        return str(f)


if __name__ == "__main__":
    sys.exit(main())
