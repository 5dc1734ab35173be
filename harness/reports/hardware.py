"""The hardware-selection report: every measured configuration per model, with cost, Pareto frontier and a pick.

A configuration is one model on one machine (env_id and machine type) with one backend, variant,
device and batch size. Its latency comes from the single-stream scenario, its throughput from
offline (single-stream's when there is no offline case), its cost from the price table.

Where the server scenario ran, the configuration also has the throughput it sustains within that
scenario's latency SLO (Poisson arrivals, queueing included) and the cost at that rate. Offline
throughput ignores latency; the SLO-bound rate is what a latency-bound service can really bill for,
so a model whose priced configurations all have it is ranked by that cost.

The accuracy budget names its basis (DESIGN.md, "Accuracy and parity"): where the model has labels,
the drop in task accuracy against fp32 with its paired 95% interval (``max_drop_pt``); where it has
none, a parity budget (``max_parity_loss_pt``) on top-1 disagreement with fp32 on the samples where
fp32 is confident. A configuration within its budget on the point estimate qualifies; when the
interval straddles the budget the report says the data cannot decide it. A run's machine type,
when nothing assigns one, is inferred from its fingerprint where the price table supports it
(:func:`~costbench.harness.reports.prices.infer_machine`), and the report says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from costbench.harness.results.accuracy_budget import (CONFIDENT_METRIC, PARITY, PARITY_FALLBACKS, TASK, TASK_METRIC,
                                               Judgement, judge)
from costbench.core.metrics import CAPACITY_QPS, OUTPUT_TOKEN_THROUGHPUT, THROUGHPUT, TTFT
from costbench.harness.reports.data import Selection, describe_env, primary_series, row_details, scenarios_leading_with
from costbench.harness.reports.ties import Versus, compare_to_pick
from costbench.harness.reports.prices import (Machine, MachineGuess, PriceTable, cost_per_million,
                                              energy_cost_per_million, infer_machine)
from costbench.harness.results.runfile import env_of
from costbench.harness.suite.skips import can_never_run, never_run_note

CONFIG_KEYS = ["env_id", "machine", "model", "backend", "variant", "device", "batch_size"]
LATENCY_CHOICES = ("p50", "p99")


@dataclass
class Criteria:
    """What a configuration must meet to be recommended."""

    slo_ms: float | None = None  # latency (at ``latency``) must not exceed this
    max_drop_pt: float | None = 1.0  # labelled models: task accuracy may drop at most this many points against fp32
    latency: str = "p99"  # which single-stream percentile the SLO and the latency frontier use
    # unlabelled models: top-1 disagreement with fp32 on the samples where fp32 is confident, at most this (points)
    max_parity_loss_pt: float | None = 1.0
    infer_machines: bool = True  # infer a run's machine type from its fingerprint when nothing assigns one
    guarantee: bool = False  # bill a searched capacity's 95% lower end, not its estimate

    def describe(self) -> str:
        slo = f"single-stream {self.latency} ≤ {self.slo_ms:g} ms" if self.slo_ms is not None else "no latency SLO"
        acc = (f"task-accuracy drop ≤ {self.max_drop_pt:g} pt where labelled" if self.max_drop_pt is not None
               else "no task-accuracy budget")
        parity = (f"parity loss ≤ {self.max_parity_loss_pt:g} pt where unlabelled (top-1 disagreement with fp32 "
                  "where fp32 is confident)" if self.max_parity_loss_pt is not None else "no parity budget")
        billed = "; searched capacities billed at their 95% lower end (--guarantee)" if self.guarantee else ""
        return f"{slo}; {acc}; {parity}{billed}"

    def budget_for(self, basis: str | None) -> float | None:
        """The budget (a fraction) for a basis: task accuracy or parity."""
        pt = self.max_drop_pt if basis == TASK else self.max_parity_loss_pt if basis == PARITY else None
        return None if pt is None else pt / 100.0


@dataclass
class Recommendation:
    """The pick for one model and why each faster or cheaper configuration lost."""

    model: str
    objective: str  # "cost_at_slo" (cheapest at the server SLO), "cost" (offline throughput) or "latency" (no prices)
    pick: dict[str, Any] | None
    rejected: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    unmeasured: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    note: str = ""
    # Each runner-up meeting the criteria against the pick (see harness/reports/ties.py), best estimate first.
    versus: list[Versus] = field(default_factory=list)

    @property
    def ties(self) -> list[Versus]:
        """The runners-up the data cannot tell from the pick by more than the margin: then no single pick."""
        return [v for v in self.versus if not v.decided]


@dataclass
class HardwareReport:
    """Everything the HTML, Markdown and CSV forms show."""

    configs: pd.DataFrame
    recommendations: dict[str, Recommendation]
    criteria: Criteria
    prices: PriceTable
    runs: pd.DataFrame
    notes: list[str]
    generated: str
    # (run_id, env_id) -> (machine type or None, "assigned" / "inferred" / "none", the inference's sentence)
    machines: dict[tuple[str, str], tuple[Machine | None, str, str]] = field(default_factory=dict)

    def machine_of(self, run_id: str, env_id: str) -> Machine | None:
        """The machine type a run's machine ``env_id`` is priced as (assigned, else inferred)."""
        if (run_id, env_id) in self.machines:
            return self.machines[(run_id, env_id)][0]
        return self.prices.machine_for(env_id, run_id)

    def how_priced(self, run_id: str, env_id: str) -> str:
        """"assigned", "inferred" or "none"."""
        return self.machines.get((run_id, env_id), (None, "assigned", ""))[1]

    def environments(self) -> list[tuple[dict[str, Any], str, dict | None]]:
        """(run row, env_id, fingerprint) of every machine the selected runs measured on."""
        return run_environments(self.runs, self.configs)


