"""Accuracy-aware selection: the fastest variant within the budget per backend (not the first that passes), on
the right basis (task accuracy where labelled, parity where not), and ``costbench compress`` end to end on real cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import costbench.api as api
from costbench.commands.compress import (VariantResult, accuracy_loss, choose, compression_suite, parse_options,
                                         render, results_from_outcomes)


def row(variant, backend, latency, drop, status="ok", ci=None, loss_ci=None, samples=None):
    return VariantResult(variant=variant, recipe=variant, backend=backend, status=status, latency_ms=latency,
                         latency_ci=ci, size_bytes=1.0, basis=None if drop is None else "task accuracy",
                         metric="task_accuracy_delta", measure="task accuracy: drop vs fp32", loss=drop,
                         loss_ci=loss_ci, samples=samples)


def parity_row(variant, backend, latency, loss, loss_ci, samples):
    return VariantResult(variant=variant, recipe=variant, backend=backend, status="ok", latency_ms=latency,
                         size_bytes=1.0, basis="parity", metric="top1_agreement_confident",
                         measure="parity loss: top-1 disagreement with fp32 where fp32 is confident (top-1 probability ≥ 0.5)",
                         loss=loss, loss_ci=loss_ci, samples=samples)


def test_picks_the_fastest_within_budget_not_the_first():
    results = [
        row("fp32", "ort", 10.0, 0.0),
        row("int8", "ort", 4.0, 0.004),        # passes, listed first
        row("int8-dynamic", "ort", 3.0, 0.009),  # passes and is faster: this one
        row("prune", "ort", 1.0, 0.05),         # fastest, over budget
        row("broken", "ort", None, None, status="failed"),
        row("fp32", "ov", 8.0, 0.0),
        row("int8", "ov", 2.0, 0.02),
    ]
    by_backend = {c.backend: c for c in choose(results, max_drop=0.01)}
    ort = by_backend["ort"]
    assert ort.variant == "int8-dynamic" and ort.speedup_vs_fp32 == pytest.approx(10 / 3)
    assert ort.within_budget == ["int8-dynamic", "int8", "fp32"] and "over budget: prune" in ort.reason
    assert by_backend["ov"].variant == "fp32"  # int8 loses 2 points: over a 1-point budget
    assert choose(results, max_drop=0.05)[0].variant == "prune"


def test_no_variant_within_budget_is_said_so():
    choice = choose([row("int8", "ov", 2.0, 0.3)], max_drop=0.01)[0]
    assert choice.variant is None and "no variant within budget (task-accuracy drop ≤ 1 pt" in choice.reason


def test_ci_overlap_is_reported():
    results = [row("a", "t", 1.0, 0.0, ci=(0.9, 1.1)), row("b", "t", 1.05, 0.0, ci=(1.0, 1.2))]
    assert "overlaps 'b'" in choose(results, 0.01)[0].reason


def test_loss_uses_the_right_basis():
    task = accuracy_loss({"task_accuracy": {"value": 0.95}, "task_accuracy_delta": {"value": -0.02},
                          "top1_agreement": {"value": 0.9}, "top1_agreement_confident": {"value": 1.0}})
    assert (task.basis, task.metric, task.loss) == ("task accuracy", "task_accuracy_delta", pytest.approx(0.02))
    conf = accuracy_loss({"top1_agreement": {"value": 0.75}, "top1_agreement_confident": {"value": 0.98}})
    assert (conf.basis, conf.metric, conf.loss) == ("parity", "top1_agreement_confident", pytest.approx(0.02))
    top1 = accuracy_loss({"top1_agreement": {"value": 0.75}, "cosine_similarity_mean": {"value": 0.99}})
    assert top1.metric == "top1_agreement" and top1.loss == pytest.approx(0.25) and "loose bound" in top1.measure
    cos = accuracy_loss({"cosine_similarity_mean": {"value": 0.995}})
    assert cos.metric == "cosine_similarity_mean" and cos.loss == pytest.approx(0.005)


def test_unlabelled_model_is_picked_on_the_parity_budget_and_undecided_is_said():
    """EfficientNet-Lite0's case: no labels; int8 agrees with fp32 on all 38 confident samples (Wilson upper bound
    9.2 pt) though it flips 22% of top-1 classes overall. The parity budget decides; a 1-pt budget is within on the
    estimate but the data cannot decide it."""
    results = [parity_row("fp32", "ov", 3.0, 0.0, (0.0, 0.092), 38),
               parity_row("int8", "ov", 1.5, 0.0, (0.0, 0.092), 38),
               parity_row("int8-bad", "ov", 1.2, 0.2, (0.1, 0.35), 38)]
    (choice,) = choose(results, max_drop=0.01, max_parity_loss=0.01)
    assert choice.variant == "int8" and choice.basis == "parity" and "decided on parity" in choice.reason
    assert "faster but over budget: int8-bad" in choice.reason
    assert "38 samples" in choice.evidence and "undecided: the data cannot decide a budget of 1 pt" in choice.evidence
    assert choice.undecided == ["fp32", "int8"]
    # The task-accuracy budget does not apply to an unlabelled model: a zero --max-drop changes nothing.
    assert choose(results, max_drop=0.0, max_parity_loss=0.01)[0].variant == "int8"
    assert choose(results, max_drop=0.01, max_parity_loss=0.25)[0].variant == "int8-bad"


def test_labelled_budget_straddled_by_the_interval_is_undecided(capsys):
    from rich.console import Console

    results = [row("fp32", "ort", 1.0, 0.0, loss_ci=(-0.009, 0.009), samples=360),
               row("int8", "ort", 0.5, 3 / 360, loss_ci=(-0.0027, 0.0242), samples=360)]
    (choice,) = choose(results, max_drop=0.01, max_parity_loss=0.01)
    assert choice.variant == "int8" and choice.basis == "task accuracy" and choice.undecided == ["int8"]
    assert ("task accuracy: drop vs fp32 0.83 pt (95% CI -0.27 to 2.42 pt, 360 samples); undecided: the data cannot "
            "decide a budget of 1 pt") in choice.evidence
    render("digits-cnn", 0.01, results, [choice], Console(width=250, force_terminal=False), 0.01)
    out = capsys.readouterr().out
    assert "decided on task accuracy" in out and "undecided: the data cannot decide a budget of 1 pt" in out
    assert "chosen (undecided)" in out and "-0.27 to +2.42" in out


def test_results_from_outcomes_read_the_interval():
    from types import SimpleNamespace

    case = SimpleNamespace(variant="int8", recipe="int8", backend="onnxruntime")
    metrics = [{"metric": "latency_p50", "value": 1.0, "ci_low": 0.9, "ci_high": 1.1},
               {"metric": "top1_agreement", "value": 0.78, "ci_low": 0.70, "ci_high": 0.84},
               {"metric": "top1_agreement_confident", "value": 1.0, "ci_low": 0.908, "ci_high": 1.0,
                "details": {"samples": 38, "threshold": 0.5, "kind": "parity"}}]
    (r,) = results_from_outcomes([SimpleNamespace(case=case, status="ok", reason="", metrics=metrics, info={})])
    assert r.basis == "parity" and r.metric == "top1_agreement_confident" and r.loss == 0.0 and r.samples == 38
    assert r.loss_ci == pytest.approx((0.0, 0.092)) and r.value == 1.0


def test_options_and_suite():
    opts = parse_options(["int8.calibration_method=Entropy", "int8.per_channel=false", "prune-structured.ratio=0.5"])
    assert opts == {"int8": {"calibration_method": "Entropy", "per_channel": False}, "prune-structured": {"ratio": 0.5}}
    suite = api.load(compression_suite("digits-cnn", ["int8", "prune-structured"], ["onnxruntime"], opts, 1, 60, 10, 0.1))
    assert [v.name for v in suite.variants] == ["fp32", "int8", "prune-structured"]
    assert suite.variants[1].options == {"calibration_method": "Entropy", "per_channel": False}
    with pytest.raises(ValueError, match="RECIPE.KEY=VALUE"):
        parse_options(["ratio=0.5"])
    with pytest.raises(ValueError, match="not among --recipes"):
        compression_suite("digits-cnn", ["int8"], ["onnxruntime"], {"fp16": {}}, 1, 60, 10, 0.1)


def test_compress_command_end_to_end(tmp_path, shared_cache_dir):
    out = tmp_path / "results"
    report = tmp_path / "choice.json"
    cmd = [sys.executable, "-m", "costbench.commands.cli", "compress", "digits-cnn", "--recipes", "int8,prune-structured",
           "--backends", "onnxruntime", "--max-drop", "0.01", "--max-parity-loss", "0.01",
           "--option", "prune-structured.finetune_epochs=1",
           "--min-count", "20", "--min-duration", "0.05", "--out", str(out), "--json", str(report),
           "--cache-dir", str(shared_cache_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "digits-cnn on onnxruntime" in proc.stdout and "decided on task accuracy" in proc.stdout
    data = json.loads(report.read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {"fp32", "int8", "prune-structured"} and all(r["status"] == "ok" for r in rows.values())
    (choice,) = data["choices"]
    within = [rows[v] for v in choice["within_budget"]]
    assert all(r["loss"] <= 0.01 and r["basis"] == "task accuracy" for r in within)
    assert all(r["samples"] == 360 and r["loss_ci"][0] <= r["loss"] <= r["loss_ci"][1] for r in rows.values())
    assert choice["basis"] == "task accuracy" and "360 samples" in choice["evidence"]
    assert choice["variant"] == min(within, key=lambda r: r["latency_ms"])["variant"]
    prov = rows["int8"]["provenance"]
    from costbench.harness.build.compress.registry import get_recipe

    assert prov["recipe"] == "int8" and prov["recipe_version"] == get_recipe("int8").version
    assert prov["parameters"] == 9930
    assert prov["calibration"]["samples"] == 64 and prov["calibration"]["method"] == "MinMax"
    pruned = rows["prune-structured"]["provenance"]
    assert pruned["parameters"] < 9930 and pruned["sparsity"] == 0.0 and pruned["flops"] < prov["flops"]
    assert rows["fp32"]["retained"] == pytest.approx(1.0)
    assert list(out.glob("runs/*.jsonl"))  # an ordinary run file, readable by `costbench results`
