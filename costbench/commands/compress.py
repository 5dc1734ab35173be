"""Accuracy-aware selection: build a model's variants, measure each, and name per backend the fastest one
whose accuracy drop stays within a budget (the fastest, not the first that passes).

``costbench compress MODEL --recipes ... --max-drop 0.01`` runs fp32 plus the given recipes on
every given backend through the ordinary runner (each case in its own process, results in a
normal run file), then for each backend ranks the variants that finished by single-stream p50
latency and keeps those whose drop is within ``--max-drop``. The drop is measured against the
fp32 PyTorch reference on the model's evaluation data:

- labelled data: the fall in task accuracy (``-task_accuracy_delta``), e.g. 0.01 = one point;
- a classifier without labels: ``1 - top1_agreement`` with fp32;
- anything else: ``1 - mean cosine similarity`` with fp32.

Every row carries the variant's provenance summary: recipe and version, parameters, FLOPs,
sparsity, calibration set and size, teacher, and accuracy retained.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    metric: str | None = None  # what the drop is measured on
    value: float | None = None  # that metric's value for this variant
    drop: float | None = None  # accuracy lost against fp32 (positive = worse)
    retained: float | None = None  # accuracy as a fraction of fp32's
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class Choice:
    """Per backend: the fastest variant within the budget, and how it compares with fp32 there."""

    backend: str
    variant: str | None
    latency_ms: float | None
    speedup_vs_fp32: float | None
    drop: float | None
    reason: str
    within_budget: list[str]


def accuracy_drop(metrics: dict[str, float]) -> tuple[str | None, float | None, float | None, float | None]:
    """(metric, value, drop, retained) from a case's accuracy metrics (see the module docstring)."""
    if "task_accuracy_delta" in metrics:
        delta = metrics["task_accuracy_delta"]
        return "task_accuracy", metrics.get("task_accuracy"), -delta, metrics.get("accuracy_retained")
    if "top1_agreement" in metrics:
        agree = metrics["top1_agreement"]
        return "top1_agreement", agree, 1.0 - agree, agree
    if "cosine_similarity_mean" in metrics:
        cos = metrics["cosine_similarity_mean"]
        return "cosine_similarity_mean", cos, 1.0 - cos, cos
    return None, None, None, None


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
        lat = m.get("latency_p50")
        metric, value, drop, retained = accuracy_drop(values)
        drop = None if drop is None else drop + 0.0  # no "-0.00"
        prov = (o.info or {}).get("provenance") or {}
        out.append(VariantResult(
            variant=c.variant, recipe=c.recipe, backend=c.backend, status=o.status, reason=o.reason,
            latency_ms=None if lat is None else lat["value"],
            latency_ci=None if lat is None or lat.get("ci_low") is None else (lat["ci_low"], lat["ci_high"]),
            size_bytes=values.get("model_size"), metric=metric, value=value, drop=drop, retained=retained,
            provenance=provenance_summary(prov, retained) if prov else {},
        ))
    return out


def choose(results: list[VariantResult], max_drop: float) -> list[Choice]:
    """Per backend, the fastest ok variant whose drop is within ``max_drop`` (ties broken by smaller size)."""
    choices = []
    for backend in dict.fromkeys(r.backend for r in results):
        rows = [r for r in results if r.backend == backend]
        ok = [r for r in rows if r.status == "ok" and r.latency_ms is not None]
        within = [r for r in ok if r.drop is not None and r.drop <= max_drop + 1e-12]
        base = next((r for r in ok if r.variant == BASELINE), None)
        if not within:
            why = "no variant finished" if not ok else f"no variant within a drop of {max_drop:g}"
            choices.append(Choice(backend, None, None, None, None, why, []))
            continue
        within.sort(key=lambda r: (r.latency_ms, r.size_bytes or math.inf))
        best = within[0]
        speedup = base.latency_ms / best.latency_ms if base and best.latency_ms else None
        reason = f"fastest of {len(within)} variant(s) within a drop of {max_drop:g}"
        if len(within) > 1 and best.latency_ci and within[1].latency_ci and within[1].latency_ci[0] <= best.latency_ci[1]:
            reason += f"; its 95% CI overlaps {within[1].variant!r}'s"
        excluded = [r.variant for r in ok if r not in within and r.latency_ms < best.latency_ms]
        if excluded:
            reason += f"; faster but over budget: {', '.join(excluded)}"
        choices.append(Choice(backend, best.variant, best.latency_ms, speedup, best.drop, reason,
                              [r.variant for r in within]))
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
                      batch_size: int, timeout_s: float, min_count: int, min_duration_s: float):
    """The suite ``compress`` runs: fp32 plus ``recipes`` on ``backends``, single-stream, with accuracy."""
    from costbench.harness.suite_schema import Suite

    names = [BASELINE] + [r for r in dict.fromkeys(recipes) if r != BASELINE]
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"--option names recipe(s) {sorted(unknown)} that are not among --recipes {names}")
    return Suite.model_validate({
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
    })


