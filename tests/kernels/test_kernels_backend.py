"""The costbench-kernels backend: a real pickled torch model, its Linear layers on our kernel."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from costbench.backends.registry import get_backend, load_registry
from costbench.core.artifacts import FORMAT_TORCH, Artifact, InputSpec


def test_registered_and_available():
    entry = load_registry()["costbench-kernels"]
    assert entry.backend is not None
    p = entry.probe()
    assert p.available, p.reason
    assert "generic" in p.versions["kernel_paths"]


def test_runs_a_torch_artifact(tmp_path, rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 10)).eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    art = Artifact(FORMAT_TORCH, path, "k", [InputSpec("x", (64,))], ["y"])
    backend = get_backend("costbench-kernels")
    session = backend.prepare(art, backend.parse_options({"threads": 2}), batch_size=8)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    (y,) = session.run({"x": x})
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert y.shape == (8, 10)
    cos = (y * ref).sum(1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.99
    info = session.info()
    assert info["int8_layers"] == 2 and info["kernel_threads"] == 2
