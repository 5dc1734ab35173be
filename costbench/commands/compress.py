"""Accuracy-aware selection: build a model's variants, measure each, and name per backend the fastest one
whose loss against fp32 stays within its budget (the fastest, not the first that passes).

``costbench compress MODEL --recipes ... --max-drop 0.01 --max-parity-loss 0.01`` runs fp32 plus the
given recipes on every given backend through the ordinary runner (each case in its own process,
results in a normal run file), then for each backend ranks the variants that finished by
single-stream p50 latency and keeps those within budget. The loss is measured against the fp32
reference on the model's evaluation data, on one of two bases (DESIGN.md, "Accuracy and parity"):

- **task accuracy** (labelled data): the fall in task accuracy (``-task_accuracy_delta``) with its
  paired 95% interval, against ``--max-drop`` (0.01 = one point);
- **parity** (no labels), against ``--max-parity-loss``: for a classifier, top-1 disagreement with
  fp32 on the samples where fp32 is confident (Wilson interval, with the count); else top-1 (nearest
  neighbour) disagreement, else ``1 - mean cosine similarity``.

A variant is within budget on its point estimate; when the interval straddles the budget the output
says "undecided: the data cannot decide a budget of X", with the basis and the sample count.

Every row carries the variant's provenance summary: recipe and version, parameters, FLOPs,
sparsity, calibration set and size, teacher, and accuracy retained.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from costbench.core.metrics import LATENCY
from costbench.harness.results.accuracy_budget import TASK, Judgement, judge

BASELINE = "fp32"
DEFAULT_BACKENDS = ("torch", "onnxruntime", "openvino")


@dataclass
class VariantResult:
    """One variant on one backend, as selection sees it."""

    variant: str
    recipe: str
    backend: str
    status: str
    reason: str = ""
    latency_ms: float | None = None
    latency_ci: tuple[float, float] | None = None
    size_bytes: float | None = None
    basis: str | None = None  # "task accuracy" (labels) or "parity" (against fp32)
    metric: str | None = None  # the result row the loss comes from
    measure: str | None = None  # what the loss is, in words
    value: float | None = None  # that metric's value for this variant
    loss: float | None = None  # lost against fp32 on the basis (positive = worse; 0.01 = one point)
    loss_ci: tuple[float, float] | None = None  # its 95% interval
    samples: int | None = None  # how many samples it rests on
    retained: float | None = None  # task accuracy as a fraction of fp32's
    provenance: dict[str, Any] = field(default_factory=dict)

    def judgement(self, max_drop: float | None, max_parity_loss: float | None) -> Judgement | None:
        """This variant's loss under the budget for its basis."""
        if self.basis is None:
            return None
        lo, hi = self.loss_ci or (None, None)
        return Judgement(self.basis, self.measure or "", self.metric or "", self.loss, lo, hi, self.samples,
                         max_drop if self.basis == TASK else max_parity_loss,
                         "--max-drop" if self.basis == TASK else "--max-parity-loss")


@dataclass
class Choice:
    """Per backend: the fastest variant within the budget, and how it compares with fp32 there."""

    backend: str
    variant: str | None
    latency_ms: float | None
    speedup_vs_fp32: float | None
    loss: float | None
    reason: str
    within_budget: list[str]
    basis: str | None = None  # which basis decided the pick
    evidence: str = ""  # the pick's loss, interval, sample count and verdict
    undecided: list[str] = field(default_factory=list)  # variants whose interval straddles their budget


def accuracy_loss(metrics: dict[str, dict[str, Any]]) -> Judgement | None:
    """The loss against fp32 from a case's metric rows (name -> row), on its basis (see the module docstring)."""
    return judge(metrics, None, None)


def provenance_summary(provenance: dict[str, Any], retained: float | None) -> dict[str, Any]:
    """The provenance fields every result row shows."""
    calibration = provenance.get("calibration")
    fine_tune = provenance.get("fine_tune") or {}
    teacher = provenance.get("teacher")
    if isinstance(teacher, dict):
        teacher = teacher.get("model")
    if teacher is None:
        teacher = fine_tune.get("teacher")
    return {
        "recipe": provenance.get("recipe"),
        "recipe_version": provenance.get("recipe_version"),
        "method": provenance.get("method"),
        "parameters": provenance.get("parameters"),
        "flops": provenance.get("flops"),
        "sparsity": provenance.get("weight_sparsity"),  # measured by recipes that change weights; else unknown
        "calibration": None if not isinstance(calibration, dict) else
        {"set": calibration.get("description"), "samples": calibration.get("samples"),
         "method": calibration.get("method")},
        "teacher": teacher,
        "accuracy_retained": retained,
        "cpu_compute": provenance.get("cpu_compute"),
        "note": provenance.get("note"),
    }


