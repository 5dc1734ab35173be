"""The hardware-selection report: values from the store, cost, Pareto frontiers, the pick and the reasons."""

import functools
import pandas as pd
import pytest
from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.harness.reports.data import RunNotFound, list_all_runs, load_selection, resolve_runs
from costbench.harness.reports.hardware import Criteria, build_report, pareto_front
from costbench.harness.reports.hardware_pages import render_html, render_markdown, to_csv_frame, write_report
from costbench.harness.reports.prices import load_prices
from costbench.harness.results.store import load_results
from synth_runs import case, make_env, server_case, write_run

CPU = make_env("Synthetic Xeon 8488C", 2)
GPU = make_env("Synthetic EPYC", 4, gpus=[{"name": "NVIDIA A10G", "memory": "24 GiB", "driver": "550"}])


def config(variant, backend, median, thr, drop_pt, device="cpu", seed=0):
    """A configuration measured in both scenarios: latency from single_stream, throughput from offline."""
    common = {"variant": variant, "backend": backend, "device": device, "acc_delta": -drop_pt / 100}
    return [case(scenario="single_stream", median_ms=median, seed=seed, **common),
            case(scenario="offline", median_ms=median, throughput=thr, seed=seed + 1, **common)]


@pytest.fixture
def results(tmp_path):
    write_run(tmp_path, "20260101-000000-cpu001", [
        *config("fp32", "onnxruntime", 1.0, 1000.0, 0.0),
        *config("int8", "onnxruntime", 0.6, 1800.0, 0.2),
        *config("int8", "openvino", 0.5, 2000.0, 2.0),
        case(variant="int8", backend="torch", status="skipped", reason="variant built by 'int8' comes as onnx"),
        case(variant="fp32", backend="executorch", status="skipped",
             reason="backend executorch unavailable: executorch is not installed: pip install 'costbench[edge]'"),
    ], created="2026-01-01T00:00:00+00:00", env=CPU)
    write_run(tmp_path, "20260102-000000-gpu001", [*config("fp32", "torch", 0.3, 8000.0, 0.0, device="cuda")],
              created="2026-01-02T00:00:00+00:00", env=GPU)
    return tmp_path


def build(results, criteria, assign=("aws/c7i.large",), gpu="aws/g5.xlarge"):
    runs = list_all_runs([results])
    sel = load_selection([results], resolve_runs(["20260101", "20260102"], runs), runs)
    items = [f"{GPU['env_id']}={gpu}", *assign] if gpu else list(assign)
    prices = load_prices().with_assignments(items, list(zip(sel.runs.run_id, sel.runs.env_id)))
    return build_report(sel, prices, criteria)


def row(rep, backend, variant):
    c = rep.configs
    return c[(c.backend == backend) & (c.variant == variant)].iloc[0]


def test_values_come_from_the_store_and_cost_follows_the_formula(results):
    rep = build(results, Criteria(slo_ms=0.8, max_drop_pt=1.0))
    df = load_results(results)
    stored = df[(df.backend == "onnxruntime") & (df.variant == "int8") & (df.metric == "latency_p50")].iloc[0]
    r = row(rep, "onnxruntime", "int8")
    assert r.p50_ms == stored.value and r.p50_ci_low == stored.ci_low and r.p50_ci_high == stored.ci_high
    thr = df[(df.backend == "onnxruntime") & (df.variant == "int8") & (df.metric == "throughput")
             & (df.scenario == "offline")].value.iloc[0]
    assert r.throughput == thr == 1800.0
    assert r.cost_per_m == pytest.approx(0.08925 / (3600 * 1800.0) * 1e6)
    assert r.accuracy_drop_pt == pytest.approx(0.2) and r.accuracy_basis == "task accuracy"
    assert pd.isna(r.parity_loss_pt) and r.loss_measure == "task accuracy: drop vs fp32"
    assert row(rep, "torch", "fp32").machine == "aws/g5.xlarge"
    assert set(rep.configs.env_id) == {CPU["env_id"], GPU["env_id"]}  # two machines side by side
    # A combination that can never run is not a configuration: one note per model stands for it.
    assert rep.configs[(rep.configs.backend == "torch") & (rep.configs.variant == "int8")].empty
    assert any(n.startswith("digits-cnn: 1 combination(s) can never run") and "torch×int8" in n for n in rep.notes)


