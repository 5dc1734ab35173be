"""The hardware-selection report written out: self-contained HTML, Markdown and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from costbench.harness.reports.data import describe_env, short_commit
from costbench.harness.results.accuracy_budget import PARITY, TASK
from costbench.harness.reports.hardware import HardwareReport, Recommendation, config_name, judgement_of, slug
from costbench.harness.reports.html import Column, bullet_list, esc, figure_div, fmt, is_missing, page, table
from costbench.harness.reports.ties import MARGIN

CSV_COLUMNS = [
    "model", "machine_label", "machine", "env_id", "run_id", "backend", "variant", "device", "batch_size", "status",
    "reason", "p50_ms", "p50_ci_low", "p50_ci_high", "p99_ms", "p99_ci_low", "p99_ci_high", "latency_valid",
    "unstable", "throughput", "throughput_scenario", "per", "ttft_ms", "ttft_ci_low", "ttft_ci_high", "peak_rss_mib",
    "size_mb", "accuracy_drop_pt", "parity_loss_pt",
    "accuracy_basis", "loss_measure", "loss_pt", "loss_low_pt", "loss_high_pt", "loss_samples", "budget_verdict",
    "top1_agreement", "top1_agreement_confident", "machine_inferred", "power_w", "hourly", "machine_cost_per_m", "energy_cost_per_m", "cost_per_m",
    "server_slo", "server_slo_met", "server_valid", "slo_throughput", "slo_throughput_ci", "slo_bound", "server_batching",
    "cost_per_m_at_slo", "frontier_latency", "frontier_cost", "recommended",
]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "hexagon", "star-square", "pentagon"]


def _ms(v: Any) -> str:
    return fmt(v, ".3f")


def _ci(row: dict[str, Any], p: str) -> str:
    lo, hi = row.get(f"{p}_ci_low"), row.get(f"{p}_ci_high")
    return "-" if is_missing(lo) or is_missing(hi) else f"{lo:.3f}–{hi:.3f}"


def _money(v: Any, currency: str = "") -> str:
    return "-" if is_missing(v) else f"{v:.4g}" + (f" {currency}" if currency else "")


# How the loss against fp32 is named, by basis: never "accuracy drop" for parity.
LOSS_SHORT = {TASK: "task-accuracy drop", PARITY: "parity loss"}
LOSS_AXIS = {TASK: "task-accuracy drop vs fp32 (pt, lower is better)",
             PARITY: "parity loss: top-1 disagreement with fp32 where fp32 is confident (pt, lower is better)"}


def _basis_of(mdf: pd.DataFrame) -> str:
    """The basis the model's configurations are judged on (task accuracy where any has labels)."""
    bases = [b for b in mdf.get("loss_basis", pd.Series(dtype=object)).dropna().unique()]
    return TASK if TASK in bases else PARITY if bases else ""


def _loss_short(basis: str) -> str:
    return LOSS_SHORT.get(basis, "loss vs fp32")


def _loss_ci(row: dict[str, Any]) -> str:
    lo, hi = row.get("loss_low_pt"), row.get("loss_high_pt")
    return "-" if is_missing(lo) or is_missing(hi) else f"{lo:+.2f} to {hi:+.2f}"


def _has_server(report: HardwareReport) -> bool:
    c = report.configs
    return not c.empty and "server_slo_met" in c and c["server_slo_met"].notna().any()


def _slo_rate(row: dict[str, Any]) -> str:
    v = row.get("slo_throughput")
    invalid = "*" if row.get("server_valid") is False else ""
    if is_missing(v):
        return "-" if is_missing(row.get("server_slo_met")) else "fails SLO" + invalid
    text = ("≥ " if row.get("slo_bound") in ("at least", "guaranteed") else "") + fmt(v, ".1f")
    low, high = row.get("slo_throughput_ci") or (None, None)
    if row.get("slo_bound") == "estimate" and not is_missing(low) and not is_missing(high):
        text += f" [{fmt(low, '.1f')}–{fmt(high, '.1f')}]"
    return text + invalid


def _units(report: HardwareReport) -> tuple[str, str]:
    """(rate, what a million of) for the report's tables: samples/s and inferences, output tokens/s and output
    tokens when every configuration is a generative one, both when the report holds both kinds."""
    per = set(report.configs["per"].dropna()) if "per" in report.configs else set()
    if per == {"output token"}:
        return "output tokens/s", "output tokens"
    if "output token" in per:
        return "samples or output tokens/s", "inferences or output tokens"
    return "samples/s", "inferences"