def results_from_outcomes(outcomes) -> list[VariantResult]:
    """VariantResults from the runner's case outcomes (single-stream latency, size, accuracy, provenance)."""
    out = []
    for o in outcomes:
        c = o.case
        m = {x["metric"]: x for x in o.metrics}
        values = {k: v.get("value") for k, v in m.items()}
        lat = m.get(LATENCY.p50)
        j = accuracy_loss(m)
        retained = values.get("accuracy_retained")
        prov = (o.info or {}).get("provenance") or {}
        out.append(VariantResult(
            variant=c.variant, recipe=c.recipe, backend=c.backend, status=o.status, reason=o.reason,
            latency_ms=None if lat is None else lat["value"],
            latency_ci=None if lat is None or lat.get("ci_low") is None else (lat["ci_low"], lat["ci_high"]),
            size_bytes=values.get("model_size"), basis=None if j is None else j.basis,
            metric=None if j is None else j.metric, measure=None if j is None else j.measure,
            value=None if j is None else values.get(j.metric), loss=None if j is None else j.loss,
            loss_ci=None if j is None or not j.has_interval else (j.low, j.high),
            samples=None if j is None else j.samples, retained=retained,
            provenance=provenance_summary(prov, retained) if prov else {},
        ))
    return out


def describe_budgets(max_drop: float | None, max_parity_loss: float | None) -> str:
    """'task-accuracy drop ≤ 1 pt (labelled), parity loss ≤ 1 pt (unlabelled)'."""
    def pt(v: float | None) -> str:
        return "none" if v is None else f"{100 * v:g} pt"
    return f"task-accuracy drop ≤ {pt(max_drop)} (labelled), parity loss ≤ {pt(max_parity_loss)} (unlabelled)"