def test_pick_and_why_each_faster_or_cheaper_option_lost(results):
    rep = build(results, Criteria(slo_ms=0.8, max_drop_pt=1.0))
    rec = rep.recommendations["digits-cnn"]
    assert rec.objective == "cost"
    assert (rec.pick["backend"], rec.pick["variant"], rec.pick["device"]) == ("onnxruntime", "int8", "cpu")
    why = {(r["backend"], r["variant"]): reasons for r, reasons in rec.rejected}
    assert set(why) == {("openvino", "int8"), ("torch", "fp32")}  # fp32 on the CPU is slower and dearer: not listed
    assert "task accuracy: drop vs fp32 2.00 pt (no interval stored) > task accuracy budget 1 pt" in why[("openvino", "int8")][0]
    assert why[("torch", "fp32")][0].startswith("costs 0.03493 USD/M inferences, more than the pick's 0.01377")
    assert [r["backend"] for r, _ in rec.unmeasured] == ["executorch"]  # a fixable skip; torch×int8 can never run

    tight = build(results, Criteria(slo_ms=0.4, max_drop_pt=1.0)).recommendations["digits-cnn"]
    assert tight.pick["backend"] == "torch" and tight.pick["device"] == "cuda"
    none = build(results, Criteria(slo_ms=0.1, max_drop_pt=1.0)).recommendations["digits-cnn"]
    assert none.pick is None and all(any("> SLO 0.1 ms" in w for w in why) for _, why in none.rejected)


def test_pareto_frontiers(results):
    rep = build(results, Criteria(max_drop_pt=1.0))
    c = rep.configs
    lat = {(r.backend, r.variant) for r in c.itertuples() if r.frontier_latency}
    cost = {(r.backend, r.variant) for r in c.itertuples() if r.frontier_cost}
    assert lat == {("torch", "fp32")}  # fastest and no accuracy drop: dominates the rest
    assert cost == {("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32")}
    assert pareto_front([1, 2, 3, None], [3, 2, 3, 0]) == [True, True, False, False]
    assert pareto_front([1, 1], [0, 0]) == [True, True]  # ties dominate neither


def test_without_prices_ranks_by_latency_and_says_so(results):
    rep = build(results, Criteria(max_drop_pt=1.0, infer_machines=False), assign=(), gpu=None)
    rec = rep.recommendations["digits-cnn"]
    assert rec.objective == "latency" and rec.pick["backend"] == "torch"
    assert "ranked by latency" in rec.note
    assert rep.configs.cost_per_m.isna().all()


def test_markdown_and_csv(results, tmp_path):
    rep = build(results, Criteria(slo_ms=0.8, max_drop_pt=1.0))
    md = render_markdown(rep)
    assert "**Recommended:** onnxruntime int8 b1 on aws/c7i.large" in md
    assert "openvino int8 b1 on aws/c7i.large" in md and "task accuracy: drop vs fp32 2.00 pt" in md
    assert "budget decided on task accuracy" in md and "Budget basis: task accuracy" in md
    assert "Pareto frontier (cost vs task-accuracy drop)" in md and "Side by side" in md
    csv = to_csv_frame(rep)
    assert csv.recommended.sum() == 1 and len(csv) == 5
    paths = write_report(rep, tmp_path / "out")
    back = pd.read_csv(paths["csv"])
    assert back.loc[back.recommended, "backend"].tolist() == ["onnxruntime"]
    assert back.p50_ms.dropna().tolist() == csv.p50_ms.dropna().tolist()


def test_latest_run_wins_for_a_repeated_configuration(results):
    write_run(results, "20260103-000000-cpu002", [*config("fp32", "onnxruntime", 2.0, 500.0, 0.0, seed=5)],
              created="2026-01-03T00:00:00+00:00", env=CPU)
    sel = load_selection([results], ["20260101-000000-cpu001", "20260103-000000-cpu002"])
    rep = build_report(sel, load_prices(), Criteria())
    r = row(rep, "onnxruntime", "fp32")
    assert r.run_id == "20260103-000000-cpu002" and r.throughput == 500.0
    assert any("more than one selected run" in n for n in rep.notes)


