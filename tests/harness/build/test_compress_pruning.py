"""Pruning: unstructured zeros with dense shapes; structured pruning physically removes channels; both fine-tuned."""

from __future__ import annotations

import numpy as np

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_TORCH
from costbench.harness.build.compress.registry import get_recipe


def build(bundle, recipe_name, fmt, cache, **options):
    recipe = get_recipe(recipe_name)
    return recipe.artifact(bundle, recipe.parse_config(options), fmt, cache)


def accuracy(module, samples):
    import torch

    with torch.no_grad():
        return float((module(torch.from_numpy(samples.inputs["input"])).argmax(1).numpy() == samples.labels).mean())


def onnx_weights(path):
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if len(t.dims) >= 2}


def test_unstructured_zeroes_weights_but_keeps_dense_shapes(digits, shared_cache):
    import torch

    art = build(digits, "prune-unstructured", FORMAT_TORCH, shared_cache, amount=0.6, finetune_epochs=1)
    module = torch.load(art.path, weights_only=False)
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in module.named_parameters())  # made permanent
    assert not any(module._forward_pre_hooks for module in module.modules())
    weights = [m.weight for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [tuple(w.shape) for w in weights] == [(16, 1, 3, 3), (32, 16, 3, 3), (10, 512)]  # dense shapes kept
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(zeros - 0.6) < 0.01
    p = art.provenance
    assert abs(p["weight_sparsity"] - zeros) < 1e-9 and p["parameters"] == 9930 == p["fp32_parameters"]
    assert p["flops"] == p["fp32_flops"] and "dense kernels do the same work" in p["note"]
    assert p["fine_tune"]["loss"] == "cross-entropy on labels" and p["fine_tune"]["samples"] == 1437
    assert accuracy(module, digits.evaluation) >= digits.details["fp32_test_accuracy"] - 0.03
    # The zeros survive export: the ONNX weights are just as sparse.
    onnx_art = build(digits, "prune-unstructured", FORMAT_ONNX, shared_cache, amount=0.6, finetune_epochs=1)
    exported = [w for w in onnx_weights(onnx_art.path).values()]
    assert abs(sum(int((w == 0).sum()) for w in exported) / sum(w.size for w in exported) - 0.6) < 0.01
    assert onnx_art.provenance["torch_artifact"] == art.key


def test_structured_pruning_removes_channels(digits, shared_cache):
    import torch

    art = build(digits, "prune-structured", FORMAT_TORCH, shared_cache, ratio=0.5, finetune_epochs=2)
    module = torch.load(art.path, weights_only=False)
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16)]
    assert module.classifier.in_features == 16 * 4 * 4 and module.classifier.out_features == 10  # classes kept
    params = sum(p.numel() for p in module.parameters())
    assert params == (8 * 9 + 8) + (16 * 8 * 9 + 16) + (10 * 256 + 10) == art.provenance["parameters"]
    p = art.provenance
    assert p["parameters_removed"] == 9930 - params and p["flops"] < 0.3 * p["fp32_flops"]
    assert p["changed_layers"]["features.2"] == {"before": [32, 16, 3, 3], "after": [16, 8, 3, 3]}
    assert p["weight_sparsity"] == 0.0  # nothing zeroed: the channels are gone
    assert accuracy(module, digits.evaluation) >= digits.details["fp32_test_accuracy"] - 0.03
    assert p["build_time_evaluation"]["metric"] == "task_accuracy"
    # The exported graph is smaller too.
    onnx_art = build(digits, "prune-structured", FORMAT_ONNX, shared_cache, ratio=0.5, finetune_epochs=2)
    shapes = sorted(w.shape for w in onnx_weights(onnx_art.path).values())
    assert shapes == [(8, 1, 3, 3), (10, 256), (16, 8, 3, 3)]


def test_structured_pruning_of_minilm_keeps_hidden_size(minilm, shared_cache):
    import torch

    # No fine-tune here (that loop is tested on digits); this checks what pruning does to the transformer.
    art = build(minilm, "prune-structured", FORMAT_TORCH, shared_cache, ratio=0.25, finetune_epochs=0)
    module = torch.load(art.path, weights_only=False)
    for layer in module.bert.encoder.layer:
        assert (layer.intermediate.dense.in_features, layer.intermediate.dense.out_features) == (384, 1152)
        assert (layer.output.dense.in_features, layer.output.dense.out_features) == (1152, 384)
        assert layer.attention.self.query.weight.shape == (384, 384)
    p = art.provenance
    assert p["parameters"] == minilm.details["parameters"] - 6 * (384 * 384 + 384 + 384 * 384)
    assert "feed-forward" in p["scope"] and p["fine_tune"] is None
    # Paraphrase retrieval (the task) survives; the embeddings themselves move.
    assert p["build_time_evaluation"]["metric"] == "task_accuracy"
    assert p["build_time_evaluation"]["accuracy_retained"] >= 0.95
    sample = minilm.evaluation.take(16)
    with torch.no_grad():
        got = module(*(torch.from_numpy(sample.inputs[i.name]) for i in minilm.inputs)).numpy()
    assert got.shape == (16, 384)
    ref = np.asarray(minilm.torch_module()(*(torch.from_numpy(sample.inputs[i.name]) for i in minilm.inputs)).detach())
    assert float(np.mean(np.sum(got * ref, axis=1))) > 0.7


def test_fine_tune_without_labels_distils_from_fp32(minilm):
    from costbench.harness.build.training import fine_tune_objective

    objective = fine_tune_objective(minilm)
    assert objective.needs_teacher and objective.data is minilm.calibration
    assert objective.description["loss"].startswith("1 - cosine") and objective.description["teacher"] == "all-minilm-l6-v2 fp32"
