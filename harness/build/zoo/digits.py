"""``digits-cnn``: a small CNN that costbench trains itself on scikit-learn's handwritten digits.

A task with real labels that trains in seconds: 8x8 grey images of the digits 0-9 (1797 of
them), a fixed stratified 80/20 split, pixels scaled to [0, 1]. Training is seeded and run once;
the weights are cached under ``cache_dir/models`` keyed by a hash of the architecture, the
hyper-parameters and ``TRAINING_VERSION``, so every later load (and every child process) reuses them.

torch and scikit-learn are imported only when a model is built or trained: planning imports
this module to read ``source_kind`` and must stay light. ``DigitsCNN`` is therefore created on
first access (PEP 562 module ``__getattr__``); it still pickles and unpickles as
``costbench.harness.build.zoo.digits.DigitsCNN``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.artifacts import InputSpec, content_key, file_sha256, write_json_atomic
from costbench.harness.build.zoo.base import SOURCE_TORCH, ModelBundle, SampleSet, ZooModel, cached_arrays
from costbench.harness.build.zoo.custom import state_dict_hash

# Bump when training changes in a way the hyper-parameters below do not capture.
# 2: trained on one thread (bitwise reproducible on any core count; faster for a model this small).
TRAINING_VERSION = 2
ARCHITECTURE = "conv3x3(1->16)+relu, conv3x3(16->32)+relu, maxpool2, linear(512->10)"
HYPERPARAMETERS: dict[str, Any] = {
    "seed": 0,
    "epochs": 12,
    "batch_size": 32,
    "optimizer": "Adam",
    "lr": 3e-3,
    "test_size": 0.2,
    "split_random_state": 0,
    "pixel_scale": 16.0,
}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


STUDENT_ARCHITECTURE = "conv3x3(1->8)+relu, maxpool2, conv3x3(8->16)+relu, maxpool2, linear(64->10)"


def __getattr__(name: str) -> Any:
    if name == "DigitsCNN":
        return _digits_cnn_class()
    if name == "DigitsStudent":
        return _digits_student_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _digits_cnn_class() -> type:
    """Define the network class once, importing torch only now."""
    from torch import nn

    class DigitsCNN(nn.Module):
        """1x8x8 digit -> conv16 -> conv32 -> 2x2 max-pool -> linear -> 10 logits."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.classifier = nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    # Pickle finds classes by module and qualified name; make both the public ones.
    DigitsCNN.__module__ = __name__
    DigitsCNN.__qualname__ = "DigitsCNN"
    return DigitsCNN


@functools.cache
def _digits_student_class() -> type:
    """The distillation student: about a fifth of the teacher's parameters (1898) and a thirteenth of its FLOPs."""
    from torch import nn

    class DigitsStudent(nn.Module):
        """1x8x8 digit -> conv8 -> pool -> conv16 -> pool -> linear -> 10 logits."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Linear(16 * 2 * 2, 10)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    DigitsStudent.__module__ = __name__
    DigitsStudent.__qualname__ = "DigitsStudent"
    return DigitsStudent


@functools.cache
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): float32 N x 1 x 8 x 8 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / HYPERPARAMETERS["pixel_scale"]).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=HYPERPARAMETERS["test_size"], random_state=HYPERPARAMETERS["split_random_state"], stratify=y
    )
    return x_tr, x_te, y_tr, y_te


def cached_digits_split(cache_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`digits_split`, read from the cache after the first call (scikit-learn's import is slow)."""
    key = hashlib.sha256(json.dumps(HYPERPARAMETERS, sort_keys=True).encode()).hexdigest()[:16]
    arrays = cached_arrays(cache_dir / "data" / f"digits-split-{key}.npz",
                           lambda: dict(zip(("x_train", "x_test", "y_train", "y_test"), digits_split())))
    return arrays["x_train"], arrays["x_test"], arrays["y_train"], arrays["y_test"]


def weights_path(cache_dir: Path) -> Path:
    """Where the trained state_dict lives; the name changes whenever training would."""
    key = content_key({"architecture": ARCHITECTURE, "hyperparameters": HYPERPARAMETERS, "version": TRAINING_VERSION})
    return Path(cache_dir) / "models" / f"digits-cnn-{key}.pt"


