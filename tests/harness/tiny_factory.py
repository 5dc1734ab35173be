"""A user-style torch factory for the custom-model tests: 'tiny_factory:make_tiny'."""

from __future__ import annotations

import torch
from torch import nn


def make_tiny() -> nn.Module:
    """A seeded Conv/ReLU/Linear classifier on 3x8x8 inputs (10 classes)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )


def make_unseeded() -> nn.Module:
    """Random weights on every call: the zoo must still hand out one model per load."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


def not_a_module():
    """A factory that returns the wrong thing."""
    return "model"


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export (and so ExecuTorch's and LiteRT's converters) cannot trace it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)