def _has_ttft(report: HardwareReport) -> bool:
    return "ttft_ms" in report.configs and report.configs["ttft_ms"].notna().any()


def _columns(report: HardwareReport) -> list[Column]:
    cur = report.prices.currency
    rate, unit = _units(report)
    cols = [
        Column("machine_label", "machine"), Column("backend", "backend"), Column("variant", "variant"),
        Column("device", "device"), Column("batch_size", "batch", numeric=True, format=lambda v: str(int(v))),
        *([Column("ttft_ms", "TTFT p50 ms", _ms, True)] if _has_ttft(report) else []),
        Column("p50_ms", "TPOT p50 ms" if rate == "output tokens/s" else "p50 ms", _ms, True),
        Column("p50_ci", "p50 95% CI"),
        Column("p99_ms", "p99 ms", _ms, True), Column("throughput", rate, lambda v: fmt(v, ".1f"), True),
        Column("peak_rss_mib", "peak RSS MiB", lambda v: fmt(v, ".1f"), True),
        Column("size_mb", "size MB", lambda v: fmt(v, ".2f"), True),
        *_accuracy_columns(report),
        Column("hourly", f"{cur}/h", lambda v: _money(v), True),
        Column("cost_per_m", f"{cur} / M {unit}", lambda v: _money(v), True),
    ]
    if "or" in unit.split():  # both kinds in one table: each row says which it is priced per
        cols.append(Column("per", "priced per"))
    if _has_server(report):
        cols += [Column("server_slo", "server SLO"), Column("slo_rate", "samples/s within SLO"),
                 Column("server_batching", "dynamic batching", lambda v: "-" if is_missing(v) else str(v)),
                 Column("cost_per_m_at_slo", f"{cur} / M at SLO", lambda v: _money(v), True)]
    return cols + [Column("status_text", "status", wrap=True)]


def _accuracy_columns(report: HardwareReport) -> list[Column]:
    """Task-accuracy drop where labelled, parity loss where not (each only when some configuration has it), then
    the interval, the sample count and what the evidence says about the budget."""
    c = report.configs
    cols = []
    if not c.empty and c["accuracy_drop_pt"].notna().any():
        cols.append(Column("accuracy_drop_pt", "task-acc drop pt", lambda v: fmt(v, "+.2f"), True))
    if not c.empty and c["parity_loss_pt"].notna().any():
        cols.append(Column("parity_loss_pt", "parity loss pt", lambda v: fmt(v, "+.2f"), True))
    if cols:
        cols += [Column("loss_ci", "95% CI pt"), Column("loss_samples", "n", lambda v: fmt(v, ".0f"), True),
                 Column("budget_verdict", "budget")]
    return cols


def _display_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for r in df.to_dict("records"):
        r["p50_ci"] = _ci(r, "p50")
        r["loss_ci"] = _loss_ci(r)
        r["slo_rate"] = _slo_rate(r)
        flags = []
        if r.get("frontier_latency"):
            flags.append("latency frontier")
        if r.get("frontier_cost"):
            flags.append("cost frontier")
        status = r["status"] if r["status"] == "ok" else r["reason"] or r["status"]
        if r.get("latency_valid") is False:
            status += " (latency invalid*)"
        if r.get("unstable"):
            status += " (unstable~)"
        r["status_text"] = status + (f" · {', '.join(flags)}" if flags else "")
        rows.append(r)
    return rows