def run_compress(model: str, recipes: list[str], max_drop: float, *, backends: list[str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None, batch_size: int = 1, out: Path = Path("results"),
                 cache_dir: Path | None = None, timeout_s: float = 1800.0, min_count: int = 50,
                 min_duration_s: float = 1.0, on_start: Callable | None = None, on_done: Callable | None = None):
    """Build, measure and select; returns (run summary, results, choices)."""
    from costbench.harness.plan import make_plan
    from costbench.harness.runner import run_plan

    suite = compression_suite(model, recipes, list(backends or DEFAULT_BACKENDS), options or {}, batch_size,
                              timeout_s, min_count, min_duration_s)
    cases = make_plan(suite)
    summary = run_plan(suite, cases, out, cache_dir=cache_dir, on_start=on_start, on_done=on_done)
    results = results_from_outcomes(summary.outcomes)
    return summary, results, choose(results, max_drop)


def report_json(model: str, max_drop: float, run_id: str, results: list[VariantResult],
                choices: list[Choice]) -> dict[str, Any]:
    """Everything ``compress`` decided, as JSON-friendly data."""
    return {"model": model, "max_drop": max_drop, "run_id": run_id,
            "choices": [asdict(c) for c in choices], "results": [asdict(r) for r in results]}


def render(model: str, max_drop: float, results: list[VariantResult], choices: list[Choice], console) -> None:
    """Per backend: every variant with latency, size, accuracy drop and provenance; then the choice."""
    from rich import box
    from rich.table import Table

    def fmt(v, spec, suffix=""):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec) + suffix

    for choice in choices:
        t = Table(title=f"{model} on {choice.backend} (max drop {max_drop:g})", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("variant", "p50 ms", "MB", "metric", "drop", "retained", "params", "MFLOPs", "sparsity",
                    "calibration", "teacher", "status"):
            t.add_column(col, justify="left" if col in ("variant", "metric", "calibration", "teacher", "status")
                         else "right", no_wrap=col not in ("calibration", "status"))
        rows = sorted((r for r in results if r.backend == choice.backend and r.status != "skipped"),
                      key=lambda r: (r.latency_ms is None, r.latency_ms or 0))
        skipped = [r for r in results if r.backend == choice.backend and r.status == "skipped"]
        for r in rows:
            p = r.provenance
            cal = p.get("calibration")
            status = r.status if r.status != "ok" else (
                "chosen" if r.variant == choice.variant else "within budget" if r.variant in choice.within_budget
                else "over budget" if r.drop is not None else "no accuracy")
            if r.status != "ok":
                status += f": {r.reason}"
            t.add_row(r.variant, fmt(r.latency_ms, ".3f"), fmt(None if r.size_bytes is None else r.size_bytes / 1e6, ".2f"),
                      r.metric or "-", fmt(None if r.drop is None else 100 * r.drop, "+.2f", " pt"),
                      fmt(r.retained, ".4f"), fmt(p.get("parameters"), ",d"),
                      fmt(None if p.get("flops") is None else p["flops"] / 1e6, ".2f"),
                      fmt(p.get("sparsity"), ".0%"),
                      "-" if not cal else f"{cal.get('samples')} ({str(cal.get('method')).split(' (')[0]})",
                      str(p.get("teacher") or "-"), status)
        console.print(t)
        if skipped:
            console.print(f"not run on {choice.backend}: " + "; ".join(f"{r.variant} ({r.reason})" for r in skipped),
                          highlight=False, soft_wrap=True)
        if choice.variant is None:
            console.print(f"[bold]{choice.backend}[/]: none chosen: {choice.reason}", highlight=False)
        else:
            speed = f", {choice.speedup_vs_fp32:.2f}x fp32's speed" if choice.speedup_vs_fp32 else ""
            console.print(f"[bold]{choice.backend}[/]: [green]{choice.variant}[/] ({choice.latency_ms:.3f} ms p50{speed}, "
                          f"drop {100 * choice.drop:+.2f} pt): {choice.reason}", highlight=False)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write the selection report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