def test_unknown_run_lists_similar_ones(results):
    runs = list_all_runs([results])
    with pytest.raises(RunNotFound, match="similar: 20260101-000000-cpu001"):
        resolve_runs(["20260101-000000-cpu00x"], runs)
    with pytest.raises(RunNotFound, match="ambiguous"):
        resolve_runs(["2026"], runs)
    assert resolve_runs(["last"], runs) == ["20260102-000000-gpu001"]


def test_cli_writes_three_forms(results, tmp_path):
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", "20260101", "20260102", "--results", str(results), "-o", str(out),
                                 "--slo-ms", "0.8", "--machine-type", "aws/c7i.large",
                                 "--machine-type", f"{GPU['env_id']}=aws/g5.xlarge"])
    assert r.exit_code == 0, r.output
    assert "recommended onnxruntime int8 b1 on aws/c7i.large" in r.output
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "report.csv"}
    bad = CliRunner().invoke(app, ["report", "nope", "--results", str(results)])
    assert bad.exit_code == 2 and "no such run" in bad.output


def test_energy_cost_for_own_hardware(tmp_path):
    write_run(tmp_path, "20260105-000000-own001", [
        case(scenario="single_stream", median_ms=1.0, power_w=360.0),
        case(scenario="offline", median_ms=1.0, throughput=1000.0, power_w=360.0)])
    f = tmp_path / "prices.toml"
    f.write_text('energy_price_per_kwh = 0.15\n[machines."onprem/box"]\nhourly = 3.6\nenergy_included = false\n')
    sel = load_selection([tmp_path])
    prices = load_prices(f).with_assignments(["onprem/box"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    r = build_report(sel, prices, Criteria()).configs.iloc[0]
    # $3.60/h at 1000/s is $1 per million; 360 W at 1000/s is 0.1 kWh per million, $0.015 at $0.15/kWh.
    assert r.machine_cost_per_m == pytest.approx(1.0) and r.energy_cost_per_m == pytest.approx(0.015)
    assert r.cost_per_m == pytest.approx(1.015)


def test_store_keeps_case_provenance_and_run_source(results):
    sel = load_selection([results])
    assert set(sel.runs.suite_source) == {"suites/smoke.toml"}
    assert sel.runs.argv.iloc[0] == ["costbench", "run", "suites/smoke.toml"]
    info = sel.info("20260101-000000-cpu001", "digits-cnn-int8-onnxruntime-cpu-single_stream-b1")
    assert info["artifact"]["format"] == "onnx" and info["provenance"]["recipe"] == "int8"
    assert len(sel.cases) == 10 and set(sel.cases.status) == {"ok", "skipped"}


def test_server_scenario_ranks_by_cost_at_the_slo(tmp_path):
    """Offline throughput ignores latency: with server results for every priced configuration, the pick is
    the cheapest at the rate each sustains within its SLO; one that never meets the SLO is rejected."""
    write_run(tmp_path, "20260101-000000-srv001", [
        # openvino int8: the best offline throughput, but it sustains only 150 q/s within the SLO
        *config("int8", "openvino", 0.5, 3000.0, 0.0),
        server_case(variant="int8", backend="openvino", max_qps=150.0),
        *config("int8", "onnxruntime", 0.6, 1800.0, 0.0),
        server_case(variant="int8", backend="onnxruntime", max_qps=900.0),
        *config("fp32", "onnxruntime", 0.4, 1000.0, 0.0),
        server_case(variant="fp32", backend="onnxruntime", slo_met=False),
    ], env=CPU)
    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], resolve_runs(["20260101"], runs), runs)
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(max_drop_pt=1.0))
    rec = rep.recommendations["digits-cnn"]
    assert rec.objective == "cost_at_slo" and "p99 ≤ 10 ms" in rec.note
    assert (rec.pick["backend"], rec.pick["variant"]) == ("onnxruntime", "int8")
    hourly = row(rep, "onnxruntime", "int8").hourly
    assert row(rep, "onnxruntime", "int8").cost_per_m_at_slo == pytest.approx(hourly / (3600 * 900.0) * 1e6)
    assert row(rep, "openvino", "int8").slo_throughput == 150.0
    why = {(r["backend"], r["variant"]): reasons for r, reasons in rec.rejected}
    assert "at the SLO, more than the pick's" in why[("openvino", "int8")][0]
    assert "p99 ≤ 10 ms not met at any rate tried" in why[("onnxruntime", "fp32")][0]
    md = render_markdown(rep)
    assert "samples/s within SLO" in md and "fails SLO" in md
    assert "at p99 ≤ 10 ms (900.0 [855.0–945.0] samples/s within it)" in md
    # --guarantee bills the interval's lower end
    sure = build_report(sel, prices, Criteria(max_drop_pt=1.0, guarantee=True))
    assert row(sure, "onnxruntime", "int8").slo_throughput == pytest.approx(855.0)
    assert "(≥ 855.0 samples/s within it)" in render_markdown(sure)
    html = render_html(rep)
    assert 'id="fig-server-digits-cnn"' in html and "Latency under load" in html
    csv = to_csv_frame(rep).set_index(["backend", "variant"])
    assert csv.loc[("openvino", "int8"), "cost_per_m_at_slo"] > csv.loc[("onnxruntime", "int8"), "cost_per_m_at_slo"]
    assert csv.loc[("openvino", "int8"), "cost_per_m"] < csv.loc[("onnxruntime", "int8"), "cost_per_m"]

    # Without the server scenario for every priced configuration, offline cost decides, and the report says why.
    write_run(tmp_path, "20260102-000000-srv002", [*config("int8", "openvino", 0.5, 3000.0, 0.0),
                                                   *config("int8", "onnxruntime", 0.6, 1800.0, 0.0),
                                                   server_case(variant="int8", backend="onnxruntime", target_qps=500.0)],
              env=CPU)
    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], resolve_runs(["20260102"], runs), runs)
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(max_drop_pt=1.0))
    rec = rep.recommendations["digits-cnn"]
    assert rec.objective == "cost" and rec.pick["backend"] == "openvino" and "1 of 2 priced" in rec.note
    fixed = row(rep, "onnxruntime", "int8")
    assert fixed.slo_throughput == 500.0 and fixed.slo_bound == "at least"
    assert "≥ 500.0" in render_markdown(rep)


