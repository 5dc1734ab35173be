"""Accuracy-aware selection: the fastest variant within the budget per backend (not the first that passes),
and ``costbench compress`` end to end on real cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from costbench.commands.compress import (VariantResult, accuracy_drop, choose, compression_suite,
                                               parse_options)


def row(variant, backend, latency, drop, status="ok", ci=None):
    return VariantResult(variant=variant, recipe=variant, backend=backend, status=status, latency_ms=latency,
                         latency_ci=ci, size_bytes=1.0, metric="task_accuracy", drop=drop)


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
    assert choice.variant is None and "no variant within" in choice.reason


def test_ci_overlap_is_reported():
    results = [row("a", "t", 1.0, 0.0, ci=(0.9, 1.1)), row("b", "t", 1.05, 0.0, ci=(1.0, 1.2))]
    assert "overlaps 'b'" in choose(results, 0.01)[0].reason


def test_accuracy_drop_uses_the_best_measure_available():
    assert accuracy_drop({"task_accuracy": 0.95, "task_accuracy_delta": -0.02, "top1_agreement": 0.9,
                          "accuracy_retained": 0.98}) == ("task_accuracy", 0.95, 0.02, 0.98)
    assert accuracy_drop({"top1_agreement": 0.75, "cosine_similarity_mean": 0.99}) == ("top1_agreement", 0.75, 0.25, 0.75)
    metric, _, drop, _ = accuracy_drop({"cosine_similarity_mean": 0.995})
    assert metric == "cosine_similarity_mean" and drop == pytest.approx(0.005)


def test_options_and_suite():
    opts = parse_options(["int8.calibration_method=Entropy", "int8.per_channel=false", "prune-structured.ratio=0.5"])
    assert opts == {"int8": {"calibration_method": "Entropy", "per_channel": False}, "prune-structured": {"ratio": 0.5}}
    suite = compression_suite("digits-cnn", ["int8", "prune-structured"], ["onnxruntime"], opts, 1, 60, 10, 0.1)
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
           "--backends", "onnxruntime", "--max-drop", "0.01", "--option", "prune-structured.finetune_epochs=1",
           "--min-count", "20", "--min-duration", "0.05", "--out", str(out), "--json", str(report),
           "--cache-dir", str(shared_cache_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "digits-cnn on onnxruntime" in proc.stdout
    data = json.loads(report.read_text())
    rows = {r["variant"]: r for r in data["results"]}
    assert set(rows) == {"fp32", "int8", "prune-structured"} and all(r["status"] == "ok" for r in rows.values())
    (choice,) = data["choices"]
    within = [rows[v] for v in choice["within_budget"]]
    assert all(r["drop"] <= 0.01 for r in within)
    assert choice["variant"] == min(within, key=lambda r: r["latency_ms"])["variant"]
    prov = rows["int8"]["provenance"]
    assert prov["recipe"] == "int8" and prov["recipe_version"] == 2 and prov["parameters"] == 9930
    assert prov["calibration"]["samples"] == 64 and prov["calibration"]["method"] == "MinMax"
    pruned = rows["prune-structured"]["provenance"]
    assert pruned["parameters"] < 9930 and pruned["sparsity"] == 0.0 and pruned["flops"] < prov["flops"]
    assert rows["fp32"]["retained"] == pytest.approx(1.0)
    assert list(out.glob("runs/*.jsonl"))  # an ordinary run file, readable by `costbench results`