def train(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Train a fresh DigitsCNN deterministically; returns its state_dict."""
    import torch

    from costbench.harness.build.training import threads_for

    hp = HYPERPARAMETERS
    torch.manual_seed(hp["seed"])
    model = _digits_cnn_class()()
    with threads_for(model):
        return _train_loop(model, x, y, hp)


def _train_loop(model, x: np.ndarray, y: np.ndarray, hp: dict[str, Any]) -> dict[str, Any]:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(hp["seed"])
    model.train()
    for _ in range(hp["epochs"]):
        for idx in torch.randperm(len(xt), generator=order).split(hp["batch_size"]):
            optimizer.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
    model.eval()
    return model.state_dict()


def _save_atomic(state_dict: dict[str, Any], path: Path) -> None:
    """Write to a temp file beside ``path`` and rename, so a reader never sees half a file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state_dict, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_train(cache_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cached state_dict (training it on a miss), and what happened: cached or trained, and how long."""
    import torch

    path = weights_path(cache_dir)
    info: dict[str, Any] = {"weights": str(path)}
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), {**info, "weights_cached": True}
        except Exception as err:  # a foreign or damaged file: retrain and replace it rather than fail every run
            info["note"] = f"cached weights were unreadable ({err}); retrained"
    x_tr, _, y_tr, _ = cached_digits_split(cache_dir)
    t0 = time.perf_counter()
    state = train(x_tr, y_tr)
    info.update(weights_cached=False, train_time_s=round(time.perf_counter() - t0, 3))
    _save_atomic(state, path)
    return state, info


def _weights_facts(cache_dir: Path, x_te: np.ndarray, y_te: np.ndarray) -> dict[str, Any]:
    """{source_hash, fp32_test_accuracy, info} of the cached weights, computed (and training them) on a miss.

    Kept in a JSON file beside the weights and trusted only while the weights file's SHA-256 matches.
    """
    path = weights_path(cache_dir)
    facts_path = path.with_suffix(".facts.json")
    if path.exists() and facts_path.exists():
        try:
            facts = json.loads(facts_path.read_text())
            if facts.get("weights_sha256") == file_sha256(path):
                return {**facts, "info": {"weights": str(path), "weights_cached": True}}
        except (OSError, ValueError):
            pass  # unreadable: recompute below
    import torch

    state, info = load_or_train(cache_dir)
    model = _digits_cnn_class()()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        test_acc = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    facts = {"weights_sha256": file_sha256(path), "source_hash": state_dict_hash(state, salt=ARCHITECTURE),
             "fp32_test_accuracy": test_acc}
    write_json_atomic(facts_path, facts)
    return {**facts, "info": info}


class DigitsCNNModel(ZooModel):
    """The digits CNN, trained by costbench on first use; evaluation is the held-out test split with labels."""

    name = "digits-cnn"
    source_kind = SOURCE_TORCH
    description = "Small CNN on scikit-learn's 8x8 handwritten digits (trained by costbench, real labels)"

    def load(self, cache_dir: Path) -> ModelBundle:
        """Train once (or read the cached weights) and return the bundle.

        What the bundle needs of the weights without running them (their hash, the fp32 test accuracy)
        is kept beside them, so a case whose artifact is cached never imports torch; the module itself
        is built only when asked for.
        """
        x_tr, x_te, y_tr, y_te = cached_digits_split(cache_dir)
        facts = _weights_facts(cache_dir, x_te, y_te)
        path = weights_path(cache_dir)

        @functools.cache
        def state():
            import torch

            return torch.load(path, map_location="cpu", weights_only=True)

        def fresh():
            m = _digits_cnn_class()()
            m.load_state_dict(state())
            return m.eval()

        info, test_acc = facts["info"], facts["fp32_test_accuracy"]

        split = f"stratified split test_size={HYPERPARAMETERS['test_size']}, random_state={HYPERPARAMETERS['split_random_state']}"
        return ModelBundle(
            name=self.name,
            task="classification",
            inputs=[InputSpec(INPUT_NAME, (1, 8, 8), "float32")],
            outputs=[OUTPUT_NAME],
            calibration=SampleSet({INPUT_NAME: x_tr}, y_tr, f"scikit-learn digits, train split ({split}), pixels/16"),
            evaluation=SampleSet({INPUT_NAME: x_te}, y_te, f"scikit-learn digits, held-out test split ({split}), pixels/16"),
            source_hash=facts["source_hash"],
            source_kind=SOURCE_TORCH,
            module_factory=fresh,
            training=SampleSet({INPUT_NAME: x_tr}, y_tr, f"scikit-learn digits, train split ({split}), pixels/16"),
            student_factory=lambda: _digits_student_class()(),
            student_description=STUDENT_ARCHITECTURE,
            details={**info, "fp32_test_accuracy": test_acc, "architecture": ARCHITECTURE,
                     "training": dict(HYPERPARAMETERS, version=TRAINING_VERSION)},
        )