def _pick_text(rec: Recommendation, report: HardwareReport) -> str:
    p = rec.pick
    lat = report.criteria.latency
    cur = report.prices.currency
    if rec.objective == "cost_at_slo":
        tokens = p.get("server_per") == "output token"
        low, high = (p.get("cost_at_slo_ci") or [None, None])[:2]
        span = ("" if p.get("slo_bound") != "estimate" or is_missing(low) or is_missing(high)
                else f" (95% CI {_money(low)}–{_money(high)})")
        cost = (f", {_money(p['cost_per_m_at_slo'], cur)}{span} per million "
                f"{'output tokens' if tokens else 'inferences'} at {p['server_slo']} "
                f"({_slo_rate(p)} {'output tokens' if tokens else 'samples'}/s within it)")
    else:
        per = "output tokens" if p.get("per") == "output token" else "inferences"
        cost = "" if is_missing(p.get("cost_per_m")) else f", {_money(p['cost_per_m'], cur)} per million {per}"
        if cost and not is_missing(p.get("cost_ci_low")) and not is_missing(p.get("cost_ci_high")):
            cost += f" (95% CI {_money(p['cost_ci_low'])}–{_money(p['cost_ci_high'])})"
    rate = "output tokens/s" if p.get("per") == "output token" else "samples/s"
    speed = ("" if is_missing(p.get(f"{lat}_ms")) else f", {lat} {_ms(p[f'{lat}_ms'])} ms") + (
        "" if is_missing(p.get("throughput")) else f", {fmt(p['throughput'], '.1f')} {rate}")
    return f"{config_name(p)}{cost}{speed}; {_basis_text(p, report)}"


def _verdict_word(rec: Recommendation) -> str:
    """"recommended", or "tied" when the data cannot tell the pick from a runner-up by the margin."""
    return "tied, best estimate" if rec.ties else "recommended"


def _tie_lines(rec: Recommendation, report: HardwareReport) -> list[str]:
    """One line per runner-up tied with the pick: its ratio to the pick, the interval, what would decide it."""
    what = "cost" if rec.objective == "cost" else report.criteria.latency
    return [f"{config_name(t.row)}: {t.describe(what)}" for t in rec.ties]


def _clears_line(rec: Recommendation, report: HardwareReport) -> str | None:
    """When the pick stands alone: how far it clears the runner-up (the best estimate after it)."""
    if rec.ties or not rec.versus:
        return None
    v = rec.versus[0]
    return f"clears the runner-up {config_name(v.row)}: {v.describe('cost' if rec.objective == 'cost' else report.criteria.latency)}"


def _tie_intro(rec: Recommendation) -> str:
    return (f"No single pick: {len(rec.ties)} runner-up(s) meeting the same criteria are not "
            f"{'cheaper' if rec.objective == 'cost' else 'slower'} than the best estimate by more than "
            f"{MARGIN:.0%} at 95% (ratio to the best estimate, from the per-process values):")


def _basis_text(row: dict[str, Any], report: HardwareReport) -> str:
    """Which basis decided the budget for this configuration, with its loss, interval, sample count and verdict."""
    j = judgement_of(row, report.criteria)
    if j is None:
        return "no task accuracy or parity with fp32 measured"
    return f"budget decided on {j.describe_verdict()}"


def _prices_text(report: HardwareReport) -> str:
    as_of = f" (as of {report.prices.as_of})" if report.prices.as_of else ""
    return ", ".join(report.prices.sources) + as_of


# --- Figures -----------------------------------------------------------------------------------------

def _scatter(mdf: pd.DataFrame, report: HardwareReport, x_key: str, x_title: str, frontier_key: str,
             rec: Recommendation, vline: float | None):
    import plotly.graph_objects as go

    ok = mdf[(mdf["status"] == "ok") & mdf[x_key].notna() & mdf["loss_pt"].notna()]
    basis = _basis_of(mdf)
    short = _loss_short(basis)
    fig = go.Figure()
    backends = list(dict.fromkeys(mdf["backend"]))
    for label, g in ok.groupby("machine_label", sort=False):
        fig.add_trace(go.Scatter(
            x=g[x_key], y=g["loss_pt"], mode="markers", name=str(label),
            error_y={"type": "data", "symmetric": False, "array": (g["loss_high_pt"] - g["loss_pt"]).fillna(0),
                     "arrayminus": (g["loss_pt"] - g["loss_low_pt"]).fillna(0), "thickness": 1},
            marker={"size": 11, "symbol": [SYMBOLS[backends.index(b) % len(SYMBOLS)] for b in g["backend"]]},
            text=[config_name(r) for r in g.to_dict("records")],
            customdata=g[["p50_ms", "p99_ms", "throughput", "cost_per_m"]].to_numpy(),
            hovertemplate="%{text}<br>p50 %{customdata[0]:.3f} ms · p99 %{customdata[1]:.3f} ms<br>"
                          "%{customdata[2]:.1f} samples/s · cost/M %{customdata[3]:.4g}<br>"
                          + short + " %{y:.2f} pt<extra></extra>"))
    front = ok[ok[frontier_key]].sort_values([x_key, "loss_pt"])
    if len(front):
        fig.add_trace(go.Scatter(x=front[x_key], y=front["loss_pt"], mode="lines", name="Pareto frontier",
                                 line={"shape": "hv", "dash": "dot", "color": "#555"}, hoverinfo="skip"))
    if rec.pick is not None and not is_missing(rec.pick.get(x_key)) and not is_missing(rec.pick.get("loss_pt")):
        fig.add_trace(go.Scatter(x=[rec.pick[x_key]], y=[rec.pick["loss_pt"]], mode="markers",
                                 name="recommended", marker={"symbol": "star", "size": 20, "color": "gold",
                                                             "line": {"color": "#333", "width": 1}},
                                 hovertemplate=f"recommended: {esc(config_name(rec.pick))}<extra></extra>"))
    if vline is not None:
        fig.add_vline(x=vline, line_dash="dash", line_color="#b3261e", annotation_text="SLO")
    budget = report.criteria.budget_for(basis)
    if budget is not None:
        fig.add_hline(y=100 * budget, line_dash="dash", line_color="#a15c00",
                      annotation_text="task-accuracy budget" if basis == TASK else "parity budget")
    xs = ok[x_key].astype(float)
    log = len(xs) > 1 and xs.min() > 0 and xs.max() / xs.min() > 20
    fig.update_layout(height=420, margin={"t": 30, "l": 60, "r": 20, "b": 50}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"title": {"text": x_title}, "type": "log" if log else "linear"},
                      yaxis={"title": {"text": LOSS_AXIS.get(basis, "loss vs fp32 (pt, lower is better)")}})
    return fig


