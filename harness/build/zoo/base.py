"""What the model zoo hands the rest of the harness: a model, its inputs, and real data for it."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from costbench.core.artifacts import InputSpec

SOURCE_TORCH = "torch"  # the model is a torch.nn.Module (zoo model or user factory)
SOURCE_ONNX = "onnx"  # the model is a user-supplied ONNX file; there is no torch module
SOURCE_TFLITE = "tflite"  # the model is a user-supplied LiteRT (.tflite) file; there is no torch module
SOURCE_HF = "hf"  # a generative model as a local Hugging Face causal-LM folder (zoo/causal_lm.py)


@dataclass
class SampleSet:
    """Real samples for a model: arrays keyed by input name, all with the same leading length N."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    description: str = ""

    def __post_init__(self) -> None:
        lengths = {k: len(v) for k, v in self.inputs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"sample arrays differ in length: {lengths}")
        if self.labels is not None and len(self.labels) != len(self):
            raise ValueError(f"{len(self.labels)} labels for {len(self)} samples")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int) -> "SampleSet":
        """The first ``n`` samples (all of them when fewer)."""
        labels = None if self.labels is None else self.labels[:n]
        return SampleSet({k: v[:n] for k, v in self.inputs.items()}, labels, self.description)

    def batch(self, batch_size: int, start: int = 0) -> dict[str, np.ndarray]:
        """``batch_size`` samples from ``start``, wrapping around so any batch size is filled."""
        n = len(self)
        idx = (np.arange(start, start + batch_size) % n)
        return {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Cover every sample once in batches of ``batch_size``; yields (batch, number of real samples).

        The last batch is padded by wrapping around (static-shape runtimes need full batches);
        callers keep only the first ``real`` outputs.
        """
        n = len(self)
        for start in range(0, n, batch_size):
            yield self.batch(batch_size, start), min(batch_size, n - start)


@dataclass
class ModelBundle:
    """A loaded model with its interface and data, as the recipes and the worker need it."""

    name: str
    task: str  # "classification" (top-1, and task accuracy with labels), "embedding" (neighbour agreement, and
    # retrieval accuracy with group labels), "causal_lm" (next-token and greedy-continuation parity) or "generic"
    inputs: list[InputSpec]
    outputs: list[str]
    calibration: SampleSet  # for post-training quantization
    evaluation: SampleSet  # for accuracy against the fp32 reference (and labels when present)
    source_hash: str  # content hash of the weights (and architecture) the variants derive from
    source_kind: str = SOURCE_TORCH
    module_factory: Callable[[], Any] | None = None  # returns an eval-mode torch.nn.Module
    onnx_path: Path | None = None  # user-supplied fp32 ONNX
    hf_path: Path | None = None  # a causal LM's Hugging Face folder (config.json, weights, tokenizer.json)
    details: dict[str, Any] = field(default_factory=dict)  # parameters, FLOPs, data provenance
    # Labelled data the model was trained on, for recipes that fine-tune (pruning) or train (distillation);
    # None when the model comes pre-trained without its training set (those recipes then say what they use).
    training: SampleSet | None = None
    # A fresh, untrained smaller network for distillation (None: the model has no student architecture).
    student_factory: Callable[[], Any] | None = None
    student_description: str = ""
    # A causal LM's tokens of the user's perplexity text (harness.build.perplexity.PerplexityText); None without one
    # or where it is not computed (random weights: details["perplexity"] says why).
    perplexity_text: Any = None

    def torch_module(self):
        """A fresh eval-mode torch module; raises if the model came as an ONNX file."""
        if self.module_factory is None:
            raise TypeError(f"model {self.name!r} is an ONNX file; it has no torch module")
        return self.module_factory()


class ZooModel(abc.ABC):
    """A named model the zoo can load. ``source_kind`` is known without loading anything (planning needs it)."""

    name: ClassVar[str]
    source_kind: ClassVar[str] = SOURCE_TORCH
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def load(self, cache_dir: Path) -> ModelBundle:
        """Build the bundle; may train or preprocess once and cache under ``cache_dir``."""


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from ``path`` (.npz) if present, else ``build()`` them and save atomically.

    Data sets are prepared once per cache: each case runs in a fresh process, and importing
    scikit-learn or decoding JPEGs there costs more than a whole fast case's measurement.
    """
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            pass  # damaged cache file: rebuild below and replace it
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    # Hand back what a later load returns, not the freshly built arrays: those can carry other strides
    # (e.g. on a size-1 channel axis), which changes which kernel torch picks and so the last bits of
    # its outputs. A cold and a warm cache must feed a model the same bytes in the same layout.
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
