"""The end-of-run table: per model, one row per backend x variant x batch size."""

from __future__ import annotations

import math

import pandas as pd

_IDENT = ["model", "backend", "variant", "device", "batch_size"]


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _pick(group: pd.DataFrame, metric: str, scenario: str | None = None) -> pd.Series | None:
    rows = group[group["metric"] == metric]
    if scenario is not None:
        rows = rows[rows["scenario"] == scenario]
    return None if rows.empty else rows.iloc[0]


def summary_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model: p50 latency (single_stream), throughput (offline), size, accuracy change, status."""
    tables: dict[str, pd.DataFrame] = {}
    if df.empty:
        return tables
    for model, mdf in df.groupby("model", sort=False):
        lines = []
        for key, g in mdf.groupby(_IDENT[1:], sort=False, dropna=False):
            backend, variant, device, batch = key
            statuses = set(g["status"])
            line = {"backend": backend, "variant": variant, "device": device, "batch": int(batch)}
            if statuses == {"skipped"} or statuses == {"failed"}:
                line["status"] = f"{statuses.pop()}: {g['reason'].iloc[0]}"
                lines.append(line)
                continue
            lat = _pick(g, "latency_p50", None)
            line["p50 ms"] = "-" if lat is None else (
                f"{lat['value']:.3f} [{lat['ci_low']:.3f}, {lat['ci_high']:.3f}]" + ("" if lat["valid"] else " (invalid)"))
            off = g[(g["metric"] == "throughput") & (g["scenario"] == "offline")]
            if off.empty:
                off = g[g["metric"] == "throughput"]
            line["samples/s"] = _fmt(None if off.empty else float(off["value"].iloc[0]), ".1f")
            size = _pick(g, "model_size")
            line["size MB"] = _fmt(None if size is None else size["value"] / 1e6, ".2f")
            top1 = _pick(g, "top1_agreement")
            line["top-1 agree"] = _fmt(None if top1 is None else 100 * top1["value"], ".1f") + ("%" if top1 is not None else "")
            delta = _pick(g, "task_accuracy_delta")
            line["task acc Δ"] = "-" if delta is None else f"{100 * delta['value']:+.1f} pt"
            cos = _pick(g, "cosine_similarity_min")
            line["min cos"] = _fmt(None if cos is None else cos["value"], ".4f")
            others = statuses - {"ok"}
            bad = g[g["status"] != "ok"]
            line["status"] = "ok" if not others else "; ".join(
                f"{r.scenario}: {r.status}: {r.reason}" for r in bad.drop_duplicates("scenario").itertuples())
            lines.append(line)
        tables[str(model)] = pd.DataFrame(lines)
    return tables


def render(tables: dict[str, pd.DataFrame], console) -> None:
    """Print the tables with rich."""
    from rich.table import Table

    for model, table in tables.items():
        t = Table(title=f"{model}", title_justify="left", show_lines=False)
        for col in table.columns:
            t.add_column(str(col), overflow="fold", max_width=60 if col == "status" else None)
        for _, row in table.iterrows():
            t.add_row(*["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in row.tolist()])
        console.print(t)