def choose(results: list[VariantResult], max_drop: float | None,
           max_parity_loss: float | None = None) -> list[Choice]:
    """Per backend, the fastest ok variant within the budget for its basis (ties broken by smaller size).

    ``max_drop`` bounds the task-accuracy drop of labelled models, ``max_parity_loss`` the parity loss of
    unlabelled ones (fractions: 0.01 = one point); a basis without a budget is unconstrained. A variant is
    within on its point estimate; one whose interval straddles its budget is listed as undecided.
    """
    budgets = describe_budgets(max_drop, max_parity_loss)
    choices = []
    for backend in dict.fromkeys(r.backend for r in results):
        rows = [r for r in results if r.backend == backend]
        ok = [r for r in rows if r.status == "ok" and r.latency_ms is not None]
        judged = {id(r): r.judgement(max_drop, max_parity_loss) for r in ok}
        within = [r for r in ok if judged[id(r)] is not None and judged[id(r)].passes]
        undecided = [r.variant for r in ok if judged[id(r)] is not None and judged[id(r)].verdict == "undecided"]
        base = next((r for r in ok if r.variant == BASELINE), None)
        if not within:
            why = "no variant finished" if not ok else f"no variant within budget ({budgets})"
            choices.append(Choice(backend, None, None, None, None, why, [], undecided=undecided))
            continue
        within.sort(key=lambda r: (r.latency_ms, r.size_bytes or math.inf))
        best = within[0]
        j = judged[id(best)]
        speedup = base.latency_ms / best.latency_ms if base and best.latency_ms else None
        reason = f"fastest of {len(within)} variant(s) within budget; decided on {j.basis}"
        if len(within) > 1 and best.latency_ci and within[1].latency_ci and within[1].latency_ci[0] <= best.latency_ci[1]:
            reason += f"; its 95% CI overlaps {within[1].variant!r}'s"
        excluded = [r.variant for r in ok if r not in within and r.latency_ms < best.latency_ms]
        if excluded:
            reason += f"; faster but over budget: {', '.join(excluded)}"
        choices.append(Choice(backend, best.variant, best.latency_ms, speedup, best.loss, reason,
                              [r.variant for r in within], j.basis, j.describe_verdict(), undecided))
    return choices


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``RECIPE.KEY=VALUE`` strings as per-recipe option tables; VALUE is read as TOML (numbers, booleans, strings)."""
    import tomllib

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        recipe, dot, key = target.strip().partition(".")
        if not sep or not dot or not recipe or not key:
            raise ValueError(f"option {item!r}: expected RECIPE.KEY=VALUE, e.g. int8.calibration_method=Entropy")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word: a string
        out.setdefault(recipe, {})[key.strip()] = value
    return out


def compression_suite(model: str, recipes: list[str], backends: list[str], options: dict[str, dict[str, Any]],
                      batch_size: int, timeout_s: float, min_count: int, min_duration_s: float, processes: int = 3):
    """The suite ``compress`` runs: fp32 plus ``recipes`` on ``backends``, single-stream, with accuracy.

    ``processes``: 3 by default, not the suite default of 5: compress ranks variants whose latencies usually
    differ by far more than a regression gate's 5%, and its interval still spans the launches.
    """
    names = [BASELINE] + [r for r in dict.fromkeys(recipes) if r != BASELINE]
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"--option names recipe(s) {sorted(unknown)} that are not among --recipes {names}")
    return {
        "name": f"compress-{model}",
        "description": f"costbench compress {model}: fp32 + {', '.join(names[1:])}",
        "models": [model],
        "variants": [{"name": n, "recipe": n, **options.get(n, {})} for n in names],
        "backends": list(backends),
        "scenarios": [{"kind": "single_stream", "warmup_count": 5, "min_count": min_count,
                       "min_duration_s": min_duration_s, "max_duration_s": 60.0}],
        "batch_sizes": [batch_size],
        "timeout_s": timeout_s,
        "accuracy": True,
        "processes": processes,
    }


def run_compress(model: str, recipes: list[str], max_drop: float | None, *, max_parity_loss: float | None = 0.01,
                 backends: list[str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None, batch_size: int = 1, out: Path = Path("results"),
                 cache_dir: Path | None = None, timeout_s: float = 1800.0, min_count: int = 50,
                 min_duration_s: float = 1.0, on_start: Callable | None = None, on_done: Callable | None = None,
                 processes: int = 3):
    """Build, measure and select through costbench.api.run; returns (the run, results, choices)."""
    import costbench.api as api

    suite = compression_suite(model, recipes, list(backends or DEFAULT_BACKENDS), options or {}, batch_size,
                              timeout_s, min_count, min_duration_s, processes)
    summary = api.run(suite, out, cache_dir=cache_dir, on_start=on_start, on_done=on_done)
    results = results_from_outcomes(summary.outcomes)
    return summary, results, choose(results, max_drop, max_parity_loss)


def report_json(model: str, max_drop: float | None, run_id: str, results: list[VariantResult],
                choices: list[Choice], max_parity_loss: float | None = None) -> dict[str, Any]:
    """Everything ``compress`` decided, as JSON-friendly data."""
    return {"model": model, "max_drop": max_drop, "max_parity_loss": max_parity_loss, "run_id": run_id,
            "choices": [asdict(c) for c in choices], "results": [asdict(r) for r in results]}


def render(model: str, max_drop: float | None, results: list[VariantResult], choices: list[Choice], console,
           max_parity_loss: float | None = None) -> None:
    """Per backend: every variant with latency, size, loss against fp32 on its basis (interval, samples) and
    provenance; then the choice, the basis that decided it, and any budget the data cannot decide."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    def fmt(v, spec, suffix=""):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec) + suffix

    for choice in choices:
        t = Table(title=f"{model} on {choice.backend} ({describe_budgets(max_drop, max_parity_loss)})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("variant", "p50 ms", "MB", "basis", "loss pt", "95% CI pt", "n", "retained", "params", "MFLOPs",
                    "sparsity", "calibration", "teacher", "status"):
            t.add_column(col, justify="left" if col in ("variant", "basis", "calibration", "teacher", "status")
                         else "right", no_wrap=col not in ("calibration", "status"))
        rows = sorted((r for r in results if r.backend == choice.backend and r.status != "skipped"),
                      key=lambda r: (r.latency_ms is None, r.latency_ms or 0))
        skipped = [r for r in results if r.backend == choice.backend and r.status == "skipped"]
        for r in rows:
            p = r.provenance
            cal = p.get("calibration")
            status = r.status if r.status != "ok" else (
                "chosen" if r.variant == choice.variant else "within budget" if r.variant in choice.within_budget
                else "over budget" if r.loss is not None else "no accuracy")
            if r.variant in choice.undecided:
                status += " (undecided)"
            if r.status != "ok":
                status += f": {r.reason}"
            ci = "-" if not r.loss_ci else f"{100 * r.loss_ci[0] + 0.0:+.2f} to {100 * r.loss_ci[1] + 0.0:+.2f}"
            t.add_row(r.variant, fmt(r.latency_ms, ".3f"), fmt(None if r.size_bytes is None else r.size_bytes / 1e6, ".2f"),
                      r.basis or "-", fmt(None if r.loss is None else 100 * r.loss + 0.0, "+.2f"), ci,
                      fmt(r.samples, "d"), fmt(r.retained, ".4f"), fmt(p.get("parameters"), ",d"),
                      fmt(None if p.get("flops") is None else p["flops"] / 1e6, ".2f"),
                      fmt(p.get("sparsity"), ".0%"),
                      "-" if not cal else f"{cal.get('samples')} ({str(cal.get('method')).split(' (')[0]})",
                      str(p.get("teacher") or "-"), status)
        console.print(t)
        if skipped:
            console.print(f"not run on {choice.backend}: " + "; ".join(f"{r.variant} ({r.reason})" for r in skipped),
                          highlight=False, soft_wrap=True)
        if choice.variant is None:
            console.print(f"[bold]{choice.backend}[/]: none chosen: {escape(choice.reason)}", highlight=False)
        else:
            speed = f", {choice.speedup_vs_fp32:.2f}x fp32's speed" if choice.speedup_vs_fp32 else ""
            console.print(f"[bold]{choice.backend}[/]: [green]{choice.variant}[/] ({choice.latency_ms:.3f} ms p50{speed}): "
                          f"{escape(choice.reason)}", highlight=False, soft_wrap=True)
            console.print(f"  {escape(choice.evidence)}", highlight=False, soft_wrap=True)
        by_name = {r.variant: r for r in rows}
        for v in choice.undecided:
            j = by_name[v].judgement(max_drop, max_parity_loss) if v in by_name else None
            if j is not None and v != choice.variant:
                console.print(f"  {v}: {escape(j.describe_verdict())}", highlight=False, soft_wrap=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the selection report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
