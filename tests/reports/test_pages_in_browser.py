"""Every page rendered in headless Chromium: charts drawn, tables present, no errors, numbers equal to the store."""

import shutil
from pathlib import Path

import pytest

from costbench.harness.reports.dashboard import build_dashboard, changes_frame, write_dashboard
from costbench.harness.reports.data import load_selection
from costbench.harness.reports.hardware import Criteria, build_report
from costbench.harness.reports.hardware_pages import write_report
from costbench.harness.reports.prices import load_prices
from costbench.harness.results.store import load_results
from cdp_browser import external_references
from synth_runs import history_dir

# Two real runs of data/tiny-real/tiny.toml (digits-cnn; fp32 and int8 on ONNX Runtime) recorded on the dev
# machine with `costbench run tests/reports/data/tiny-real/tiny.toml`: real measurements, no minutes of running.
REAL = Path(__file__).parent / "data" / "tiny-real"

# What the tests read back from a page: every plotly chart, and every table cell with its exact value.
PAGE_STATE = """(() => {
  const charts = [...document.querySelectorAll('.js-plotly-plot')].map(d => ({
    id: d.id, svg: d.querySelectorAll('.main-svg').length, traces: (d.data || []).length,
    points: d.querySelectorAll('.scatterlayer .point, .barlayer .point').length,
    visible: d.offsetParent !== null}));
  const tables = {};
  document.querySelectorAll('table[id]').forEach(t => {
    tables[t.id] = [...t.querySelectorAll('tbody tr')].map(tr => ({
      attrs: Object.assign({}, tr.dataset), cls: tr.className, visible: tr.offsetParent !== null,
      cells: Object.fromEntries([...tr.querySelectorAll('td')].map(td => [td.dataset.col,
        {text: td.textContent, value: td.dataset.value === undefined ? null : Number(td.dataset.value)}]))}));
  });
  return {charts, tables, title: document.title};
})()"""


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    d = tmp_path_factory.mktemp("real") / "results"
    shutil.copytree(REAL / "runs", d / "runs")  # a copy: the store file is written beside the run files
    return d


def load(browser, path):
    page = browser.open(path)
    try:
        state = page.evaluate(PAGE_STATE)
        return page, state
    except Exception:
        page.close()
        raise


