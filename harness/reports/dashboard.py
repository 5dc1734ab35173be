"""The regression dashboard: every series' history across runs, change points, environment changes, filters.

Writes ``index.html`` (self-contained; figures drawn when their series is shown), ``changes.csv``
(the regressions table) and ``dashboard.json`` (every point and change point, for other tools).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from costbench.harness.reports.changepoints import ChangePoint, Point, detect
from costbench.core.metrics import (
    FIRST_INFERENCE, LATENCY, LOAD_TIME, MODEL_SIZE, PEAK_RSS, POWER, TASK_ACCURACY, THROUGHPUT, TOP1_AGREEMENT,
    catalogue,
)
from costbench.harness.results.replicates import process_values
from costbench.harness.reports.data import (
    CASE_KEYS, SERIES_KEYS, Selection, env_differences, reproduce_command, row_details, runner_flags, samples_of,
    series_label, short_commit,
)
from costbench.harness.reports.html import Column, esc, fmt, page, table
from costbench.core.stats import SIGNIFICANCE_ALPHA

# Drawn besides every scenario's primary series and headline (dashboard_metrics). Metrics with raw samples get
# change-point tests; the others are drawn as history only.
ALWAYS_DRAWN = (THROUGHPUT, PEAK_RSS, MODEL_SIZE, LOAD_TIME, FIRST_INFERENCE, TASK_ACCURACY, TOP1_AGREEMENT, POWER)
MAX_HOVER_SAMPLES = 300  # raw samples drawn per point (evenly spaced) so pages stay light
FILTER_KEYS = ("model", "variant", "backend", "device", "metric")
CHANGES_COLUMNS = ["series", "model", "variant", "backend", "device", "scenario", "batch_size", "metric", "verdict",
                   "last_good_run", "last_good_commit", "last_good_created", "first_bad_run", "first_bad_commit",
                   "first_bad_created", "ratio", "ratio_ci_low", "ratio_ci_high", "p_value", "q_value",
                   "still_present", "env_id", "reproduce", "method"]


@dataclass
class SeriesHistory:
    """One series across runs."""

    key: dict[str, Any]
    unit: str
    points: list[Point]
    change_points: list[ChangePoint] = field(default_factory=list)
    env_changes: list[tuple[Point, Point, list[str]]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return series_label(self.key)

    @property
    def has_samples(self) -> bool:
        return any(p.samples is not None and p.samples.size > 1 for p in self.points)


@dataclass
class Dashboard:
    """All series and the runs they came from."""

    series: list[SeriesHistory]
    runs: pd.DataFrame
    threshold: float
    alpha: float
    generated: str


def dashboard_metrics() -> tuple[str, ...]:
    """What the dashboard draws: each scenario kind's primary p50 and p99 and headline, then ALWAYS_DRAWN."""
    cat = catalogue()
    drawn: list[str] = []
    for scenario in cat.scenarios.values():
        series = cat.series[scenario.primary]
        drawn += [series.p50, series.p99, scenario.headline]
    return tuple(dict.fromkeys([*drawn, *ALWAYS_DRAWN]))


def build_dashboard(sel: Selection, threshold: float = 0.05, alpha: float = SIGNIFICANCE_ALPHA,
                    metrics: tuple[str, ...] | None = None) -> Dashboard:
    """Histories and change points of every series in the selection (``metrics``: default dashboard_metrics())."""
    metrics = dashboard_metrics() if metrics is None else metrics
    runs = sel.runs.reset_index(drop=True)
    order = {r: i for i, r in enumerate(runs["run_id"])}
    run_rows = {r["run_id"]: r for r in runs.to_dict("records")}
    df = sel.results
    df = df[(df["status"] == "ok") & df["metric"].isin(metrics) & df["value"].notna()]
    infos = {(r["run_id"], r["case_id"]): r["info"] for r in sel.cases.to_dict("records")}
    flags = runner_flags(sel.results)
    series = []
    for key, g in df.groupby(SERIES_KEYS, sort=False):
        key_d = dict(zip(SERIES_KEYS, key))
        key_d["batch_size"] = int(key_d["batch_size"])
        points = []
        for r in sorted(g.to_dict("records"), key=lambda r: order[r["run_id"]]):
            run = run_rows[r["run_id"]]
            samples = samples_of(r["samples"])
            valid = r["valid"]
            points.append(Point(
                index=order[r["run_id"]], run_id=r["run_id"], created=str(run["created"]), commit=run["commit"],
                env_id=str(r["env_id"]), value=float(r["value"]),
                ci_low=None if pd.isna(r["ci_low"]) else float(r["ci_low"]),
                ci_high=None if pd.isna(r["ci_high"]) else float(r["ci_high"]),
                samples=samples, valid=True if valid is None or pd.isna(valid) else bool(valid),
                process_values=process_values(row_details(r)),
                reproduce=reproduce_command(run, key_d, infos.get((r["run_id"], r["case_id"])))))
            flag = flags.get((r["run_id"], *(key_d[k] for k in CASE_KEYS)))
            if flag:  # the runner judged this case against its history when it ran: keep that verdict
                points[-1].unstable, points[-1].note = True, f"unstable: {flag}"
        hist = SeriesHistory(key_d, str(g["unit"].iloc[0]), points)
        for a, b in zip(points, points[1:]):
            if a.env_id != b.env_id:
                hist.env_changes.append((a, b, env_differences(run_rows[a.run_id]["env"], run_rows[b.run_id]["env"])))
        series.append(hist)
    cps = detect([s.points if s.has_samples else [] for s in series], threshold, alpha,
                 [catalogue().higher_is_better(s.key["metric"]) for s in series])
    for s, c in zip(series, cps):
        s.change_points = c
    return Dashboard(series, runs, threshold, alpha, datetime.now(timezone.utc).isoformat(timespec="seconds"))