def _metric_row(g: pd.DataFrame, metric: str, scenario: str | None = None) -> pd.Series | None:
    rows = g[(g["metric"] == metric) & (g["status"] == "ok")]
    if scenario is not None:
        rows = rows[rows["scenario"] == scenario]
    return None if rows.empty else rows.iloc[0]


def _val(row: pd.Series | None, key: str = "value") -> float | None:
    if row is None or pd.isna(row[key]):
        return None
    return float(row[key])


def _process_values(row: pd.Series | None) -> list[float] | None:
    """The per-process values behind a merged row (its details), for comparing configurations; None for one."""
    if row is None:
        return None
    values = (row_details(row).get("processes") or {}).get("values")
    return [float(v) for v in values] if values and len(values) >= 2 else None


def machine_label(machine: str | None, env_id: str, env: dict | None) -> str:
    """How a machine is named in tables: its priced type, else its CPU/GPU and env id."""
    if machine:
        return f"{machine} ({env_id[:6]})"
    return f"{describe_env(env)} ({env_id[:6]})"


def run_environments(runs: pd.DataFrame, results: pd.DataFrame) -> list[tuple[dict[str, Any], str, dict | None]]:
    """(run row, env_id, fingerprint) for every machine each run measured on.

    A local run measures on its own machine; a fleet run on each machine class its cases went to (the rows
    carry the node's env_id, the run's stored env each class's fingerprint).
    """
    measured: dict[str, list[str]] = {}
    if not results.empty and "env_id" in results:
        for run_id, env_id in results[["run_id", "env_id"]].drop_duplicates().itertuples(index=False):
            measured.setdefault(str(run_id), []).append(str(env_id))
    out = []
    for r in runs.to_dict("records"):
        for env_id in measured.get(str(r["run_id"])) or [str(r["env_id"])]:
            out.append((r, env_id, env_of(r.get("env"), env_id)))
    return out


def run_machines(sel: Selection, prices: PriceTable,
                 infer: bool = True) -> tuple[dict[tuple[str, str], tuple], list[str]]:
    """Per (run, env_id): (machine type, "assigned" | "inferred" | "none", sentence); plus one note per
    environment inferred or left without a price."""
    out: dict[tuple[str, str], tuple] = {}
    notes: dict[str, str] = {}
    for r, env_id, env in run_environments(sel.runs, sel.results):
        run_id = str(r["run_id"])
        assigned = prices.machine_for(env_id, run_id)
        if assigned is not None:
            out[(run_id, env_id)] = (assigned, "assigned", "")
            continue
        if not infer:
            out[(run_id, env_id)] = (None, "none", "")
            continue
        guess: MachineGuess = infer_machine(env, prices)
        sentence = guess.describe(env_id, prices.currency)
        out[(run_id, env_id)] = (guess.machine, "inferred" if guess.machine else "none", sentence)
        notes.setdefault(env_id, sentence)
    return out, list(notes.values())