def test_a_batched_server_scenario_is_the_rate_billed_and_both_curves_are_drawn(tmp_path):
    """Where a configuration ran the server scenario with and without dynamic batching, the cost at the SLO
    uses the rate of the one that sustained more (here the batched one), and the page draws both curves."""
    batching = {"max_batch": 8, "max_queue_delay_ms": 4.0, "preferred_batch_sizes": [4, 8],
                "batch_size_histogram": {4: 10, 8: 90}}
    write_run(tmp_path, "20260101-000000-bat001", [
        *config("int8", "openvino", 0.5, 3000.0, 0.0),
        server_case(variant="int8", backend="openvino", max_qps=300.0),
        server_case(variant="int8", backend="openvino", max_qps=1200.0, scenario="server-batched", batching=batching),
        *config("int8", "onnxruntime", 0.6, 1800.0, 0.0),
        server_case(variant="int8", backend="onnxruntime", max_qps=900.0),
    ], env=CPU)
    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], resolve_runs(["20260101"], runs), runs)
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(max_drop_pt=1.0))
    ov, ort = row(rep, "openvino", "int8"), row(rep, "onnxruntime", "int8")
    assert ov.slo_throughput == 1200.0 and ov.server_batching == "max_batch 8, delay 4 ms, preferred 4/8"
    assert ov.cost_per_m_at_slo == pytest.approx(ov.hourly / (3600 * 1200.0) * 1e6)
    assert ort.slo_throughput == 900.0 and pd.isna(ort.server_batching)
    # Unbatched, openvino (300/s) would cost more than onnxruntime (900/s); batched it is the pick.
    rec = rep.recommendations["digits-cnn"]
    assert rec.objective == "cost_at_slo" and rec.pick["backend"] == "openvino"
    assert [c["batching"] for c in ov.server_curves] == [None, "max_batch 8, delay 4 ms, preferred 4/8"]
    html = render_html(rep)
    assert "batching max_batch 8, delay 4 ms" in html and "no batching" in html  # trace names (JSON escapes "/")
    assert "dynamic batching" in render_markdown(rep)
    assert to_csv_frame(rep).set_index(["backend", "variant"]).loc[("openvino", "int8"), "server_batching"] == \
        "max_batch 8, delay 4 ms, preferred 4/8"