def changes_frame(dash: Dashboard) -> pd.DataFrame:
    """The regressions table: one row per change point, regressions first."""
    rows = []
    for s in dash.series:
        for c in s.change_points:
            rows.append({"series": s.label, **s.key, "verdict": c.verdict,
                         "last_good_run": c.last_good.run_id, "last_good_commit": c.last_good.commit,
                         "last_good_created": c.last_good.created, "first_bad_run": c.first_bad.run_id,
                         "first_bad_commit": c.first_bad.commit, "first_bad_created": c.first_bad.created,
                         "ratio": c.ratio, "ratio_ci_low": c.ci_low, "ratio_ci_high": c.ci_high,
                         "p_value": c.p_value, "q_value": c.q_value, "still_present": c.still_present,
                         "env_id": c.first_bad.env_id, "reproduce": c.first_bad.reproduce, "method": c.method})
    df = pd.DataFrame(rows, columns=CHANGES_COLUMNS)
    if len(df):
        df = df.sort_values(["verdict", "first_bad_created", "series"], ascending=[False, False, True], kind="stable")
    return df.reset_index(drop=True)


# --- Figures -----------------------------------------------------------------------------------------

def _tick(p: Point) -> str:
    return f"{short_commit(p.commit)}<br>{p.created[5:16].replace('T', ' ')}"


def _thin(x: np.ndarray) -> np.ndarray:
    if x.size <= MAX_HOVER_SAMPLES:
        return x
    return x[np.linspace(0, x.size - 1, MAX_HOVER_SAMPLES).round().astype(int)]


def _y_range(pts: list[Point]) -> list[float] | None:
    """Frame the medians, their intervals and the bulk of the samples; far outliers stay a zoom-out away."""
    lo = [p.ci_low if p.ci_low is not None else p.value for p in pts]
    hi = [p.ci_high if p.ci_high is not None else p.value for p in pts]
    for p in pts:
        if p.samples is not None and p.samples.size > 1:
            lo.append(float(np.percentile(p.samples, 1)))
            hi.append(float(np.percentile(p.samples, 90)))
    if not lo:
        return None
    a, b = min(lo), max(hi)
    pad = 0.08 * (b - a) if b > a else 0.05 * abs(b) or 1.0
    return [a - pad, b + pad]


