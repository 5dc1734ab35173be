"""What the edge-runtime tests (ExecuTorch, LiteRT) share: the tiny CNN's input, fresh inputs, torch eager, prepare."""

from __future__ import annotations

import numpy as np

SHAPE = (3, 16, 16)  # the tiny CNN's per-sample input


def prepare(backend_cls, artifact, batch_size, **options):
    """A session of ``backend_cls`` on ``artifact``, with ``options`` validated as a suite's would be."""
    backend = backend_cls()
    return backend.prepare(artifact, backend.parse_options(options), batch_size)


def fresh(rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """A new random batch for the tiny CNN, from the run's seeded generator."""
    return rng.standard_normal((batch_size, *SHAPE)).astype(np.float32)


def eager(module, x: np.ndarray) -> np.ndarray:
    """The torch eager reference output."""
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()