def _server_curves(mdf: pd.DataFrame):
    """Latency at the SLO percentile against offered load (samples/s), one line per configuration: the
    server scenario's trials (a QPS search, or one fixed rate), with the SLO drawn across."""
    import plotly.graph_objects as go

    fig = go.Figure()
    slos = set()
    for r in mdf.to_dict("records"):
        curves = r.get("server_curves") or ([{"batching": None, "trials": r["server_trials"]}]
                                            if r.get("server_trials") else [])
        if r["status"] != "ok" or not curves:
            continue
        batch = int(r["batch_size"])
        for curve in curves:  # with and without dynamic batching, where both ran
            trials = curve["trials"]
            name = config_name(r) + (f" · batching {curve['batching']}" if curve["batching"] else
                                     " · no batching" if len(curves) > 1 else "")
            fig.add_trace(go.Scatter(
                x=[t["qps"] * batch for t in trials], y=[t["latency_ms"] for t in trials], mode="lines+markers",
                name=name, line={"dash": "solid" if curve["batching"] else "dot"},
                marker={"symbol": ["circle" if t["meets"] else "x" for t in trials], "size": 9},
                hovertemplate="%{x:.1f} samples/s offered<br>latency %{y:.3f} ms<extra>" + esc(name) + "</extra>"))
        if not is_missing(r.get("server_slo_ms")):
            slos.add((float(r["server_slo_ms"]), str(r["server_slo"])))
    for slo_ms, desc in sorted(slos):
        fig.add_hline(y=slo_ms, line_dash="dash", line_color="#b3261e", annotation_text=f"SLO {desc}")
    fig.update_layout(height=420, margin={"t": 30, "l": 60, "r": 20, "b": 50}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"title": {"text": "offered load, samples/s (Poisson arrivals)"}, "type": "log"},
                      yaxis={"title": {"text": "latency at the SLO percentile, arrival to completion (ms)"},
                             "type": "log"})
    return fig