def test_batching_that_sustains_less_is_not_billed(tmp_path):
    """Measured on a 2-vCPU machine: batches of up to 8 EfficientNet images sustained fewer queries/s within
    the SLO than single queries. The cost bills the faster way of serving and names it (no batching)."""
    batching = {"max_batch": 8, "max_queue_delay_ms": 4.0, "batch_size_histogram": {1: 95, 2: 5}}
    write_run(tmp_path, "20260101-000000-bat002", [
        *config("int8", "onnxruntime", 0.6, 1800.0, 0.0),
        server_case(variant="int8", backend="onnxruntime", max_qps=57.0),
        server_case(variant="int8", backend="onnxruntime", max_qps=6.0, scenario="server-batched", batching=batching),
    ], env=CPU)
    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], resolve_runs(["20260101"], runs), runs)
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    ort = row(build_report(sel, prices, Criteria(max_drop_pt=1.0)), "onnxruntime", "int8")
    assert ort.slo_throughput == 57.0 and pd.isna(ort.server_batching)
    assert ort.cost_per_m_at_slo == pytest.approx(ort.hourly / (3600 * 57.0) * 1e6)
    assert [c["batching"] for c in ort.server_curves] == [None, "max_batch 8, delay 4 ms"]


def test_an_invalid_server_result_is_not_billed(tmp_path):
    write_run(tmp_path, "20260101-000000-srv003", [
        *config("int8", "openvino", 0.5, 3000.0, 0.0),
        server_case(variant="int8", backend="openvino", max_qps=5000.0, valid=False),  # a busy machine's verdict
        *config("int8", "onnxruntime", 0.6, 1800.0, 0.0),
        server_case(variant="int8", backend="onnxruntime", max_qps=900.0),
    ], env=CPU)
    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], resolve_runs(["20260101"], runs), runs)
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rec = build_report(sel, prices, Criteria(max_drop_pt=1.0)).recommendations["digits-cnn"]
    assert rec.objective == "cost_at_slo" and rec.pick["backend"] == "onnxruntime"
    (r, why), = rec.rejected
    assert r["backend"] == "openvino" and "server result invalid" in why[0]


# --- Basis of the budget: task accuracy with its interval, parity where there are no labels (issue 13) ----------

def with_rows(records, *rows):
    """The case records with extra accuracy rows (as the worker writes them) on each ok record."""
    for rec in records:
        if rec["status"] == "ok":
            rec["metrics"] += [dict(r) for r in rows]
    return records


def confident(value, low, high, samples=38):
    return {"metric": "top1_agreement_confident", "value": value, "unit": "ratio", "ci_low": low, "ci_high": high,
            "details": {"kind": "parity", "samples": samples, "threshold": 0.5, "total_samples": 137}}


def parity_config(variant, backend, median, thr, top1, conf):
    recs = [case(model="efficientnet-lite0", scenario=sc, median_ms=median, variant=variant, backend=backend,
                 throughput=thr if sc == "offline" else None, acc_delta=None, top1=top1)
            for sc in ("single_stream", "offline")]
    return with_rows(recs, conf)


def test_unlabelled_classifier_is_judged_on_confident_parity_not_called_accuracy(tmp_path):
    """EfficientNet-Lite0's case: int8 flips 22% of top-1 classes, all where fp32 is unsure; on the 38 samples where
    fp32 is confident it agrees on every one. The int8 variant passes on the parity basis; a variant that flips
    confident samples does not; nothing calls parity an accuracy drop."""
    write_run(tmp_path, "20260101-000000-eff001", [
        *parity_config("fp32", "openvino", 3.0, 330.0, 1.0, confident(1.0, 0.908, 1.0)),
        *parity_config("int8", "onnxruntime", 1.5, 660.0, 0.781, confident(1.0, 0.908, 1.0)),
        *parity_config("int8-bad", "openvino", 1.2, 800.0, 0.70, confident(0.80, 0.65, 0.90)),
    ], env=CPU)
    sel = load_selection([tmp_path])
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(max_drop_pt=1.0, max_parity_loss_pt=1.0))
    rec = rep.recommendations["efficientnet-lite0"]
    assert (rec.pick["backend"], rec.pick["variant"]) == ("onnxruntime", "int8")
    r = row(rep, "onnxruntime", "int8")
    assert r.accuracy_basis == "parity" and r.parity_loss_pt == 0.0 and pd.isna(r.accuracy_drop_pt)
    assert r.loss_high_pt == pytest.approx(9.2) and r.loss_samples == 38 and r.budget_verdict == "undecided"
    why = {(x["variant"]): reasons for x, reasons in rec.rejected}
    assert "parity loss: top-1 disagreement with fp32 where fp32 is confident (top-1 probability ≥ 0.5) 20.00 pt" in why["int8-bad"][0]
    assert "> parity budget 1 pt" in why["int8-bad"][0]
    md, html = render_markdown(rep), render_html(rep)
    for text in (md, html):
        assert "budget decided on parity" in text and "38 samples" in text
        assert "undecided: the data cannot decide a budget of 1 pt" in text
        # "accuracy drop" appears only in the criteria (the budget for labelled models) and in "a loose bound on an
        # accuracy drop"; never for a parity value
        allowed = ("task-accuracy drop ≤ 1 pt where labelled", "a loose bound on an accuracy drop")
        assert "accuracy drop" not in functools.reduce(lambda t, a: t.replace(a, ""), allowed, text)
        assert "parity loss pt" in text and "task-acc drop pt" not in text
    assert "Pareto frontier (latency vs parity loss)" in md
    # The old basis, top-1 disagreement on every sample, would have rejected it (21.9 pt > 1 pt).
    assert 100 * (1 - r.top1_agreement) > 20


