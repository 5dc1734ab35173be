"""Helpers the recipes share: library versions for cache keys and provenance, and the calibration samples.

A static quantization recipe calibrates on :func:`calibration_subset` of the bundle's real calibration
samples, fed by :func:`calibration_batches`, and puts :func:`samples_hash` of them in its cache key:
the calibration data decides the quantized bytes.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Iterator

import numpy as np

from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.zoo.base import ModelBundle, SampleSet


def library_version(dist: str) -> str:
    """Installed version of a distribution, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def calibration_subset(bundle: ModelBundle, n: int) -> SampleSet:
    """The first ``n`` calibration samples (all of them when the bundle has fewer)."""
    if len(bundle.calibration) == 0:
        raise RecipeNotApplicable(f"model {bundle.name!r} has no calibration samples; int8 recipes need some")
    return bundle.calibration.take(n)


def samples_hash(samples: SampleSet) -> str:
    """SHA-256 of sample arrays (names, dtypes, shapes, bytes): calibration data decides int8 bytes."""
    h = hashlib.sha256()
    for name in sorted(samples.inputs):
        arr = np.ascontiguousarray(samples.inputs[name])
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def calibration_batches(samples: SampleSet, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every sample once, in order; the last batch is short rather than padded (padding would double-count)."""
    n = len(samples)
    for start in range(0, n, batch_size):
        yield {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in samples.inputs.items()}