def configurations(sel: Selection, prices: PriceTable, machines: dict[tuple[str, str], tuple] | None = None,
                   guarantee: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration, from the latest selected run that measured it; plus notes on what was merged."""
    notes: list[str] = []
    df = sel.results
    if df.empty:
        return pd.DataFrame(), notes
    runs = sel.runs.set_index("run_id")
    if machines is None:
        machines, _ = run_machines(sel, prices, infer=False)
    never = df[(df["status"] == "skipped") & df["reason"].map(can_never_run)]
    for model, g in never.groupby("model", sort=False):
        combos = list(dict.fromkeys(f"{r.backend}×{r.variant}" for r in g.itertuples()))
        notes.append(f"{model}: " + never_run_note(len(combos), combos))
    df = df.drop(never.index)
    if df.empty:
        return pd.DataFrame(), notes

    def priced(run_id: Any, env_id: Any) -> tuple:
        return machines.get((str(run_id), str(env_id)), (None, "none", ""))

    df = df.assign(machine=[m.name if m else "" for m in (priced(r, e)[0] for r, e in zip(df["run_id"], df["env_id"]))],
                   _order=df["run_id"].map({r: i for i, r in enumerate(sel.runs["run_id"])}))
    out = []
    repeated = 0
    for key, g in df.groupby(CONFIG_KEYS, sort=False, dropna=False):
        repeated += g["_order"].nunique() > 1
        g = _latest_run(g)
        run_id, env_id = g["run_id"].iloc[0], g["env_id"].iloc[0]
        machine, how, _ = priced(run_id, env_id)
        out.append({**_configuration(key, g, machine, env_of(runs.loc[run_id, "env"], str(env_id)), prices,
                                     guarantee),
                    "machine_inferred": how == "inferred"})
    if repeated:
        notes.append(f"{repeated} configuration(s) were measured in more than one selected run; each shows its "
                     "latest run (compare runs with `costbench compare`).")
    return pd.DataFrame(out), notes


def _latest_run(g: pd.DataFrame) -> pd.DataFrame:
    """A configuration's rows from the latest run that measured it (that tried it, when none measured it)."""
    ran = g[g["status"] == "ok"]
    # The latest run that measured it wins; older repeats stay in the store for `compare` and the dashboard.
    chosen = (ran if len(ran) else g)["_order"].max()
    return g[g["_order"] == chosen]


def _configuration(key: tuple, g: pd.DataFrame, machine: Machine | None, env: dict | None,
                   prices: PriceTable, guarantee: bool = False) -> dict[str, Any]:
    """The report's row for one configuration (``key`` as CONFIG_KEYS), from its rows in one run."""
    thr, thr_scenario = _throughput_row(g)
    throughput = _val(thr)
    power = _val(_metric_row(g, "power_w"))
    server = server_capacity(g, int(key[-1]), guarantee)
    cost, energy, total = _cost_per_million(machine, throughput, power, prices)
    # Cost is inverse in throughput: its interval is the throughput interval's ends, swapped.
    *_, total_low = _cost_per_million(machine, _val(thr, "ci_high"), power, prices)
    *_, total_high = _cost_per_million(machine, _val(thr, "ci_low"), power, prices)
    *_, slo_total = _cost_per_million(machine, server["slo_throughput"], power, prices)
    slo_low, slo_high = server["slo_throughput_ci"]  # cost is inverse in the rate: the ends swap
    *_, slo_cost_low = _cost_per_million(machine, slo_high, power, prices)
    *_, slo_cost_high = _cost_per_million(machine, slo_low, power, prices)
    rss = g[(g["metric"] == "peak_rss") & (g["status"] == "ok")]["value"]
    size = _metric_row(g, "model_size")
    top1 = _metric_row(g, "top1_agreement")
    return {
        **_identity(key, g, env), **_latency(g),
        "throughput": throughput,
        "throughput_scenario": thr_scenario if thr is not None else None,
        "per": "output token" if (thr is not None and thr["metric"] == OUTPUT_TOKEN_THROUGHPUT)
        or server.get("server_per") == "output token" else "inference",
        "peak_rss_mib": float(rss.max()) if len(rss) else None,
        "size_mb": None if size is None else float(size["value"]) / 1e6,
        **accuracy_loss(g),
        "top1_agreement": _val(top1), "top1_agreement_confident": _val(_metric_row(g, CONFIDENT_METRIC)),
        "power_w": power,
        "hourly": machine.hourly if machine else None,
        "machine_cost_per_m": cost, "energy_cost_per_m": energy, "cost_per_m": total,
        "cost_ci_low": total_low, "cost_ci_high": total_high, "throughput_values": _process_values(thr),
        **server, "cost_per_m_at_slo": slo_total, "cost_at_slo_ci": [slo_cost_low, slo_cost_high],
    }


def _identity(key: tuple, g: pd.DataFrame, env: dict | None) -> dict[str, Any]:
    """Which configuration a row is (model, machine, run, backend, variant, device, batch) and whether it ran."""
    env_id, machine_name, model, backend, variant, device, batch = key
    ok = (g["status"] == "ok").any()
    # One reason per distinct cause: a skip usually applies to every scenario of the configuration.
    problems = list(dict.fromkeys(f"{r.status}: {r.reason}" for r in g[g["status"] != "ok"].itertuples()))
    return {
        "model": model, "machine": machine_name or None, "machine_label": machine_label(machine_name, env_id, env),
        "env_id": env_id, "run_id": g["run_id"].iloc[0], "backend": backend, "variant": variant, "device": device,
        "batch_size": int(batch), "status": "ok" if ok else str(g["status"].iloc[0]), "reason": "; ".join(problems),
    }


def _latency(g: pd.DataFrame) -> dict[str, Any]:
    """Single-stream p50 and p99 with confidence intervals (TPOT's for a generate scenario, with TTFT's p50 beside
    them), whether they are valid, whether the run was unstable."""
    led = scenarios_leading_with(g, "latency")
    series = primary_series(g, led[0]) if led else None
    lat50 = None if series is None else _metric_row(g, series.p50, led[0])
    lat99 = None if series is None else _metric_row(g, series.p99, led[0])
    valid = None if lat50 is None else bool(lat50["valid"]) if not pd.isna(lat50["valid"]) else True
    ttft = None if not led else _metric_row(g, TTFT.p50, led[0])  # generative: the first token's wait beside TPOT
    return {
        "ttft_ms": _val(ttft), "ttft_ci_low": _val(ttft, "ci_low"), "ttft_ci_high": _val(ttft, "ci_high"),
        "p50_values": _process_values(lat50), "p99_values": _process_values(lat99),
        "p50_ms": _val(lat50), "p50_ci_low": _val(lat50, "ci_low"), "p50_ci_high": _val(lat50, "ci_high"),
        "p99_ms": _val(lat99), "p99_ci_low": _val(lat99, "ci_low"), "p99_ci_high": _val(lat99, "ci_high"),
        "latency_valid": valid, "unstable": bool(((g["metric"] == "unstable") & (g["value"] == 1.0)).any()),
    }


def _throughput_row(g: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """The throughput row and its scenario: from one that leads with throughput (offline), else with latency.

    A generative model's unit of work is the output token, so its throughput is output tokens per second
    (and its cost per million output tokens) wherever a generate scenario measured it."""
    labels = [*scenarios_leading_with(g, "throughput"), *scenarios_leading_with(g, "latency")]
    for metric in (OUTPUT_TOKEN_THROUGHPUT, THROUGHPUT):
        for label in labels:
            thr = _metric_row(g, metric, label)
            if thr is not None:
                return thr, label
    return None, ""


ACCURACY_METRICS = (TASK_METRIC, CONFIDENT_METRIC, *PARITY_FALLBACKS)


def accuracy_loss(g: pd.DataFrame) -> dict[str, Any]:
    """The loss against fp32 on the budget's basis, in points, with its 95% interval and sample count.

    ``loss_*`` hold it whatever the basis; ``accuracy_drop_pt`` only where it is task accuracy (labels),
    ``parity_loss_pt`` only where it is parity, so that no column calls parity an accuracy drop.
    """
    rows = {}
    for name in ACCURACY_METRICS:
        r = _metric_row(g, name)
        if r is not None:
            rows[name] = r.to_dict()
    j = judge(rows, None, None)

    def pt(v: float | None) -> float | None:
        return None if v is None else 100.0 * v + 0.0  # + 0.0: no "-0.00"

    if j is None:
        return {"loss_basis": None, "loss_measure": None, "loss_metric": None, "loss_pt": None, "loss_low_pt": None,
                "loss_high_pt": None, "loss_samples": None, "accuracy_drop_pt": None, "parity_loss_pt": None,
                "accuracy_basis": ""}
    return {"loss_basis": j.basis, "loss_measure": j.measure, "loss_metric": j.metric, "loss_pt": pt(j.loss),
            "loss_low_pt": pt(j.low), "loss_high_pt": pt(j.high),
            "loss_samples": None if j.samples is None else int(j.samples),
            "accuracy_drop_pt": pt(j.loss) if j.basis == TASK else None,
            "parity_loss_pt": pt(j.loss) if j.basis == PARITY else None,
            "accuracy_basis": j.basis}


def judgement_of(row: dict[str, Any], criteria: Criteria) -> Judgement | None:
    """A configuration's loss against fp32 as a Judgement under ``criteria``'s budget for its basis."""
    if not row.get("loss_basis") or _num(row.get("loss_pt")) is None:
        return None

    def frac(key: str) -> float | None:
        v = _num(row.get(key))
        return None if v is None else v / 100.0

    samples = _num(row.get("loss_samples"))
    return Judgement(row["loss_basis"], str(row.get("loss_measure") or ""), str(row.get("loss_metric") or ""),
                     frac("loss_pt"), frac("loss_low_pt"), frac("loss_high_pt"),
                     None if samples is None else int(samples), criteria.budget_for(row["loss_basis"]))


def _cost_per_million(machine: Machine | None, throughput: float | None, power_w: float | None,
                      prices: PriceTable) -> tuple[float | None, float | None, float | None]:
    """(machine, energy, total) cost per million inferences at ``throughput``; energy only where the price omits it."""
    cost = cost_per_million(machine.hourly if machine else None, throughput)
    energy = None
    if machine is not None and not machine.energy_included:
        energy = energy_cost_per_million(power_w, throughput, prices.energy_price_per_kwh)
    total = None if cost is None and energy is None else (cost or 0.0) + (energy or 0.0)
    return cost, energy, total


def server_capacity(g: pd.DataFrame, batch_size: int, guarantee: bool = False) -> dict[str, Any]:
    """What the server scenarios say about a configuration: the samples/s it sustains within its SLO.

    From a capacity search, its estimate (``slo_bound`` "estimate", with ``slo_throughput_ci``), or with
    ``guarantee`` the interval's lower end ("guaranteed"); where no rate was shown to miss, the highest
    shown to meet ("at least"); 0 when even the lowest failed. From a
    fixed target rate, that rate when it met the SLO (a lower bound: ``slo_bound`` is "at least"),
    else nothing. ``server_slo`` describes the SLO, e.g. "p99 ≤ 50 ms". Where the configuration ran
    several server scenarios (with and without dynamic batching, say), the one billed is the one that
    sustained the highest rate within its SLO: a deployment serves the way that serves more, and
    batching can lose (on two cores a batch of 8 costs about 8 single calls, on top of the queue
    delay); ties go to the batched one. Every server scenario's trials stay in ``server_curves``.
    """
    none = {"server_slo": None, "slo_throughput": None, "slo_throughput_ci": [None, None], "slo_bound": None,
            "server_slo_met": None, "server_per": None,
            "server_valid": None, "server_trials": [], "server_slo_ms": None, "server_batching": None,
            "server_curves": []}
    labels = scenarios_leading_with(g[g["status"] == "ok"], "capacity")
    found = [one_server_scenario(g, label, batch_size, guarantee) for label in labels]
    if not found:
        return none
    chosen = max(found, key=lambda f: (f["slo_throughput"] or 0.0, bool(f["server_batching"])))
    curves = [{"scenario": f["scenario"], "batching": f["server_batching"], "trials": f["server_trials"]}
              for f in found if f["server_trials"]]
    return {k: v for k, v in chosen.items() if k != "scenario"} | {"server_curves": curves}


def batching_label(batching: dict[str, Any] | None) -> str | None:
    """'max_batch 8, delay 2 ms, preferred 4/8' for a server scenario's batching details; None without batching."""
    if not batching:
        return None
    text = f"max_batch {batching['max_batch']}, delay {batching['max_queue_delay_ms']:g} ms"
    if batching.get("preferred_batch_sizes"):
        text += ", preferred " + "/".join(str(b) for b in batching["preferred_batch_sizes"])
    return text


def one_server_scenario(g: pd.DataFrame, label: str, batch_size: int, guarantee: bool = False) -> dict[str, Any]:
    """:func:`server_capacity` for the server scenario named ``label``."""
    met = _metric_row(g, "slo_met", label)
    details = row_details(met)
    slo = details.get("slo", {})
    pct = slo.get("percentile")
    desc = (f"p{pct:g} ≤ {slo['slo_ms']:g} ms" if pct is not None and slo.get("slo_ms") is not None
            else "the run's SLO")
    met_slo = bool(met["value"] == 1.0)
    # trials: latency at the SLO percentile against offered load, for the report's curves
    searched = _metric_row(g, "max_qps_within_slo", label)
    interval: list[float | None] = [None, None]
    if searched is not None:  # a capacity search; 0 means even the lowest rate tried missed the SLO
        estimate = _metric_row(g, CAPACITY_QPS, label)
        low, high = _metric_row(g, "capacity_ci_low", label), _metric_row(g, "capacity_ci_high", label)
        interval = [_val(low), _val(high)]
        if estimate is not None and not guarantee:  # the estimate, billed; its interval shown
            qps, bound = float(estimate["value"]), "estimate"
        elif estimate is not None and interval[0]:  # --guarantee: the interval's lower end
            qps, bound = interval[0], "guaranteed"
        else:  # no rate was shown to miss: the highest shown to meet is a lower bound
            qps, bound = (float(searched["value"]), "at least") if searched["value"] > 0 else (None, None)
        trials = [{"qps": float(t["qps"]), "latency_ms": float(t["p_latency_ms"]),
                   "meets": t.get("trial_verdict", t.get("verdict")) == "meets" or bool(t.get("meets_slo"))}
                  for t in row_details(searched).get("search", []) if t.get("p_latency_ms") is not None]
    else:  # one fixed rate
        target, lat = _metric_row(g, "target_qps", label), _metric_row(g, "slo_latency", label)
        qps, bound = (float(target["value"]), "at least") if target is not None and met_slo else (None, None)
        trials = ([{"qps": float(target["value"]), "latency_ms": float(lat["value"]), "meets": met_slo}]
                  if target is not None and lat is not None else [])
    valid = bool(met["valid"]) if not pd.isna(met["valid"]) else True
    # A generation server's rate is in requests: times the mean output length, in output tokens (its cost per
    # million output tokens); any other server's in queries of batch_size samples.
    tokens = _metric_row(g, "output_tokens", label)
    per_query = float(tokens["value"]) if tokens is not None else batch_size
    if tokens is not None:
        pct, ttft, tpot = slo.get("percentile"), slo.get("ttft_slo_ms"), slo.get("tpot_slo_ms")
        if None not in (pct, ttft, tpot):
            desc = f"p{pct:g} of requests: TTFT ≤ {ttft:g} ms and TPOT ≤ {tpot:g} ms"
    return {"scenario": label, "server_slo": desc, "slo_throughput": None if qps is None else qps * per_query,
            "slo_throughput_ci": [None if v is None else v * per_query for v in interval],
            "slo_bound": bound, "server_slo_met": met_slo, "server_valid": valid,
            "server_per": "output token" if tokens is not None else "inference",
            "server_trials": sorted(trials, key=lambda t: t["qps"]), "server_slo_ms": slo.get("slo_ms"),
            "server_batching": batching_label(details.get("batching"))}


def pareto_front(x: list[float | None], y: list[float | None]) -> list[bool]:
    """Which points no other point beats on both axes (lower is better on both); missing values never qualify."""
    pts = [(a, b) for a, b in zip(x, y)]
    out = []
    for i, (xi, yi) in enumerate(pts):
        if xi is None or yi is None or pd.isna(xi) or pd.isna(yi):
            out.append(False)
            continue
        dominated = any(
            j != i and xj is not None and yj is not None and not pd.isna(xj) and not pd.isna(yj)
            and xj <= xi and yj <= yi and (xj < xi or yj < yi)
            for j, (xj, yj) in enumerate(pts))
        out.append(not dominated)
    return out


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def config_name(row: dict[str, Any]) -> str:
    """'backend variant bN on MACHINE'."""
    dev = "" if row["device"] == "cpu" else f" ({row['device']})"
    return f"{row['backend']}{dev} {row['variant']} b{row['batch_size']} on {row['machine_label']}"


def rejection_reasons(row: dict[str, Any], criteria: Criteria, objective: str) -> list[str]:
    """Every constraint a measured configuration misses (empty: it qualifies)."""
    reasons = []
    lat = _num(row.get(f"{criteria.latency}_ms"))
    if lat is None and (objective == "latency" or criteria.slo_ms is not None):
        reasons.append("no single-stream latency measured")
    elif row.get("latency_valid") is False:
        reasons.append("latency invalid: the run stopped at max_duration_s before min_count")
    if lat is not None and criteria.slo_ms is not None and lat > criteria.slo_ms:
        reasons.append(f"{criteria.latency} {lat:.3f} ms > SLO {criteria.slo_ms:g} ms")
    j = judgement_of(row, criteria)
    if j is None:
        if criteria.max_drop_pt is not None or criteria.max_parity_loss_pt is not None:
            reasons.append("neither task accuracy nor parity with fp32 measured")
    elif j.budget is not None and not j.passes:
        why = f"{j.describe()} > {j.basis} budget {j.budget_text()}"
        if j.verdict == "undecided":
            why += f"; undecided: the data cannot decide a budget of {j.budget_text()}"
        reasons.append(why)
    if objective == "cost_at_slo" and row.get("server_valid") is False:
        reasons.append("server result invalid (overloaded, or the load generator fell behind its schedule on a "
                       "busy machine)")
    elif objective == "cost_at_slo" and not _num(row.get("cost_per_m_at_slo")):
        if not row.get("machine"):
            reasons.append(f"no price: machine type of env {row['env_id']} unknown "
                           f"(--machine-type {row['env_id']}=TYPE, or [assign] in a price file)")
        elif _num(row.get("slo_throughput")) is None and row.get("server_slo_met") is not None:
            reasons.append(f"server scenario: {row.get('server_slo') or 'its SLO'} not met at any rate tried")
        else:
            reasons.append("no cost at the SLO: no server-scenario rate within it")
    if objective == "cost" and _num(row.get("cost_per_m")) is None:
        if not row.get("machine"):
            reasons.append(f"no price: machine type of env {row['env_id']} unknown "
                           f"(--machine-type {row['env_id']}=TYPE, or [assign] in a price file)")
        else:
            reasons.append("no cost: no throughput measured")
    return reasons


def recommend(configs: pd.DataFrame, criteria: Criteria, currency: str = "USD") -> dict[str, Recommendation]:
    """Per model: the cheapest configuration meeting the criteria (fastest when nothing is priced)."""
    recs: dict[str, Recommendation] = {}
    if configs.empty:
        return recs
    lat_key = f"{criteria.latency}_ms"
    for model, mdf in configs.groupby("model", sort=False):
        rows = mdf.to_dict("records")
        measured = [r for r in rows if r["status"] == "ok"]
        unmeasured = [(r, r["reason"] or r["status"]) for r in rows if r["status"] != "ok"]
        # A server-only run has no throughput, only a rate within its SLO: a price makes either a cost.
        objective = "cost" if any(_num(r["cost_per_m"]) is not None or _num(r.get("cost_per_m_at_slo")) is not None
                                  for r in measured) else "latency"
        note = "" if objective == "cost" else (
            "No machine of these runs has a price ("
            + ("none assigned, and none could be inferred from its fingerprint: see the notes above"
               if criteria.infer_machines else "none assigned, and inferring it from the fingerprint is off")
            + "), so configurations are ranked by latency; assign machine types "
            "with --machine-type ENV=TYPE or [assign] in a price file to rank by cost.")
        priced = [r for r in measured if r.get("hourly") is not None]
        with_server = [r for r in priced if r.get("server_slo_met") is not None]
        if objective == "cost" and priced and len(with_server) == len(priced):
            # Every priced configuration ran the server scenario: bill the rate it sustains within its SLO.
            objective = "cost_at_slo"
            slos = sorted({str(r["server_slo"]) for r in with_server})
            units = "output tokens/s" if all(r.get("server_per") == "output token" for r in with_server) else "samples/s"
            note = (f"Ranked by cost at the server scenario's SLO ({', '.join(slos)}): the {units} each "
                    "configuration sustains under Poisson arrivals within it, not offline throughput.")
        elif objective == "cost" and with_server:
            note = (f"{len(with_server)} of {len(priced)} priced configurations ran the server scenario; ranked by "
                    "offline-throughput cost so that all compare alike (run the server scenario for all of them "
                    "to rank by cost at the SLO).")
        obj_key = {"cost": "cost_per_m", "cost_at_slo": "cost_per_m_at_slo"}.get(objective, lat_key)

        def rank(r: dict[str, Any]) -> tuple:
            big = float("inf")
            return (_num(r[obj_key]) if _num(r[obj_key]) is not None else big,
                    _num(r[lat_key]) if _num(r[lat_key]) is not None else big,
                    _num(r["loss_pt"]) if _num(r["loss_pt"]) is not None else big,
                    config_name(r))

        reasons = {id(r): rejection_reasons(r, criteria, objective) for r in measured}
        feasible = sorted((r for r in measured if not reasons[id(r)]), key=rank)
        pick = feasible[0] if feasible else None
        if pick is None:
            rejected = [(r, reasons[id(r)]) for r in sorted(measured, key=rank)]
        else:
            # Only what was faster or cheaper needs explaining; the rest lose on both counts.
            def better(r: dict[str, Any], key: str) -> bool:
                a, b = _num(r[key]), _num(pick[key])
                return a is not None and b is not None and a < b

            def lost(r: dict[str, Any]) -> list[str]:
                # It meets every constraint, so it lost on the objective (or on a tie-break).
                mine, theirs = _num(r[obj_key]), _num(pick[obj_key])
                if objective == "cost" and mine is not None and theirs is not None and mine > theirs:
                    return [f"costs {mine:.4g} {currency}/M inferences, more than the pick's {theirs:.4g}"]
                if objective == "cost_at_slo" and mine is not None and theirs is not None and mine > theirs:
                    unit = "output tokens" if r.get("server_per") == "output token" else "inferences"
                    return [f"costs {mine:.4g} {currency}/M {unit} at the SLO, more than the pick's {theirs:.4g}"]
                if objective == "latency" and mine is not None and theirs is not None and mine > theirs:
                    return [f"{criteria.latency} {mine:.3f} ms, slower than the pick's {theirs:.3f} ms"]
                return ["ties with the pick on the objective; ranks lower on latency, then loss against fp32"]

            rejected = [(r, reasons[id(r)] or lost(r)) for r in sorted(measured, key=rank)
                        if r is not pick and (better(r, lat_key) or better(r, "cost_per_m")
                                              or better(r, "cost_per_m_at_slo"))]
        versus = _versus(pick, feasible[1:], objective, lat_key)
        tied = {id(v.row) for v in versus if not v.decided}
        rejected = [(r, why) for r, why in rejected if id(r) not in tied]  # a tie is listed as one, not as a loss
        recs[str(model)] = Recommendation(str(model), objective, pick, rejected, unmeasured, note, versus)
    return recs


def _versus(pick: dict[str, Any] | None, others: list[dict[str, Any]], objective: str, lat_key: str) -> list[Versus]:
    """Each runner-up meeting the criteria against the pick, where both have per-process values (:mod:`.ties`).

    Cost: the ratio of costs from the per-process throughputs, times the ratio of the machines' cost per unit
    of throughput (exact). Latency: the ratio of the per-process latencies. At the server SLO the capacity
    has no per-process values: no tie is judged there.
    """
    if pick is None or objective == "cost_at_slo":
        return []
    out = []
    for r in others:
        if objective == "cost":
            k_pick, k_other = _num(pick["cost_per_m"]), _num(r["cost_per_m"])
            thr_pick, thr_other = _num(pick["throughput"]), _num(r["throughput"])
            if None in (k_pick, k_other, thr_pick, thr_other):
                continue
            tie = compare_to_pick(pick, r, "throughput_values", higher_is_better=True,
                                  scale=(k_other * thr_other) / (k_pick * thr_pick))
        else:
            tie = compare_to_pick(pick, r, lat_key.replace("_ms", "_values"), higher_is_better=False)
        if tie is not None:
            out.append(tie)
    return out


def build_report(sel: Selection, prices: PriceTable, criteria: Criteria) -> HardwareReport:
    """Configurations, Pareto flags and recommendations for the selected runs."""
    if criteria.latency not in LATENCY_CHOICES:
        raise ValueError(f"latency percentile {criteria.latency!r}: expected one of {', '.join(LATENCY_CHOICES)}")
    machines, machine_notes = run_machines(sel, prices, criteria.infer_machines)
    configs, notes = configurations(sel, prices, machines, criteria.guarantee)
    notes = machine_notes + notes
    if not configs.empty:
        verdicts = [judgement_of(r, criteria) for r in configs.to_dict("records")]
        configs["budget_verdict"] = [None if j is None else j.verdict for j in verdicts]
    recs = recommend(configs, criteria, prices.currency)
    if not configs.empty:
        configs["frontier_latency"] = False
        configs["frontier_cost"] = False
        for model, idx in configs.groupby("model", sort=False).groups.items():
            sub = configs.loc[idx]
            ok = sub["status"] == "ok"
            lat = [v if o else None for v, o in zip(sub[f"{criteria.latency}_ms"], ok)]
            rec_cost = "cost_per_m_at_slo" if recs[str(model)].objective == "cost_at_slo" else "cost_per_m"
            cost = [v if o and v else None for v, o in zip(sub[rec_cost], ok)]
            drop = sub["loss_pt"].tolist()
            configs.loc[idx, "frontier_latency"] = pareto_front(lat, drop)
            configs.loc[idx, "frontier_cost"] = pareto_front(cost, drop)
    return HardwareReport(configs, recs, criteria, prices, sel.runs, notes,
                          datetime.now(timezone.utc).isoformat(timespec="seconds"), machines)


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower() or "x"
