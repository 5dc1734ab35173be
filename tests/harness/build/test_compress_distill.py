"""Distillation: the loss is DESIGN.md's Hinton loss to the digit, the teacher never trains, and the recipe
reports the student with and without distillation."""

from __future__ import annotations

import numpy as np
import pytest

from costbench.core.artifacts import FORMAT_TORCH
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.build.compress.distill import DistillConfig, train_student
from costbench.harness.build.training import distillation_loss


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_loss_equals_a_hand_computed_value():
    import torch

    s = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = np.array([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5]])
    y = np.array([0, 2])
    T, alpha = 2.0, 0.7
    # By hand: KL(p_t || p_s) per sample at temperature T, summed over classes, averaged over the batch.
    log_pt, log_ps = _log_softmax(t / T), _log_softmax(s / T)
    kl = float(np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1)))
    ce = float(np.mean(-_log_softmax(s)[np.arange(2), y]))
    expected = alpha * T ** 2 * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.8829454, abs=1e-6)  # the number itself, so a shared mistake cannot hide
    # alpha = 0 is plain cross-entropy; alpha = 1 needs no labels.
    assert float(distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), T, 0.0)) == pytest.approx(ce)
    assert float(distillation_loss(torch.tensor(s), torch.tensor(t), None, T, 1.0)) == pytest.approx(T ** 2 * kl)


def test_teacher_stays_frozen_and_in_eval_mode(digits):
    import torch

    teacher = digits.torch_module()
    teacher.train()  # the training loop must put it in eval mode itself
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, log = train_student(digits, teacher, DistillConfig(epochs=1), alpha=0.9)
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(p.grad is not None for p in student.parameters()) and not student.training
    assert log["alpha"] == 0.9 and log["temperature"] == 4.0 and len(log["loss_per_epoch"]) == 1


def test_distill_reports_both_students(digits, shared_cache):
    import torch

    recipe = get_recipe("distill")
    art = recipe.artifact(digits, recipe.parse_config({"epochs": 3}), FORMAT_TORCH, shared_cache)
    p = art.provenance
    assert p["teacher"]["model"] == "digits-cnn" and p["teacher"]["parameters"] == 9930
    assert p["teacher"]["accuracy"] == pytest.approx(digits.details["fp32_test_accuracy"])
    assert p["student"]["parameters"] == 1898 and p["parameters"] == 1898
    assert p["training"]["alpha"] == 0.9 and p["training_without_distillation"]["alpha"] == 0.0
    assert p["training"]["epochs"] == p["training_without_distillation"]["epochs"] == 3
    assert p["training"]["seed"] == p["training_without_distillation"]["seed"]
    for key in ("accuracy_with_distillation", "accuracy_without_distillation"):
        assert 0.5 < p[key] <= 1.0  # real accuracies on the 360 held-out digits
    student = torch.load(art.path, weights_only=False)
    with torch.no_grad():
        logits = student(torch.from_numpy(digits.evaluation.inputs["input"])).numpy()
    assert float((logits.argmax(1) == digits.evaluation.labels).mean()) == pytest.approx(p["accuracy_with_distillation"])


def test_distill_needs_a_student(effnet, shared_cache):
    recipe = get_recipe("distill")
    with pytest.raises(ValueError, match="needs a student"):
        recipe.transform(effnet, recipe.parse_config({}))
