"""torch -> LiteRT ``.tflite`` through litert-torch, checked on the LiteRT interpreter; shared by the ``tflite-*`` recipes.

The flow is litert-torch's own: ``litert_torch.convert(module, sample_args).export(path)`` (torch.export,
then lowering to the TFLite dialect; no TensorFlow). The converted model has a static batch: litert-torch
0.10 cannot lower a symbolic batch through a flatten (``view(sym_size, 512)``) or EfficientNet's static
padding, so the recipes convert at ``batch_size`` (default 1, the edge case) and the backend resizes where
the graph allows it and says so where it does not.

A model litert-torch cannot convert (an op without a lowering, data-dependent control flow) is a fact
about the model: the recipe raises :class:`RecipeNotApplicable` with the converter's reason, and the
case is skipped. Heavy imports (torch, litert_torch, ai_edge_quantizer) happen inside functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from costbench.core.artifacts import InputSpec
from costbench.core.tflite_files import TFLiteRunner, allocate, open_interpreter
from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.zoo.base import SampleSet

# Part of every LiteRT artifact's cache key: bump when the conversion below changes its bytes.
EXPORT_VERSION = 1
# |tflite - torch| <= TOLERANCE * max(1, max|torch|), as for the ONNX and ExecuTorch exports.
TOLERANCE = 1e-4
CHECK_SAMPLES = 8  # batches of held-out-free calibration samples run through both at the export's batch
INSTALL_HINT = "pip install 'costbench[litert]'"
DISTRIBUTIONS = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "litert-converter")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that write a .tflite's bytes (cache material and provenance)."""
    return {d: library_version(d) for d in ("torch", *DISTRIBUTIONS)}


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ImportError(f"{module} is not installed: {INSTALL_HINT}") from exc
        raise


def _first_lines(exc: BaseException, n: int = 6) -> str:
    """The head of a converter's message (torch.export and JAX run to pages of graph dumps)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return "\n".join(lines[:n]) + (" [...]" if len(lines) > n else "")


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress line per pass and absl logs; keep the build log readable."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def example_args(inputs: Sequence[InputSpec], samples: SampleSet, batch: int) -> tuple:
    """Real samples as the tuple of tensors a module is called with, in the bundle's input order."""
    import torch

    feed = samples.batch(batch)
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[i.name].astype(i.dtype, copy=False))) for i in inputs)


