"""The end-of-run table: per model, one row per backend x variant x batch size, in suite order."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from costbench.core.metrics import (CONTENDED_PROCESSES, GREEDY_PREFIX_AGREEMENT, OUTPUT_TOKEN_THROUGHPUT,
                                    PRECISION_TARGET, THROUGHPUT, TPOT, TTFT, catalogue)
from costbench.harness.reports.data import primary_series, row_details, scenarios_leading_with
from costbench.harness.suite.skips import can_never_run, never_run_note

_GROUP = ["backend", "variant", "device", "batch_size"]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) + suffix


def _value(group: pd.DataFrame, metric: str, scenario: str | None = None) -> pd.Series | None:
    rows = group[group["metric"] == metric]
    if scenario is not None:
        rows = rows[rows["scenario"] == scenario]
    return None if rows.empty else rows.iloc[0]


def _server_summary(g: pd.DataFrame) -> str:
    """'563 [540–590] qps' (a capacity search: estimate and 95% interval), '≥ 812 qps' (no rate shown to miss),
    or '500 qps: 3.1 ms ok' (fixed rate), from the server scenario's rows."""
    parts = []
    names = ["max_qps_within_slo", "capacity_qps", "capacity_ci_low", "capacity_ci_high", "slo_latency", "target_qps",
             "slo_met"]
    for scenario, rows in g[g["metric"].isin(names)].groupby("scenario", sort=False):
        v = dict(zip(rows["metric"], rows["value"]))
        if "capacity_qps" in v:
            high = f"{v['capacity_ci_high']:.0f}" if "capacity_ci_high" in v else "?"
            parts.append(f"{v['capacity_qps']:.0f} [{v.get('capacity_ci_low', 0.0):.0f}–{high}] qps")
        elif "max_qps_within_slo" in v:
            parts.append(f"≥ {v['max_qps_within_slo']:.0f} qps" if v["max_qps_within_slo"] > 0 else "SLO never met")
        elif "target_qps" in v:
            parts.append(f"{v['target_qps']:.0f} qps: {v.get('slo_latency', float('nan')):.2f} ms "
                         f"{'ok' if v.get('slo_met') == 1.0 else 'miss'}")
    return "; ".join(parts)


def _accuracy_cells(g: pd.DataFrame, labelled: bool) -> dict[str, str]:
    """Task accuracy against fp32 where the model has labels, parity otherwise, each under its own name.

    Labelled: "acc Δ", the change in task accuracy with its paired 95% interval. Unlabelled: "agree@conf",
    top-1 agreement with fp32 on the samples where fp32 is confident (the count in brackets), beside
    "top-1 agree" on every sample; neither is an accuracy change.
    """
    top1 = _value(g, "top1_agreement")
    cells = {"top-1 agree": _fmt(None if top1 is None else 100 * top1["value"], ".1f", "%")}
    if labelled:
        delta = _value(g, "task_accuracy_delta")
        text = _fmt(None if delta is None else 100 * delta["value"], "+.1f", " pt")
        if delta is not None and not pd.isna(delta.get("ci_low")) and not pd.isna(delta.get("ci_high")):
            text += f" [{100 * delta['ci_low']:+.1f}, {100 * delta['ci_high']:+.1f}]"
        cells["acc Δ"] = text
        return cells
    conf = _value(g, "top1_agreement_confident")
    n = row_details(conf).get("samples") if conf is not None else None
    cells["agree@conf"] = _fmt(None if conf is None else 100 * conf["value"], ".1f",
                               "%" + (f" ({n})" if n is not None else ""))
    return cells