def test_labelled_budget_the_data_cannot_decide(tmp_path):
    """3 of 360 digits lost: 0.83 pt, within a 1-pt budget on the estimate, but its interval straddles the budget."""
    delta = {"metric": "task_accuracy_delta", "value": -3 / 360, "unit": "ratio", "ci_low": -0.0242, "ci_high": 0.0027,
             "details": {"kind": "task_accuracy", "samples": 360}}
    recs = [case(scenario=sc, variant="int8", median_ms=0.5, acc_delta=None, throughput=2000.0 if sc == "offline" else None)
            for sc in ("single_stream", "offline")]
    write_run(tmp_path, "20260101-000000-dig001", [*config("fp32", "onnxruntime", 1.0, 1000.0, 0.0),
                                                   *with_rows(recs, delta)], env=CPU)
    sel = load_selection([tmp_path])
    prices = load_prices().with_assignments(["aws/c7i.large"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    rep = build_report(sel, prices, Criteria(max_drop_pt=1.0))
    rec = rep.recommendations["digits-cnn"]
    assert rec.pick["variant"] == "int8" and rec.pick["budget_verdict"] == "undecided"
    text = render_markdown(rep)
    assert ("budget decided on task accuracy: drop vs fp32 0.83 pt (95% CI -0.27 to 2.42 pt, "
            "360 samples); undecided: the data cannot decide a budget of 1 pt") in text
    tight = build_report(sel, prices, Criteria(max_drop_pt=0.5)).recommendations["digits-cnn"]
    assert tight.pick["variant"] == "fp32"
    (r, why), = tight.rejected
    assert "> task accuracy budget 0.5 pt; undecided: the data cannot decide a budget of 0.5 pt" in why[0]


def test_machine_type_is_inferred_from_the_fingerprint_and_said_so(tmp_path):
    spr = make_env("Intel(R) Xeon(R) Platinum 8488C", 2)
    spr["recorded"]["memory_bytes"] = int(3.7 * 2**30)  # what a c7i.large shows (16 GiB would be an r7i.large)
    write_run(tmp_path, "20260101-000000-spr001", [*config("fp32", "onnxruntime", 1.0, 1000.0, 0.0)], env=spr)
    sel = load_selection([tmp_path])
    rep = build_report(sel, load_prices(), Criteria())
    r = row(rep, "onnxruntime", "fp32")
    assert r.machine == "aws/c7i.large" and r.machine_inferred
    assert r.cost_per_m == pytest.approx(0.08925 / (3600 * 1000.0) * 1e6)
    note = next(n for n in rep.notes if "inferred as aws/c7i.large" in n)
    assert "CPU 'Intel(R) Xeon(R) Platinum 8488C'" in note and "2 logical cores = its 2 vCPUs" in note
    assert f"--machine-type {spr['env_id'][:12]}=TYPE" in note
    md, html = render_markdown(rep), render_html(rep)
    assert "aws/c7i.large (inferred) at 0.08925 USD/h" in md and "inferred as aws/c7i.large" in md
    assert "aws/c7i.large (inferred)" in html and "USD / M inferences" in html
    # An assignment wins over the inference; --no-infer-machine leaves the machine unpriced.
    prices = load_prices().with_assignments(["aws/m7i.xlarge"], list(zip(sel.runs.run_id, sel.runs.env_id)))
    assert row(build_report(sel, prices, Criteria()), "onnxruntime", "fp32").machine == "aws/m7i.xlarge"
    off = build_report(sel, load_prices(), Criteria(infer_machines=False))
    assert row(off, "onnxruntime", "fp32").machine is None


def test_cli_budget_and_machine_flags(tmp_path):
    c7i = make_env("Intel(R) Xeon(R) Platinum 8488C", 2)
    c7i["recorded"]["memory_bytes"] = int(3.7 * 2**30)
    write_run(tmp_path, "20260101-000000-eff002", [
        *parity_config("fp32", "openvino", 3.0, 330.0, 1.0, confident(1.0, 0.908, 1.0)),
        *parity_config("int8", "openvino", 1.5, 660.0, 0.9, confident(0.974, 0.865, 0.995)),  # one of 38 flipped
    ], env=c7i)
    args = ["report", "last", "--results", str(tmp_path), "-o", str(tmp_path / "rep")]
    strict = CliRunner().invoke(app, args)
    assert strict.exit_code == 0, strict.output
    assert "recommended openvino fp32" in strict.output and "inferred as aws/c7i.large" in strict.output
    assert "[assign] in a price file" in strict.output  # printed as text, not read as markup
    loose = CliRunner().invoke(app, [*args, "--max-parity-loss", "3", "--no-infer-machine"])
    assert loose.exit_code == 0, loose.output
    assert "recommended openvino int8" in loose.output and "parity loss ≤ 3 pt" in loose.output
    assert "inferred as" not in loose.output and "ranked by latency" in loose.output
    assert "inferring it from the fingerprint is off" in loose.output
    bad = CliRunner().invoke(app, [*args, "--max-parity-loss", "-1"])
    assert bad.exit_code == 2 and "parity budget" in bad.output


# ------------------------------------------------------------------------------------------- fleet runs


def test_a_fleet_run_is_reported_per_machine_class(tmp_path):
    """A Ray run measures the same case on two machine classes: two configurations, each with its own machine."""
    intel, amd = make_env(cpu="Intel(R) Xeon(R) Platinum 8488C", cores=2), make_env(cpu="AMD EPYC 7R13 Processor", cores=4)
    driver = make_env(cpu="driver laptop", cores=8)
    cases = []
    for env, median in ((intel, 1.0), (amd, 2.0)):
        for c in config("fp32", "onnxruntime", median, 1000.0 / median, 0.0):
            cases.append({**c, "env_id": env["env_id"], "case": {**c["case"], "case_id": c["case"]["case_id"] + env["env_id"]}})
    rf = write_run(tmp_path, "20260103-000000-fleet1", cases, env=driver)
    header = rf.header()  # the Ray executor records each machine class's fingerprint in the header
    header["executor"] = {"kind": "ray", "machines": {e["env_id"]: {"fingerprint": e, "nodes": []} for e in (intel, amd)}}
    lines = rf.path.read_text().splitlines()
    import json as _json
    lines[0] = _json.dumps({**_json.loads(lines[0]), **header})
    rf.path.write_text("\n".join(lines) + "\n")

    runs = list_all_runs([tmp_path])
    sel = load_selection([tmp_path], list(runs.run_id), runs)
    assert set(sel.results["env_id"]) == {intel["env_id"], amd["env_id"]}  # the rows carry the node's env_id
    rep = build_report(sel, load_prices(), Criteria(max_drop_pt=1.0))
    by_env = rep.configs.set_index("env_id")
    assert set(by_env.index) == {intel["env_id"], amd["env_id"]}
    assert "8488C" in by_env.loc[intel["env_id"], "machine_label"] or by_env.loc[intel["env_id"], "machine"]
    assert by_env.loc[amd["env_id"], "p50_ms"] > by_env.loc[intel["env_id"], "p50_ms"]
    envs = {env_id: env for _, env_id, env in rep.environments()}
    assert envs[intel["env_id"]]["key"]["cpu_model"].startswith("Intel")
    assert envs[amd["env_id"]]["key"]["cpu_model"].startswith("AMD")
    md = render_markdown(rep)
    assert f"env `{intel['env_id']}`" in md and f"env `{amd['env_id']}`" in md and "driver laptop" not in md
