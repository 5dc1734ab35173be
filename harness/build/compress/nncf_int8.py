"""``int8-nncf``: OpenVINO's own int8 path, NNCF post-training quantization of the OpenVINO model.

The fp32 ONNX artifact is converted with ``openvino.convert_model`` and quantized by
``nncf.quantize`` on the bundle's real calibration samples (one sample per inference, so
``subset_size`` counts samples); the result is OpenVINO IR with FakeQuantize nodes that the CPU
plugin executes as int8.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field

from costbench.core.artifacts import FORMAT_OPENVINO, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import calibration_batches, calibration_subset, library_version, samples_hash
from costbench.harness.build.compress.fp32 import fp32_onnx
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH, ModelBundle

_PRESETS = {"performance": "PERFORMANCE", "mixed": "MIXED"}
_ACTIVATIONS = {
    "performance": "symmetric int8, per-tensor",
    "mixed": "asymmetric uint8, per-tensor",
}


class NncfInt8Config(RecipeConfig):
    """Options of NNCF post-training quantization."""

    preset: Literal["performance", "mixed"] = Field(
        "performance", description="performance: symmetric weights and activations; mixed: asymmetric activations."
    )
    calibration_samples: int = Field(
        64, ge=1, description="Calibration samples (NNCF subset_size), capped by how many the model's data has."
    )
    fast_bias_correction: bool = Field(True, description="NNCF's fast bias correction (False: slower, often more accurate).")
    model_type: Literal["default", "transformer"] = Field(
        "default", description="transformer: NNCF's ModelType.TRANSFORMER scheme (keeps the ops that break "
        "attention, e.g. softmax inputs and layer norms, in floating point); needed for BERT-like models.",
    )


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send NNCF's log lines and progress bars to stderr: the harness's child processes own stdout.

    NNCF's logger holds a handler bound to the stdout of import time, which redirect_stdout
    does not reach, so that handler's stream is swapped too.
    """
    from nncf.common.logging.logger import nncf_logger

    swapped = []
    for handler in nncf_logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            swapped.append((handler, handler.setStream(sys.stderr)))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in swapped:
            if stream is not None:
                handler.setStream(stream)


class NncfInt8Recipe(Recipe):
    """Static int8 PTQ with NNCF for OpenVINO (IR with FakeQuantize)."""

    name = "int8-nncf"
    version = 2
    precision = "int8"
    Config = NncfInt8Config
    description = "int8 static PTQ with NNCF on the OpenVINO model: OpenVINO IR with FakeQuantize"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """OpenVINO IR only."""
        return (FORMAT_OPENVINO,) if source_kind in (SOURCE_TORCH, SOURCE_ONNX) else ()

    def filename(self, fmt: str) -> str:
        """model.xml (with model.bin beside it)."""
        return "model.xml"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the nncf and openvino versions and the calibration data itself."""
        cfg = self.own_config(config)
        return {
            **super().cache_material(bundle, config),
            "nncf": library_version("nncf"),
            "openvino": library_version("openvino"),
            "calibration_data": samples_hash(calibration_subset(bundle, cfg.calibration_samples)),
        }

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Convert the fp32 ONNX artifact to OpenVINO, quantize it with NNCF, save IR into ``out_dir``."""
        import nncf
        import openvino as ov

        cfg = self.own_config(config)
        samples = calibration_subset(bundle, cfg.calibration_samples)
        source = fp32_onnx(bundle, cache)
        model = ov.convert_model(str(source.path))
        # One sample per item, keyed by input name (the OV model keeps the ONNX input names).
        # A graph pinned to a batch size gets items of that size.
        batch_size = bundle.details.get("fixed_batch") or 1
        items = list(calibration_batches(samples, batch_size))
        with stdout_to_stderr():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(items),
                preset=getattr(nncf.QuantizationPreset, _PRESETS[cfg.preset]),
                subset_size=len(items),
                fast_bias_correction=cfg.fast_bias_correction,
                model_type=nncf.ModelType.TRANSFORMER if cfg.model_type == "transformer" else None,
            )
        path = out_dir / self.filename(fmt)
        ov.save_model(quantized, str(path), compress_to_fp16=False)
        ops = [op.get_type_name() for op in quantized.get_ops()]
        # NNCF stores weights as int8 constants (decompressed by Convert/Multiply) and keeps FakeQuantize on activations.
        int8_constants = sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8
                             for op in quantized.get_ops())
        return {
            "method": "static PTQ (NNCF, OpenVINO FakeQuantize)",
            "bits": 8,
            "weights": "symmetric int8",
            "weight_granularity": "per-channel",
            "activations": _ACTIVATIONS[cfg.preset],
            "preset": cfg.preset,
            "model_type": cfg.model_type,
            "target_device": "ANY",
            "fast_bias_correction": cfg.fast_bias_correction,
            "calibration": {"description": samples.description, "samples": len(samples), "batch_size": batch_size,
                            "method": "NNCF MinMax range estimation (preset defaults) + bias correction"},
            "fake_quantize_ops": ops.count("FakeQuantize"),
            "int8_weight_constants": int(int8_constants),
            "nncf": nncf.__version__,
            "openvino": ov.__version__,
            "fp32_onnx_artifact": source.key,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
        }