def summary_tables(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Per model: latency p50 with its 95% CI, the share of its variance between processes, throughput, size,
    accuracy against fp32; plus numbered notes.

    Accuracy: where the model has labels, the change in task accuracy with its 95% interval ("acc Δ");
    where it has none, parity with fp32 under its own name ("agree@conf": top-1 agreement where fp32 is
    confident, with the sample count), never shown as an accuracy change.

    Latency comes from the first scenario whose kind leads with latency (single_stream), throughput from
    one that leads with throughput (offline; else the latency scenario's), per the metric catalogue. Cases that were skipped or failed point to a
    note with the reason.
    """
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    if df.empty:
        return tables, notes
    df = df.sort_values("seq", kind="stable") if "seq" in df else df
    # A fleet run measures on several machines: each machine's rows are its own lines.
    fleet = "env_id" in df and df["env_id"].nunique() > 1
    replicated = df["metric"].isin([s.process_share for s in catalogue().series.values()]).any()
    group = ["env_id", *_GROUP] if fleet else _GROUP
    for model, mdf in df.groupby("model", sort=False):
        lines = []
        labelled = (mdf["metric"] == "task_accuracy_delta").any()
        never = mdf[(mdf["status"] == "skipped") & mdf["reason"].map(can_never_run)]
        if not never.empty:
            combos = list(dict.fromkeys(f"{r.backend}×{r.variant}" for r in never.itertuples()))
            notes.append(f"{model}: " + never_run_note(len(combos), combos))
            mdf = mdf.drop(never.index)
        for key, g in mdf.groupby(group, sort=False, dropna=False):
            backend, variant, device, batch = key[-4:]
            line = {"machine": str(key[0])[:12]} if fleet else {}
            line.update({"backend": backend if device == "cpu" else f"{backend} ({device})", "variant": variant,
                         "batch": int(batch)})
            # Latency from the first scenario that leads with it, throughput from one that leads with throughput.
            latency_led = scenarios_leading_with(g, "latency")
            streams = g[g["scenario"].isin(latency_led[:1])]
            series = primary_series(g, latency_led[0]) if latency_led else None
            lat = None if series is None else _value(streams, series.p50)
            unstable = g[(g["metric"] == "unstable") & (g["value"] == 1.0)]
            mark = ("" if lat is None or lat["valid"] else "*") + ("~" if not unstable.empty else "")
            tokens = series is not None and series.name == TPOT.name  # a generate scenario leads: per-token times
            if tokens:
                ttft = _value(streams, TTFT.p50)
                line["TTFT ms"] = _fmt(None if ttft is None else ttft["value"], ".3f")
            line["TPOT ms" if tokens else "p50 ms"] = _fmt(None if lat is None else lat["value"], ".3f", mark)
            line["95% CI"] = "-" if lat is None else f"{lat['ci_low']:.3f}–{lat['ci_high']:.3f}"
            if replicated:  # the interval's relative half-width, against the precision the run asked for
                target = _value(streams, PRECISION_TARGET)
                width = None if lat is None or pd.isna(lat["ci_high"]) else lat["ci_high"] / lat["value"] - 1.0
                short = target is not None and width is not None and width > target["value"]
                line["±"] = _fmt(None if width is None else 100 * width, ".1f", "%" + ("!" if short else ""))
                if target is not None:  # processes were added to reach it: how many this case took
                    count = None if lat is None else (row_details(lat).get("processes") or {}).get("count")
                    line["n"] = "-" if count is None else str(count)
            if replicated:  # a column of dashes says nothing for a run measured in one process per case
                share = None if series is None else _value(streams, series.process_share)
                line["between"] = _fmt(None if share is None else 100 * share["value"], ".0f", "%")
            if tokens:  # output tokens per second of the throughput-led scenario (generate_offline), else this one
                tput = _value(g[g["scenario"].isin(scenarios_leading_with(g, "throughput"))], OUTPUT_TOKEN_THROUGHPUT)
                tput = tput if tput is not None else _value(streams, OUTPUT_TOKEN_THROUGHPUT)
                line["tok/s"] = _fmt(None if tput is None else tput["value"], ".1f")
            else:
                off = _value(g[g["scenario"].isin(scenarios_leading_with(g, "throughput"))], THROUGHPUT)
                off = off if off is not None else _value(streams, THROUGHPUT)
                line["samples/s"] = _fmt(None if off is None else off["value"], ".1f")
            server = _server_summary(g)
            if server:
                line["server"] = server
            size = _value(g, "model_size")
            line["MB"] = _fmt(None if size is None else size["value"] / 1e6, ".2f")
            line.update(_accuracy_cells(g, labelled))
            greedy = _value(g, GREEDY_PREFIX_AGREEMENT)
            if greedy is not None:  # parity of the continuation, never quality
                line["greedy"] = _fmt(100 * greedy["value"], ".1f", "%")
            cos = _value(g, "cosine_similarity_min")
            line["min cos"] = _fmt(None if cos is None else cos["value"], ".4f")
            problems = g[g["status"] != "ok"].drop_duplicates("scenario")
            status = []
            for r in problems.itertuples():
                reason = f"{r.status}: {r.reason}"
                if reason not in notes:
                    notes.append(reason)
                status.append(f"{r.status} [{notes.index(reason) + 1}]")
            busy = _value(g, CONTENDED_PROCESSES)
            if busy is not None:  # processes measured next to a noisy neighbour: say so, and what was done
                left = int((row_details(busy)).get("left_out", 0))
                reason = (f"{int(busy['value'])} process(es) measured while others took over a tenth of the CPU; "
                          + (f"{left} left out of the result" if left else "kept: too few clean ones remained"))
                if reason not in notes:
                    notes.append(reason)
                status.append(f"contended [{notes.index(reason) + 1}]")
            line["status"] = ", ".join(dict.fromkeys(status)) or "ok"
            lines.append(line)
        if lines:
            # A column only some rows have (the server's, in a suite where some cases search) keeps its place
            # among the others and shows "-" where a row has none.
            tables[str(model)] = pd.DataFrame(lines, columns=_merged_columns(lines)).fillna("-")
    return tables, notes


def _merged_columns(lines: list[dict[str, Any]]) -> list[str]:
    """Every key of ``lines``, each new one placed after the key before it in the row that has it."""
    columns: list[str] = []
    for line in lines:
        for i, key in enumerate(line):
            if key not in columns:
                before = list(line)[i - 1] if i else None
                columns.insert(columns.index(before) + 1 if before in columns else len(columns), key)
    return columns


def render(df: pd.DataFrame, console) -> None:
    """Print the per-model tables and the notes they refer to with rich."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    tables, notes = summary_tables(df)
    for model, table in tables.items():
        t = Table(title=model, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in table.columns:
            t.add_column(str(col), justify="left" if col in ("machine", "backend", "variant", "status") else "right",
                         no_wrap=True)
        for _, row in table.iterrows():
            t.add_row(*[str(v) for v in row.tolist()])
        console.print(t)
    columns = {c for table in tables.values() for c in table.columns}
    if "between" in columns and any((t["between"] != "-").any() for t in tables.values()):
        console.print("95% CI: across processes (t interval on the per-process medians); between: share of the latency "
                      "variance that lies between processes", highlight=False)
    if "±" in columns:
        targets = sorted(set(df.loc[df["metric"] == PRECISION_TARGET, "value"]))
        asked = (f"; ! short of the precision the run asked ({', '.join(f'±{100 * t:g}%' for t in targets)}) "
                 "within its max_processes" if targets else "")
        console.print(f"±: the 95% interval's half-width relative to the p50{asked}", highlight=False)
    if "acc Δ" in columns:
        console.print(escape("acc Δ: task accuracy minus fp32's on the same labelled samples [paired 95% interval]"),
                      highlight=False)
    if "agree@conf" in columns:
        console.print("agree@conf: parity, not accuracy: top-1 agreement with fp32 on the samples where fp32 is "
                      "confident (top-1 probability ≥ 0.5; their count in brackets)", highlight=False)
    for i, note in enumerate(notes, 1):
        console.print(escape(f"[{i}] {note}"), highlight=False, soft_wrap=True)  # notes quote 'pkg[extra]' hints
    if not df.empty and "valid" in df and (df["valid"] == False).any():  # noqa: E712 (pandas elementwise)
        console.print("* stopped at max_duration_s before min_count was met: the result is marked invalid")
    if not df.empty and ((df["metric"] == "unstable") & (df["value"] == 1.0)).any():
        console.print("~ unstable: spread far above this case's history on this machine (see the 'unstable' rows)")