def _side_by_side(mdf: pd.DataFrame):
    import plotly.graph_objects as go

    ok = mdf[(mdf["status"] == "ok") & mdf["p50_ms"].notna()]
    fig = go.Figure()
    for label, g in ok.groupby("machine_label", sort=False):
        x = [f"{r['backend']} {r['variant']} b{r['batch_size']}" for r in g.to_dict("records")]
        fig.add_trace(go.Bar(
            x=x, y=g["p50_ms"], name=str(label),
            error_y={"type": "data", "symmetric": False, "array": (g["p50_ci_high"] - g["p50_ms"]).fillna(0),
                     "arrayminus": (g["p50_ms"] - g["p50_ci_low"]).fillna(0)},
            hovertemplate="%{x}<br>p50 %{y:.3f} ms<extra>" + esc(label) + "</extra>"))
    vals = ok["p50_ms"].astype(float)
    log = len(vals) > 1 and vals.min() > 0 and vals.max() / vals.min() > 20
    fig.update_layout(barmode="group", height=380, margin={"t": 30, "l": 60, "r": 20, "b": 80},
                      yaxis={"title": {"text": "single-stream p50 ms (95% CI)"}, "type": "log" if log else "linear"},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def side_by_side_rows(mdf: pd.DataFrame, currency: str) -> tuple[list[dict[str, Any]], list[Column]]:
    """One row per backend × variant × batch; for each machine, its p50 and cost."""
    machines = list(dict.fromkeys(mdf["machine_label"]))
    rows: dict[tuple, dict[str, Any]] = {}
    for r in mdf.to_dict("records"):
        key = (r["backend"], r["variant"], r["device"], r["batch_size"])
        row = rows.setdefault(key, {"config": f"{r['backend']} {r['variant']} b{r['batch_size']}"
                                    + ("" if r["device"] == "cpu" else f" ({r['device']})")})
        i = machines.index(r["machine_label"])
        row[f"p50_{i}"] = r["p50_ms"] if r["status"] == "ok" else None
        row[f"cost_{i}"] = r["cost_per_m"] if r["status"] == "ok" else None
    cols = [Column("config", "backend variant batch")]
    for i, m in enumerate(machines):
        cols += [Column(f"p50_{i}", f"{m}: p50 ms", _ms, True),
                 Column(f"cost_{i}", f"{m}: {currency}/M", lambda v: _money(v), True)]
    return list(rows.values()), cols


# --- HTML ----------------------------------------------------------------------------------------

def _runs_table(report: HardwareReport) -> str:
    rows = []
    for r, env_id, env in report.environments():
        machine = report.machine_of(str(r["run_id"]), env_id)
        how = report.how_priced(str(r["run_id"]), env_id)
        rows.append({"run_id": r["run_id"], "created": r["created"], "commit": short_commit(r["commit"]),
                     "env_id": env_id,
                     "machine": (machine.name + (" (inferred)" if how == "inferred" else "")) if machine
                     else "(no machine type)",
                     "hourly": machine.hourly if machine else None, "described": describe_env(env),
                     "suite": r["suite"], "results_dir": r["results_dir"]})
    cols = [Column("run_id", "run"), Column("created", "created"), Column("commit", "commit"), Column("env_id", "env_id"),
            Column("machine", "machine type"), Column("hourly", f"{report.prices.currency}/h", _money, True),
            Column("described", "machine (fingerprint)"), Column("suite", "suite"), Column("results_dir", "results")]
    return table(rows, cols, "runs")


def _rec_html(rec: Recommendation, report: HardwareReport, sid: str) -> str:
    parts = [f'<div class="card" id="rec-{sid}">']
    if rec.pick is not None:
        basis = {"cost": "cheapest", "cost_at_slo": "cheapest at the server SLO"}.get(rec.objective, "fastest")
        parts.append(f"<p><b>{esc(_verdict_word(rec).capitalize())}</b> ({basis} meeting "
                     f"{esc(report.criteria.describe())}): "
                     f"<span class=\"improved\" id=\"pick-{sid}\">{esc(_pick_text(rec, report))}</span></p>")
        if rec.ties:
            parts.append(f"<p id=\"ties-{sid}\">{esc(_tie_intro(rec))}</p><ul>"
                         + "".join(f"<li>{esc(line)}</li>" for line in _tie_lines(rec, report)) + "</ul>")
        elif _clears_line(rec, report):
            parts.append(f"<p id=\"clears-{sid}\">It {esc(_clears_line(rec, report))}.</p>")
    else:
        parts.append(f"<p class=\"regressed\" id=\"pick-{sid}\">No configuration meets "
                     f"{esc(report.criteria.describe())}.</p>")
    if rec.note:
        parts.append(f'<p class="note">{esc(rec.note)}</p>')
    if rec.rejected:
        title = "Faster or cheaper, and why not" if rec.pick is not None else "Why each configuration fails"
        parts.append(f"<p>{title}:</p>")
        parts.append(bullet_list([f"<b>{esc(config_name(r))}</b>: {esc('; '.join(why))}" for r, why in rec.rejected],
                                 f"rejected-{sid}"))
    if rec.unmeasured:
        parts.append("<details><summary>Not measured</summary>" + bullet_list(
            [f"{esc(config_name(r))}: {esc(why)}" for r, why in rec.unmeasured], f"unmeasured-{sid}") + "</details>")
    parts.append("</div>")
    return "".join(parts)


def _frontier_list(mdf: pd.DataFrame, key: str, x_key: str, x_fmt, list_id: str) -> str:
    front = mdf[mdf[key]].sort_values(x_key)
    if front.empty:
        return '<p class="note">No configuration has both values.</p>'
    return bullet_list([f"{esc(config_name(r))}: {esc(x_fmt(r[x_key]))}, {_loss_short(r.get('loss_basis') or '')} "
                        f"{fmt(r['loss_pt'], '+.2f')} pt" for r in front.to_dict("records")], list_id)


def render_html(report: HardwareReport) -> str:
    """The report as one self-contained HTML page."""
    c = report.configs
    cur = report.prices.currency
    lat = report.criteria.latency
    rate, unit = _units(report)
    body = [f"<h2>Runs</h2>{_runs_table(report)}",
            f"<p>Criteria: {esc(report.criteria.describe())}. Prices: {esc(_prices_text(report))}. "
            f"Cost per million {unit} "
            f"= hourly price / (3600 × {rate}) × 10⁶, with {rate} from the offline scenario (else the single-stream one)"
            + (", and at the SLO with the samples/s the server scenario sustained within its SLO"
               if _has_server(report) else "") + ".</p>"]
    body += [f'<p class="warn">{esc(n)}</p>' for n in report.notes]
    for model, mdf in (c.groupby("model", sort=False) if not c.empty else []):
        sid = slug(str(model))
        rec = report.recommendations[str(model)]
        rows = _display_rows(mdf)
        pick_key = None if rec.pick is None else (rec.pick["run_id"], rec.pick["backend"], rec.pick["variant"],
                                                 rec.pick["device"], rec.pick["batch_size"])

        def attrs(r: dict[str, Any]) -> dict[str, str]:
            cls = []
            if (r["run_id"], r["backend"], r["variant"], r["device"], r["batch_size"]) == pick_key:
                cls.append("pick")
            if r.get("frontier_latency") or r.get("frontier_cost"):
                cls.append("frontier")
            return {"class": " ".join(cls), "data-run": r["run_id"], "data-env": r["env_id"],
                    "data-backend": r["backend"], "data-variant": r["variant"], "data-device": r["device"],
                    "data-batch": str(r["batch_size"])}

        short = _loss_short(_basis_of(mdf))
        body.append(f'<h2 id="model-{sid}">{esc(model)}</h2>')
        body.append(_rec_html(rec, report, sid))
        fig = _scatter(mdf, report, f"{lat}_ms", f"single-stream {lat} ms", "frontier_latency", rec,
                       report.criteria.slo_ms)
        body.append(f"<h3>Latency against {short}</h3>{figure_div(fig, f'fig-latency-{sid}')}")
        body.append(f"<p>Pareto frontier (latency vs {short}):</p>"
                    + _frontier_list(mdf, "frontier_latency", f"{lat}_ms", lambda v: f"{lat} {v:.3f} ms",
                                     f"frontier-latency-{sid}"))
        cost_key, cost_title = (("cost_per_m_at_slo", f"{cur} per million inferences at the server SLO")
                                if rec.objective == "cost_at_slo" else ("cost_per_m", f"{cur} per million {unit}"))
        if mdf[cost_key].notna().any():
            fig = _scatter(mdf, report, cost_key, cost_title, "frontier_cost", rec, None)
            body.append(f"<h3>Cost against {short}</h3>{figure_div(fig, f'fig-cost-{sid}')}")
            body.append(f"<p>Pareto frontier (cost vs {short}):</p>"
                        + _frontier_list(mdf, "frontier_cost", cost_key, lambda v: f"{v:.4g} {cur}/M",
                                         f"frontier-cost-{sid}"))
        else:
            body.append('<p class="note">No cost chart: no machine of these runs has a price '
                        "(--machine-type or [assign] in a price file).</p>")
        if any(r["status"] == "ok" and r.get("server_trials") for r in mdf.to_dict("records")):
            body.append(f"<h3>Latency under load (server scenario)</h3>{figure_div(_server_curves(mdf), f'fig-server-{sid}')}"
                        '<p class="note">Each point is one trial at a Poisson arrival rate; × marks a rate that '
                        "was not shown to meet the SLO (its interval reaches above it). Solid lines ran with dynamic "
                        "batching, dotted ones without. The highest ● under the line is the rate the cost at the "
                        "SLO bills: of a configuration that ran both, the one that sustained more.</p>")
        body.append(f"<h3>All configurations</h3>{table(rows, _columns(report), f'configs-{sid}', attrs)}")
        body.append(f'<p class="note">{esc(_basis_note(mdf, report))} '
                    "* invalid: the run stopped at max_duration_s before min_count. ~ unstable: the runner found "
                    "its spread far above this case's history on that machine.</p>")
        sbs_rows, sbs_cols = side_by_side_rows(mdf, cur)
        body.append(f"<h3>Side by side</h3>{figure_div(_side_by_side(mdf), f'fig-sbs-{sid}')}"
                    f"{table(sbs_rows, sbs_cols, f'side-by-side-{sid}')}")
    if c.empty:
        body.append('<p class="warn">The selected runs hold no results.</p>')
    subtitle = (f"generated {esc(report.generated)} from the results store · {len(report.runs)} run(s) · "
                f"{c['env_id'].nunique() if not c.empty else 0} environment(s)")
    return page("costbench hardware-selection report", "".join(body), subtitle)


def _basis_note(mdf: pd.DataFrame, report: HardwareReport) -> str:
    """Which basis the model's budget is on, what it measures, on how many samples."""
    ok = mdf[mdf["loss_basis"].notna()] if "loss_basis" in mdf else mdf.iloc[0:0]
    if ok.empty:
        return "Budget basis: nothing measured against fp32."
    parts = []
    for basis, g in ok.groupby("loss_basis", sort=False):
        measure = g["loss_measure"].iloc[0]
        n = sorted({int(v) for v in g["loss_samples"].dropna()})
        budget = report.criteria.max_drop_pt if basis == TASK else report.criteria.max_parity_loss_pt
        parts.append(f"{basis} ({measure}; {'/'.join(map(str, n)) or '?'} samples; budget "
                     f"{'none' if budget is None else f'{budget:g} pt'})")
    text = "Budget basis: " + "; ".join(parts) + "."
    if TASK not in set(ok["loss_basis"]):
        text += (" The model has no labels here, so the budget is on parity with fp32, not on task accuracy; "
                 "top-1 disagreement on every sample is only a loose bound on an accuracy drop.")
    return text + " A configuration within its budget on the point estimate qualifies; 'undecided' means the 95% " \
                  "interval straddles the budget, so the data cannot decide it."


# --- Markdown and CSV --------------------------------------------------------------------------------

def _md_table(rows: list[dict[str, Any]], cols: list[Column]) -> str:
    head = "| " + " | ".join(c.title for c in cols) + " |"
    sep = "| " + " | ".join("---:" if c.numeric else "---" for c in cols) + " |"
    body = ["| " + " | ".join(c.format(r.get(c.key)).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def render_markdown(report: HardwareReport) -> str:
    """The report as Markdown: recommendation, reasons, configurations, frontiers, side by side."""
    cur = report.prices.currency
    lat = report.criteria.latency
    out = ["# costbench hardware-selection report", "",
           f"Generated {report.generated} from {len(report.runs)} run(s). Criteria: {report.criteria.describe()}. "
           f"Prices: {_prices_text(report)}.",
           ""]
    for r, env_id, env in report.environments():
        m = report.machine_of(str(r["run_id"]), env_id)
        inferred = " (inferred)" if report.how_priced(str(r["run_id"]), env_id) == "inferred" else ""
        out.append(f"- run `{r['run_id']}` ({r['created']}, commit {short_commit(r['commit'])}): env `{env_id}`, "
                   f"{m.name + inferred + f' at {m.hourly:g} {cur}/h' if m else 'no machine type'}; "
                   f"{describe_env(env)}")
    out += [""] + [f"> {n}" for n in report.notes]
    c = report.configs
    for model, mdf in (c.groupby("model", sort=False) if not c.empty else []):
        rec = report.recommendations[str(model)]
        out += ["", f"## {model}", ""]
        out.append(f"**{_verdict_word(rec).capitalize()}:** {_pick_text(rec, report)}." if rec.pick is not None
                   else f"**No configuration meets {report.criteria.describe()}.**")
        if rec.ties:
            out += ["", _tie_intro(rec), ""] + [f"- {line}" for line in _tie_lines(rec, report)]
        elif _clears_line(rec, report):
            out += ["", f"It {_clears_line(rec, report)}."]
        if rec.note:
            out += ["", rec.note]
        if rec.rejected:
            out += ["", "Faster or cheaper, and why not:" if rec.pick is not None else "Why each configuration fails:", ""]
            out += [f"- {config_name(r)}: {'; '.join(why)}" for r, why in rec.rejected]
        if rec.unmeasured:
            out += ["", "Not measured:", ""] + [f"- {config_name(r)}: {why}" for r, why in rec.unmeasured]
        cols = [col for col in _columns(report) if col.key != "p50_ci"]
        out += ["", _md_table(_display_rows(mdf), cols), "", _basis_note(mdf, report), ""]
        short = _loss_short(_basis_of(mdf))
        cost_key = "cost_per_m_at_slo" if rec.objective == "cost_at_slo" else "cost_per_m"
        for key, x_key, x_fmt, name in (("frontier_latency", f"{lat}_ms", lambda v: f"{lat} {v:.3f} ms", "latency"),
                                        ("frontier_cost", cost_key, lambda v: f"{v:.4g} {cur}/M", "cost")):
            front = mdf[mdf[key]].sort_values(x_key)
            if len(front):
                out += [f"Pareto frontier ({name} vs {short}): " + "; ".join(
                    f"{config_name(r)} ({x_fmt(r[x_key])}, {short} {fmt(r['loss_pt'], '+.2f')} pt)"
                    for r in front.to_dict("records")), ""]
        sbs_rows, sbs_cols = side_by_side_rows(mdf, cur)
        if mdf["machine_label"].nunique() > 1:
            out += ["Side by side:", "", _md_table(sbs_rows, sbs_cols), ""]
    return "\n".join(out).rstrip() + "\n"


def terminal_summary(report: HardwareReport) -> list[str]:
    """A few lines per model for the terminal: the pick, what was rejected and why, the frontier."""
    lines = [f"criteria: {report.criteria.describe()}"]
    lat = report.criteria.latency
    for model, rec in report.recommendations.items():
        mdf = report.configs[report.configs["model"] == model]
        lines.append(f"{model}: " + (f"{_verdict_word(rec)} {_pick_text(rec, report)}" if rec.pick is not None
                                     else "no configuration meets the criteria"))
        if rec.ties:
            lines.append(f"  {_tie_intro(rec)}")
            lines += [f"    {line}" for line in _tie_lines(rec, report)]
        elif _clears_line(rec, report):
            lines.append(f"  {_clears_line(rec, report)}")
        if rec.note:
            lines.append(f"  {rec.note}")
        if rec.rejected:
            lines.append("  faster or cheaper, rejected:" if rec.pick is not None else "  why each fails:")
            lines += [f"    {config_name(r)}: {'; '.join(why)}" for r, why in rec.rejected]
        if rec.unmeasured:
            lines.append(f"  {len(rec.unmeasured)} configuration(s) not measured (skipped or failed; see the report)")
        front = mdf[mdf["frontier_latency"]].sort_values(f"{lat}_ms")
        if len(front):
            lines.append(f"  latency/{_loss_short(_basis_of(mdf))} frontier: " + "; ".join(config_name(r) for r in front.to_dict("records")))
    return lines


def to_csv_frame(report: HardwareReport) -> pd.DataFrame:
    """One row per configuration with every number the report uses."""
    c = report.configs.copy()
    if c.empty:
        return pd.DataFrame(columns=CSV_COLUMNS)
    picks = {(r.pick["run_id"], r.pick["backend"], r.pick["variant"], r.pick["device"], r.pick["batch_size"])
             for r in report.recommendations.values() if r.pick is not None}
    c["recommended"] = [(r["run_id"], r["backend"], r["variant"], r["device"], r["batch_size"]) in picks
                        for r in c.to_dict("records")]
    return c[CSV_COLUMNS]


def write_report(report: HardwareReport, out_dir: Path) -> dict[str, Path]:
    """Write report.html, report.md and report.csv into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    paths["html"].write_text(render_html(report), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    to_csv_frame(report).to_csv(paths["csv"], index=False)
    return paths