def test_error_capture_catches_errors(browser, tmp_path):
    """The checks below mean something only if a broken page fails them."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                   'script-src \'unsafe-inline\'"></head><body><img src="https://cdn.example.com/x.png">'
                   '<script>console.error("boom"); not_defined();</script></body></html>')
    page = browser.open(bad)
    errors = page.collect_errors()
    page.close()
    assert any("boom" in e for e in errors) and any("not_defined" in e for e in errors)
    assert any("Content Security Policy" in e for e in errors)


def test_report_page(browser, real_results, tmp_path):
    sel = load_selection([real_results])
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(slo_ms=1.0, max_drop_pt=1.0))
    paths = write_report(rep, tmp_path / "report")
    assert external_references(paths["html"].read_text()) == []
    page, state = load(browser, paths["html"])
    errors = page.collect_errors()
    page.close()
    assert errors == []
    assert state["title"] == "costbench hardware-selection report"
    charts = {c["id"]: c for c in state["charts"]}
    assert set(charts) == {"fig-latency-digits-cnn", "fig-cost-digits-cnn", "fig-sbs-digits-cnn"}
    assert all(c["svg"] > 0 and c["traces"] > 0 and c["points"] > 0 for c in charts.values())
    assert {"runs", "configs-digits-cnn", "side-by-side-digits-cnn"} <= set(state["tables"])
    assert [r["cells"]["run_id"]["text"] for r in state["tables"]["runs"]] == sel.runs.run_id.tolist()

    rows = state["tables"]["configs-digits-cnn"]
    assert len(rows) == 2  # fp32 and int8: each from the later of the two runs
    store = load_results(real_results)
    for r in rows:
        a = r["attrs"]
        mine = store[(store.run_id == a["run"]) & (store.backend == a["backend"]) & (store.variant == a["variant"])]
        assert a["run"] == sel.runs.run_id.iloc[-1]

        def stored(metric, scenario=None):
            m = mine[(mine.metric == metric) & ((mine.scenario == scenario) if scenario else True)]
            return m.value.iloc[0]

        cells = r["cells"]
        assert cells["p50_ms"]["value"] == stored("latency_p50", "single_stream")
        assert cells["p50_ms"]["text"] == f"{stored('latency_p50', 'single_stream'):.3f}"
        assert cells["p99_ms"]["value"] == stored("latency_p99", "single_stream")
        thr = stored("throughput", "offline")
        assert cells["throughput"]["value"] == thr
        assert cells["size_mb"]["value"] == pytest.approx(stored("model_size") / 1e6, rel=1e-12)
        assert cells["cost_per_m"]["value"] == pytest.approx(0.08925 / (3600 * thr) * 1e6, rel=1e-12)
        assert cells["accuracy_drop_pt"]["value"] == pytest.approx(-100 * stored("task_accuracy_delta"), abs=1e-12)
    pick = [r for r in rows if "pick" in r["cls"].split()]
    want = rep.recommendations["digits-cnn"].pick
    assert len(pick) == 1 and (pick[0]["attrs"]["backend"], pick[0]["attrs"]["variant"]) == (want["backend"],
                                                                                              want["variant"])


def test_dashboard_page_and_filters(browser, tmp_path):
    results = history_dir(tmp_path / "results")
    dash = build_dashboard(load_selection([results]))
    paths = write_dashboard(dash, tmp_path / "site")
    assert external_references(paths["html"].read_text()) == []
    page, state = load(browser, paths["html"])
    try:
        # Default filter: metric = latency_p50, so two series (fp32, int8) are shown and drawn.
        shown = [c for c in state["charts"] if c["visible"]]
        assert len(shown) == 2 and all(c["svg"] > 0 and c["points"] > 0 for c in shown)
        changes = [r for r in state["tables"]["changes"] if r["visible"]]
        want = changes_frame(dash)
        assert [r["attrs"]["series"] for r in changes] == want[want.metric == "latency_p50"].series.tolist()
        assert changes[0]["cells"]["ratio"]["value"] == want[want.metric == "latency_p50"].ratio.iloc[0]
        assert changes[0]["cells"]["verdict"]["text"] == "regressed"

        # Raw samples on hover are the stored samples; the median's hover carries the reproduce command.
        label = "digits-cnn / int8 / onnxruntime / single_stream / b1 / latency_p50"
        fig = page.evaluate(f"""(() => {{
            const card = [...document.querySelectorAll('.card')].find(c => c.dataset.series === {label!r});
            const d = document.getElementById(card.dataset.fig);
            return {{samples: d.data[0].y, median: d.data[1].y, custom: d.data[1].customdata,
                     notes: d.layout.annotations.map(a => a.text)}};
        }})()""")
        store = load_results(results)
        lat = store[(store.variant == "int8") & (store.metric == "latency_p50")].sort_values("created")
        assert fig["samples"][:200] == pytest.approx(list(lat.samples.iloc[0]), rel=1e-15)
        assert fig["median"] == lat.value.tolist()
        series = next(s for s in dash.series if s.label == label)
        assert [c[5] for c in fig["custom"]] == [p.reproduce for p in series.points]
        assert any(n.startswith("regressed") for n in fig["notes"]) and any(n.startswith("env ") for n in fig["notes"])

        # Filters: every metric, then one variant.
        n_all = page.evaluate("""(() => { const s = document.getElementById('filter-metric'); s.value = '';
            s.dispatchEvent(new Event('change')); return document.getElementById('shown-count').textContent; })()""")
        assert n_all == f"{len(dash.series)} of {len(dash.series)} series shown"
        drawn = page.evaluate("[...document.querySelectorAll('.card')].filter(c => c.querySelector('.main-svg')).length")
        assert drawn == len(dash.series)
        page.evaluate("""(() => { const s = document.getElementById('filter-variant'); s.value = 'fp32';
            s.dispatchEvent(new Event('change')); })()""")
        after = page.evaluate(PAGE_STATE)
        assert not any(r["visible"] for r in after["tables"]["changes"])  # the changes are all int8
        visible_cards = page.evaluate("[...document.querySelectorAll('.card')].filter(c => c.offsetParent)"
                                      ".map(c => c.dataset.variant)")
        assert visible_cards and set(visible_cards) == {"fp32"}
        assert page.collect_errors() == []
    finally:
        page.close()


def test_dashboard_of_real_runs(browser, real_results, tmp_path):
    paths = write_dashboard(build_dashboard(load_selection([real_results])), tmp_path / "site")
    page, state = load(browser, paths["html"])
    errors = page.collect_errors()
    page.close()
    assert errors == []
    shown = [c for c in state["charts"] if c["visible"]]
    assert shown and all(c["svg"] > 0 and c["points"] > 0 for c in shown)