def convert_tflite(module: Any, inputs: Sequence[InputSpec], samples: SampleSet, path: Path, name: str,
                   batch_size: int = 1) -> dict[str, Any]:
    """Convert ``module`` at a static ``batch_size`` and write ``path``; verify it on LiteRT; returns provenance.

    Raises :class:`RecipeNotApplicable` with litert-torch's reason when the model does not convert.
    """
    import torch

    litert_torch = _import("litert_torch")
    args = example_args(inputs, samples, batch_size)
    try:
        with _quiet(), torch.no_grad():
            edge = litert_torch.convert(module.eval(), args)
            edge.export(str(path))
    except (ImportError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # torch.export, the JAX bridge and the MLIR converter raise many types
        raise RecipeNotApplicable(
            f"litert-torch {library_version('litert-torch')} cannot convert {name!r} to LiteRT: "
            f"{type(exc).__name__}: {_first_lines(exc)}") from None
    checked = verify_tflite(module, inputs, samples, path, batch_size, TOLERANCE)
    return {
        "converter": "litert_torch.convert(module, sample_args).export(path) (torch.export -> TFLite flatbuffer)",
        "batch": "static",
        "export_batch": batch_size,
        **checked,
        **ops_summary(path),
        "libraries": library_versions(),
    }


def torch_outputs(module: Any, args: tuple) -> list[np.ndarray]:
    """Every tensor the module returns, flattened as torch.export flattens them."""
    import torch

    with torch.no_grad():
        out = module(*args)
    return [t.numpy() for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def tflite_outputs(path: Path, inputs: Sequence[InputSpec], feed: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
    """One batch on LiteRT as the litert backend's session runs it (its runner, XNNPACK, every core)."""
    runner = TFLiteRunner(path, inputs, batch)
    try:
        return runner.run(feed)
    finally:
        runner.close()


def compare(refs: list[np.ndarray], got: list[np.ndarray], path: Path, tolerance: float | None,
            what: str = "torch") -> dict[str, float]:
    """Largest |got - ref| and worst per-sample cosine; with ``tolerance``, a difference beyond it raises RuntimeError."""
    if len(got) != len(refs):
        raise RuntimeError(f"{path}: {len(got)} outputs on LiteRT, {len(refs)} in {what}")
    worst, worst_rel, worst_cos = 0.0, 0.0, 1.0
    for i, (r, g) in enumerate(zip(refs, got)):
        if r.shape != g.shape:
            raise RuntimeError(f"{path}: output {i} has shape {g.shape} on LiteRT, {r.shape} in {what}")
        if not r.size:
            continue
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        diff = float(np.max(np.abs(r64 - g64)))
        scale = max(1.0, float(np.max(np.abs(r64))))
        rf, gf = r64.reshape(len(r64), -1), g64.reshape(len(g64), -1)
        denom = np.linalg.norm(rf, axis=1) * np.linalg.norm(gf, axis=1)
        cos = float(np.min(np.where(denom > 0, (rf * gf).sum(1) / np.where(denom > 0, denom, 1), 1.0)))
        if tolerance is not None and not diff <= tolerance * scale:  # also catches NaN
            raise RuntimeError(f"{path}: output {i} differs from {what} by {diff:.3g} (tolerance "
                               f"{tolerance * scale:.3g} = {tolerance:g} x max(1, max|{what}|))")
        worst, worst_rel, worst_cos = max(worst, diff), max(worst_rel, diff / scale), min(worst_cos, cos)
    return {"export_max_abs_error": worst, "export_max_rel_error": worst_rel, "export_min_cosine": worst_cos}


def verify_tflite(module: Any, inputs: Sequence[InputSpec], samples: SampleSet, path: Path, batch: int,
                  tolerance: float | None) -> dict[str, Any]:
    """Run ``CHECK_SAMPLES`` samples through torch and the .tflite (XNNPACK, as measured) and compare."""
    refs: list[list[np.ndarray]] = []
    gots: list[list[np.ndarray]] = []
    for start in range(0, max(CHECK_SAMPLES, batch), batch):
        feed = samples.batch(batch, start)
        refs.append(torch_outputs(module, example_args(inputs, SampleSet(feed), batch)))
        gots.append(tflite_outputs(path, inputs, feed, batch))
    ref = [np.concatenate(parts) for parts in zip(*refs)]
    got = [np.concatenate(parts) for parts in zip(*gots)]
    return {**compare(ref, got, path, tolerance), "checked_samples": len(ref[0]) if ref else 0}


def ops_summary(path: Path) -> dict[str, Any]:
    """The model's ops (TFLite builtin op names and counts) and how many partitions the XNNPACK delegate takes.

    LiteRT's op list keeps the nodes a delegate replaced, so which ops stay outside XNNPACK cannot be read
    from it; a partition count above one means something between them runs on LiteRT's own kernels.
    """
    plain = open_interpreter(path, kernels="builtin")
    allocate(plain, path)
    ops: dict[str, int] = {}
    for d in plain._get_ops_details():
        ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
    delegated = open_interpreter(path, kernels="xnnpack")
    allocate(delegated, path)
    partitions = sum(d["op_name"] == "DELEGATE" for d in delegated._get_ops_details())
    return {"tflite_ops": dict(sorted(ops.items())), "xnnpack_partitions": partitions}


def quantize_tflite(float_path: Path, out_path: Path, recipe: Any,
                    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None) -> dict[str, Any]:
    """Apply an AI Edge Quantizer recipe to a float .tflite, calibrating when the recipe needs it; returns sizes."""
    quantizer_lib = _import("ai_edge_quantizer.quantizer")
    with _quiet():
        quantizer = quantizer_lib.Quantizer(str(float_path), recipe)
        result = None
        if quantizer.need_calibration:
            if not calibration:
                raise ValueError("this quantization recipe needs calibration data")
            # Calibration runs the float model on LiteRT; one thread per core, at most 16 (its default).
            result = quantizer.calibrate(calibration, num_threads=max(1, min(16, os.cpu_count() or 1)))
        quantized = quantizer.quantize(result, enable_progress_report=False)
    Path(out_path).write_bytes(bytes(quantized.quantized_model))
    return {"float_bytes": Path(float_path).stat().st_size, "quantized_bytes": Path(out_path).stat().st_size}


def signature_feeds(path: Path, inputs: Sequence[InputSpec], samples: SampleSet, batch: int
                    ) -> dict[str, list[dict[str, np.ndarray]]]:
    """Calibration data as AI Edge Quantizer takes it: {signature: [{signature input name: batch}, ...]}.

    The model's signature names its inputs in the module's argument order (``args_0``...); a user's
    file keeps its own names. Inputs are matched by name where they agree with ``inputs``, else by position.
    """
    interpreter = open_interpreter(path, kernels="builtin")
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ValueError(f"{path}: the model has no signature; AI Edge Quantizer calibrates through signatures")
    key, sig = next(iter(signatures.items()))
    names = list(sig["inputs"])
    specs = {i.name: i for i in inputs}
    if set(names) == set(specs):
        ours = {n: specs[n] for n in names}
    elif len(names) == len(inputs):
        ours = dict(zip(names, inputs))
    else:
        raise ValueError(f"{path}: signature {key!r} takes inputs {names}; the model declares {list(specs)}")
    # In the model's own dtypes: litert-torch turns int64 inputs (token ids) into int32.
    dtypes = {n: np.dtype(d["dtype"]) for n, d in interpreter.get_signature_runner(key).get_input_details().items()}
    feeds = []
    for start in range(0, max(1, len(samples) - batch + 1), batch):  # full batches only: the batch is static
        feed = samples.batch(batch, start)
        feeds.append({n: feed[spec.name].astype(dtypes.get(n, spec.dtype), copy=False) for n, spec in ours.items()})
    return {key: feeds}
