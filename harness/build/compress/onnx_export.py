"""fp32 torch -> ONNX export with a dynamic batch axis, checked against torch in ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.artifacts import InputSpec
from costbench.harness.build.zoo.base import SampleSet

OPSET = 17
# Relative to the output's magnitude: |onnx - torch| <= TOLERANCE * max(1, max|torch|).
TOLERANCE = 1e-4
EXPORT_BATCH = 2  # trace at 2, not 1, so no size-1 batch is specialised into the graph
CHECK_BATCHES = (1, 3)  # then check at two other sizes: the batch axis really is dynamic


class ExportError(RuntimeError):
    """The exported ONNX model does not reproduce the torch model."""


def export_onnx(module, inputs: list[InputSpec], outputs: list[str], samples: SampleSet, path: Path,
                opset: int = OPSET) -> dict[str, Any]:
    """Export ``module`` to ``path`` (TorchScript exporter, dynamic batch) and verify it on real samples.

    Returns provenance: exporter, opset, torch version, and the largest difference seen against
    torch. Raises :class:`ExportError` when ONNX Runtime disagrees with torch beyond tolerance.
    """
    import torch

    args = tuple(torch.from_numpy(samples.batch(EXPORT_BATCH)[i.name]) for i in inputs)
    names = [i.name for i in inputs] + list(outputs)
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns about its own deprecation and constant folding on every run.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset,
            input_names=[i.name for i in inputs], output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in names},
        )
    err = verify_onnx(module, inputs, samples, path)
    return {
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "opset": opset,
        "torch": torch.__version__,
        "export_max_abs_error": err,
    }


def verify_onnx(module, inputs: list[InputSpec], samples: SampleSet, path: Path) -> float:
    """Largest |onnx - torch| over every output at batch sizes ``CHECK_BATCHES``; ExportError beyond tolerance."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in CHECK_BATCHES:
        feed = samples.batch(batch)
        with torch.no_grad():
            ref = module(*(torch.from_numpy(feed[i.name]) for i in inputs))
        refs = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        got = session.run(None, feed)
        for name, r, g in zip(session.get_outputs(), refs, got):
            if r.shape != g.shape:
                raise ExportError(f"{path}: output {name.name!r} has shape {g.shape} in ONNX Runtime, {r.shape} in torch "
                                  f"(batch {batch})")
            err = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
            bound = TOLERANCE * max(1.0, float(np.max(np.abs(r)))) if r.size else TOLERANCE
            if not err <= bound:  # also catches NaN
                raise ExportError(f"{path}: output {name.name!r} differs from torch by {err:.3g} at batch {batch} "
                                  f"(tolerance {bound:.3g})")
            worst = max(worst, err)
    return worst