def series_figure(s: SeriesHistory) -> dict[str, Any]:
    """Median with its interval per run, raw samples, unstable runs, change points and environment changes.

    Built as plotly.js JSON directly: the page draws it on demand, and plotly's Python validation
    would cost more than everything else in a large history.
    """
    pts = s.points
    unit = s.unit
    traces: list[dict[str, Any]] = []
    if s.has_samples:
        xs, ys, text = [], [], []
        for p in pts:
            if p.samples is None:
                continue
            shown = _thin(p.samples)
            # Spread each run's samples over a narrow band (in recorded order) so their density shows.
            xs += (p.index + 0.3 * (np.arange(shown.size) / max(shown.size - 1, 1) - 0.5)).tolist()
            ys += shown.tolist()
            note = "" if shown.size == p.samples.size else f" ({shown.size} of {p.samples.size} shown)"
            text += [f"{p.run_id}{note}"] * shown.size
        traces.append({"type": "scatter", "x": xs, "y": ys, "mode": "markers", "name": "raw samples", "text": text,
                       "marker": {"size": 4, "color": "rgba(90,110,160,0.25)"},
                       "hovertemplate": "sample %{y:.4g} " + unit + "<br>%{text}<extra></extra>"})
    custom = [[p.run_id, short_commit(p.commit), p.created, p.env_id, "-" if p.samples is None else int(p.samples.size),
               p.reproduce, p.note] for p in pts]

    def err(ps: list[Point]) -> dict[str, Any]:
        return {"type": "data", "symmetric": False,
                "array": [0 if p.ci_high is None else p.ci_high - p.value for p in ps],
                "arrayminus": [0 if p.ci_low is None else p.value - p.ci_low for p in ps]}

    hover = ("median %{y:.4g} " + unit + "<br>run %{customdata[0]} · commit %{customdata[1]}<br>%{customdata[2]} · "
             "env %{customdata[3]} · n=%{customdata[4]}<br>reproduce: %{customdata[5]}<extra></extra>")
    ok = [i for i, p in enumerate(pts) if not p.unstable and p.valid]
    traces.append({"type": "scatter", "x": [pts[i].index for i in ok], "y": [pts[i].value for i in ok],
                   "mode": "lines+markers", "name": "median", "error_y": err([pts[i] for i in ok]),
                   "marker": {"size": 8, "color": "#1f4e9c"}, "line": {"color": "#1f4e9c"},
                   "customdata": [custom[i] for i in ok], "hovertemplate": hover})
    bad = [i for i, p in enumerate(pts) if p.unstable or not p.valid]
    if bad:
        traces.append({"type": "scatter", "x": [pts[i].index for i in bad], "y": [pts[i].value for i in bad],
                       "mode": "markers", "name": "unstable / invalid", "error_y": err([pts[i] for i in bad]),
                       "marker": {"size": 11, "symbol": "x", "color": "#d08000"}, "customdata": [custom[i] for i in bad],
                       "hovertemplate": hover.replace("<extra>", "<br>%{customdata[6]}<extra>")})
    shapes, notes = [], []

    def vline(x: float, color: str, dash: str, width: int) -> None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": color, "dash": dash, "width": width}})

    for a, b, diffs in s.env_changes:
        vline(b.index - 0.5, "#888", "dot", 1)
        notes.append({"x": b.index - 0.5, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom", "showarrow": False,
                      "text": f"env {a.env_id[:6]}→{b.env_id[:6]}", "font": {"size": 10, "color": "#666"},
                      "hovertext": "<br>".join(diffs) or "environment changed"})
    for c in s.change_points:
        color = "#b3261e" if c.verdict == "regressed" else "#1b7f3b"
        x = (c.last_good.index + c.first_bad.index) / 2
        vline(x, color, "solid", 2)
        notes.append({"x": x, "y": 0, "xref": "x", "yref": "paper", "yanchor": "top", "showarrow": False,
                      "text": f"{c.verdict} ×{c.ratio:.3f}", "font": {"size": 10, "color": color},
                      "hovertext": f"{c.verdict}: ×{c.ratio:.3f} (95% CI {c.ci_low:.3f}–{c.ci_high:.3f}), "
                                   f"q={c.q_value:.2g}<br>last good {c.last_good.run_id}, first bad {c.first_bad.run_id}"})
    yaxis: dict[str, Any] = {"title": {"text": f"{s.key['metric']} ({unit})"}}
    y_range = _y_range(pts)
    if y_range is not None:
        yaxis["range"] = y_range
    layout = {"height": 340, "margin": {"t": 30, "l": 60, "r": 20, "b": 70}, "showlegend": True,
              "legend": {"orientation": "h", "y": 1.12, "x": 0}, "shapes": shapes, "annotations": notes,
              "xaxis": {"tickmode": "array", "zeroline": False, "tickvals": [p.index for p in pts], "ticktext": [_tick(p) for p in pts],
                        "range": [min(p.index for p in pts) - 0.6, max(p.index for p in pts) + 0.6],
                        "title": {"text": "run (commit, time UTC)"}},
              "yaxis": yaxis}
    return {"data": traces, "layout": layout}


# --- Page ----------------------------------------------------------------------------------------

def _filter_attrs(key: dict[str, Any]) -> str:
    return "".join(f' data-{k}="{esc(key[k])}"' for k in FILTER_KEYS)


def _filters(dash: Dashboard) -> str:
    parts = ['<div class="filters">']
    for k in FILTER_KEYS:
        values = sorted({str(s.key[k]) for s in dash.series})
        default = LATENCY.p50 if k == "metric" and LATENCY.p50 in values else ""
        opts = ['<option value="">all</option>'] + [
            f'<option value="{esc(v)}"{" selected" if v == default else ""}>{esc(v)}</option>' for v in values]
        parts.append(f'<label>{k} <select name="{k}" id="filter-{k}">{"".join(opts)}</select></label>')
    parts.append('<label><input type="checkbox" id="only-changes"> only series with change points</label>'
                 '<span class="note" id="shown-count"></span></div>')
    return "".join(parts)


def _changes_table(dash: Dashboard) -> str:
    df = changes_frame(dash)
    if df.empty:
        return ('<table id="changes"><tbody></tbody></table><p class="note" id="no-changes">No change points: no series '
                f"moved by more than ±{dash.threshold:.0%} with q &lt; {dash.alpha:g}.</p>")
    rows = []
    for r in df.to_dict("records"):
        r["change"] = f"×{r['ratio']:.3f} ({r['ratio_ci_low']:.3f}–{r['ratio_ci_high']:.3f})"
        r["good"] = f"{short_commit(r['last_good_commit'])} · {r['last_good_created'][:16].replace('T', ' ')}"
        r["bad"] = f"{short_commit(r['first_bad_commit'])} · {r['first_bad_created'][:16].replace('T', ' ')}"
        r["compare"] = f"costbench compare {r['last_good_run']} {r['first_bad_run']}"
        r["still"] = "yes" if r["still_present"] else "no"
        rows.append(r)
    cols = [Column("series", "series"), Column("verdict", "verdict"), Column("good", "last good"),
            Column("bad", "first bad"), Column("change", "change (95% CI)"),
            Column("ratio", "ratio", lambda v: fmt(v, ".3f"), True), Column("q_value", "q", lambda v: fmt(v, ".2g"), True),
            Column("still", "still present"), Column("compare", "compare the two runs", wrap=True)]
    return table(rows, cols, "changes", lambda r: {"data-series": r["series"], "class": f"change {r['verdict']}",
                                                   **{f"data-{k}": str(r[k]) for k in FILTER_KEYS}})


def _env_table(dash: Dashboard) -> str:
    seen, rows = set(), []
    runs = dash.runs.to_dict("records")
    for a, b in zip(runs, runs[1:]):
        if a["env_id"] != b["env_id"] and (a["env_id"], b["env_id"], b["run_id"]) not in seen:
            seen.add((a["env_id"], b["env_id"], b["run_id"]))
            rows.append({"run": b["run_id"], "created": b["created"], "from": a["env_id"], "to": b["env_id"],
                         "diffs": "; ".join(env_differences(a["env"], b["env"], limit=6))})
    if not rows:
        return '<p class="note" id="env-changes">All runs share one environment.</p>'
    return table(rows, [Column("run", "first run"), Column("created", "created"), Column("from", "env before"),
                        Column("to", "env after"), Column("diffs", "what changed")], "env-changes")


def _points_table(s: SeriesHistory, sid: str) -> str:
    rows = [{"run_id": p.run_id, "commit": short_commit(p.commit), "created": p.created, "env_id": p.env_id,
             "value": p.value, "ci": "-" if p.ci_low is None else f"{p.ci_low:.4g}–{p.ci_high:.4g}",
             "n": None if p.samples is None else p.samples.size, "spread": p.spread,
             "flags": p.note, "reproduce": p.reproduce} for p in s.points]
    cols = [Column("run_id", "run"), Column("commit", "commit"), Column("created", "created"), Column("env_id", "env"),
            Column("value", f"value ({s.unit})", lambda v: fmt(v, ".4g"), True), Column("ci", "95% CI"),
            Column("n", "n", lambda v: fmt(v, "d"), True), Column("spread", "IQR/median", lambda v: fmt(v, ".1%"), True),
            Column("flags", "flags", wrap=True), Column("reproduce", "reproduce", wrap=True)]
    return table(rows, cols, f"points-{sid}")


SCRIPT = """
const FIGS = %s;
const CONFIG = {displaylogo: false, responsive: true};
function draw(card) {
  if (card.dataset.drawn) return;
  const f = FIGS[card.dataset.fig];
  Plotly.newPlot(card.dataset.fig, f.data, f.layout, CONFIG);
  card.dataset.drawn = "1";
}
function applyFilters() {
  const want = {};
  document.querySelectorAll(".filters select").forEach(s => { want[s.name] = s.value; });
  const onlyChanges = document.getElementById("only-changes").checked;
  let shown = 0, total = 0;
  document.querySelectorAll("[data-series]").forEach(el => {
    let show = Object.entries(want).every(([k, v]) => v === "" || el.dataset[k] === v);
    const isCard = el.classList.contains("card");
    if (isCard && onlyChanges && el.dataset.changes === "0") show = false;
    el.style.display = show ? "" : "none";
    if (isCard) { total += 1; if (show) { shown += 1; draw(el); } }
  });
  document.getElementById("shown-count").textContent = shown + " of " + total + " series shown";
}
document.querySelectorAll(".filters select, #only-changes").forEach(el => el.addEventListener("change", applyFilters));
applyFilters();
"""


def render_html(dash: Dashboard) -> str:
    """The dashboard as one self-contained page."""
    figs, cards = {}, []
    for i, s in enumerate(dash.series):
        sid = f"s{i}"
        figs[f"fig-{sid}"] = series_figure(s)
        test = "change-point test on raw samples" if s.has_samples else "no raw samples: history only, no test"
        cards.append(
            f'<div class="card" id="card-{sid}" data-series="{esc(s.label)}" data-fig="fig-{sid}" '
            f'data-changes="{len(s.change_points)}"{_filter_attrs(s.key)}><h3>{esc(s.label)}</h3>'
            f'<div class="note">{len(s.points)} run(s) · {esc(test)} · {len(s.change_points)} change point(s)</div>'
            f'<div id="fig-{sid}" class="series-fig"></div>'
            f"<details><summary>points and the command that reproduces each</summary>{_points_table(s, sid)}"
            "</details></div>")
    n_reg = sum(c.verdict == "regressed" for s in dash.series for c in s.change_points)
    body = (_filters(dash)
            + f"<h2>Changes</h2><p>Change points per series: binary segmentation on run medians within one environment, "
              f"each split tested with Mann–Whitney U on the raw samples, Benjamini–Hochberg across all tests; "
              f"a change is reported when q &lt; {dash.alpha:g} and the ratio of medians is beyond ±{dash.threshold:.0%}. "
              f"Unstable runs (spread far above their environment's) are marked and left out.</p>"
            + _changes_table(dash)
            + "<h2>Environment changes</h2>" + _env_table(dash)
            + f"<h2>Series</h2>{''.join(cards) or '<p class=note>No results in the store.</p>'}")
    subtitle = (f"generated {esc(dash.generated)} from the results store · {len(dash.runs)} run(s) · "
                f"{len(dash.series)} series · {n_reg} regression(s)")
    data = json.dumps(figs, separators=(",", ":")).replace("</", "<\\/")
    return page("costbench dashboard", body, subtitle, SCRIPT % data)


def to_json(dash: Dashboard) -> dict[str, Any]:
    """Every point (without raw samples) and change point, for other tools."""
    def point(p: Point) -> dict[str, Any]:
        return {"run_id": p.run_id, "created": p.created, "commit": p.commit, "env_id": p.env_id, "value": p.value,
                "ci_low": p.ci_low, "ci_high": p.ci_high, "n": None if p.samples is None else int(p.samples.size),
                "spread": p.spread, "valid": p.valid, "unstable": p.unstable, "note": p.note, "reproduce": p.reproduce}

    return {"generated": dash.generated, "threshold": dash.threshold, "alpha": dash.alpha,
            "runs": [{k: r[k] for k in ("run_id", "created", "commit", "env_id", "suite")}
                     for r in dash.runs.to_dict("records")],
            "series": [{"key": s.key, "label": s.label, "unit": s.unit, "points": [point(p) for p in s.points],
                        "change_points": [{"verdict": c.verdict, "last_good": c.last_good.run_id,
                                           "first_bad": c.first_bad.run_id, "ratio": c.ratio, "ci_low": c.ci_low,
                                           "ci_high": c.ci_high, "p_value": c.p_value, "q_value": c.q_value,
                                           "still_present": c.still_present, "method": c.method}
                                          for c in s.change_points]}
                       for s in dash.series]}


def write_dashboard(dash: Dashboard, out_dir: Path) -> dict[str, Path]:
    """Write index.html, changes.csv and dashboard.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "index.html", "csv": out_dir / "changes.csv", "json": out_dir / "dashboard.json"}
    paths["html"].write_text(render_html(dash), encoding="utf-8")
    changes_frame(dash).to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps(to_json(dash), indent=1, default=str), encoding="utf-8")
    return paths

