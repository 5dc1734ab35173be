"""``int8``: ONNX Runtime static post-training quantization in Q/DQ format, from the fp32 ONNX artifact.

Weights are symmetric int8 (per output channel by default), activations asymmetric uint8 for
CPUs or symmetric int8 for TensorRT (``activation_symmetric``, which accepts symmetric only), with
ranges calibrated on the bundle's real calibration samples. Calibration runs one batch per pass
(ONNX Runtime's ``CalibStridedMinMax`` stride, which applies to every method): ranges and
histograms merge pass by pass, so memory holds one batch's activations, not every sample's. ``reduce_range`` (7-bit
weights) follows the ISA unless the suite sets it: on x86 without VNNI, u8 x s8 kernels built
on ``vpmaddubsw`` saturate int16 on full-range inputs (docs/architecture.md, "Numerics that matter").
Biases are int32 ``DequantizeLinear`` inputs in the CPU variant and stay float32 in the symmetric
(TensorRT-bound) one (``QuantizeBias: False``): TensorRT's ONNX parser has rejected int32 bias Q/DQ in
several releases. The provenance records which, and why.
The Q/DQ file also runs in OpenVINO, which reads Q/DQ ONNX directly.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.core.artifacts import FORMAT_ONNX, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import calibration_batches, calibration_subset, library_version, samples_hash
from costbench.harness.build.compress.fp32 import fp32_onnx
from costbench.harness.machine.env import has_vnni, int8_isa
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH, ModelBundle

X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class OrtInt8Config(RecipeConfig):
    """Options of ONNX Runtime static quantization."""

    per_channel: bool = Field(True, description="One weight scale per output channel (else one per tensor).")
    calibration_method: Literal["MinMax", "Entropy", "Percentile"] = Field(
        "MinMax", description="How activation ranges are chosen from the calibration statistics."
    )
    calibration_samples: int = Field(
        64, ge=1, description="Calibration samples to use (capped by how many the model's data has)."
    )
    calibration_batch_size: int = Field(8, ge=1, description="Samples per calibration inference; calibration "
                                        "statistics merge batch by batch, so this bounds its memory.")
    activation_symmetric: bool = Field(
        False, description="Symmetric int8 activations (zero point 0), as TensorRT requires; False: asymmetric "
        "uint8, the better choice for CPU kernels.",
    )
    reduce_range: bool | None = Field(
        None, description="7-bit weights. None decides from the CPU: on x86 without VNNI, True (avoids int16 "
        "saturation in vpmaddubsw); otherwise False.",
    )
    quantize_bias: bool | None = Field(
        None, description="Quantize biases to int32 (a DequantizeLinear per bias, ONNX Runtime's QuantizeBias). "
        "None: False with activation_symmetric (the TensorRT-bound variant: TensorRT's ONNX parser has rejected "
        "int32 bias DequantizeLinear in several releases), True otherwise.",
    )


def decide_reduce_range(setting: bool | None) -> tuple[bool, str]:
    """(reduce_range, why): the suite's setting, else what this machine's ISA needs."""
    if setting is not None:
        return setting, "set by suite"
    machine = platform.machine().lower()
    if machine not in X86_MACHINES:
        return False, f"not an x86 CPU ({machine}); the vpmaddubsw saturation issue does not apply"
    isa = int8_isa()
    if has_vnni():
        present = ", ".join(f for f in VNNI_FLAGS if isa.get(f))
        return False, f"CPU has VNNI ({present}): int8 dot products accumulate exactly with 8-bit weights"
    simd = "avx2" if isa.get("avx2") else "no avx2"
    return True, f"no VNNI on this CPU ({simd} only): 7-bit weights avoid int16 saturation in vpmaddubsw"


def decide_quantize_bias(cfg: OrtInt8Config) -> tuple[bool, str]:
    """(quantize_bias, why): the suite's setting, else float biases for the TensorRT-bound symmetric variant."""
    if cfg.quantize_bias is not None:
        return cfg.quantize_bias, "set by suite"
    if cfg.activation_symmetric:
        return False, ("symmetric (TensorRT-bound) variant: biases stay float32, because TensorRT's ONNX parser "
                       "has rejected int32 bias DequantizeLinear in several releases; TensorRT fuses the float "
                       "bias into the int8 layer itself")
    return True, "asymmetric (CPU) variant: int32 biases (scale = activation scale x weight scale), ONNX Runtime's default"


def count_quantization(path: Path) -> dict[str, int]:
    """Q/DQ node counts and the number of int8 weight tensors (8-bit initializers a DequantizeLinear reads)."""
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    low_precision = {t.name for t in model.graph.initializer
                     if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and int(np.prod(t.dims)) > 1}
    weights = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in low_precision}
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    biases = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "int8_weight_tensors": len(weights), "int32_bias_dequantize": len(biases)}


class OrtInt8Recipe(Recipe):
    """Static int8 PTQ with ONNX Runtime (Q/DQ ONNX)."""

    name = "int8"
    version = 3  # 3: float biases in the symmetric variant (quantize_bias)
    precision = "int8"
    Config = OrtInt8Config
    description = "int8 static PTQ with ONNX Runtime: Q/DQ ONNX, per-channel symmetric int8 weights, uint8 activations"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Q/DQ ONNX for either source (OpenVINO and TensorRT read Q/DQ ONNX too)."""
        return (FORMAT_ONNX,) if source_kind in (SOURCE_TORCH, SOURCE_ONNX) else ()

    def filename(self, fmt: str) -> str:
        """model.onnx."""
        return "model.onnx"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the onnxruntime version, the ISA decision and the calibration data itself."""
        cfg = self.own_config(config)
        reduce_range, _ = decide_reduce_range(cfg.reduce_range)
        return {
            **super().cache_material(bundle, config),
            "onnxruntime": library_version("onnxruntime"),
            "reduce_range": reduce_range,
            "calibration_data": samples_hash(calibration_subset(bundle, cfg.calibration_samples)),
        }

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Pre-process, calibrate and quantize the fp32 ONNX artifact into ``out_dir/model.onnx``."""
        import onnxruntime
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        cfg = self.own_config(config)
        reduce_range, why = decide_reduce_range(cfg.reduce_range)
        quantize_bias, bias_why = decide_quantize_bias(cfg)
        samples = calibration_subset(bundle, cfg.calibration_samples)
        # A graph pinned to one batch size can only be calibrated at that size.
        batch_size = bundle.details.get("fixed_batch") or cfg.calibration_batch_size
        source = fp32_onnx(bundle, cache)

        batches = list(calibration_batches(samples, batch_size))  # the inputs only; activations stay per pass

        class Reader(CalibrationDataReader):
            """Serves batches [start, end): ONNX Runtime calls set_range once per calibration pass."""

            def __init__(self) -> None:
                self._todo = iter(batches)

            def __len__(self) -> int:
                return len(batches)

            def set_range(self, start_index: int, end_index: int) -> None:
                self._todo = iter(batches[start_index:end_index])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._todo, None)

        activation_type = QuantType.QInt8 if cfg.activation_symmetric else QuantType.QUInt8

        out = out_dir / self.filename(fmt)
        # Pre-processing output goes to its own temp dir: everything in out_dir counts as artifact size.
        # The histogram calibrators print progress; the harness's child processes own stdout.
        with tempfile.TemporaryDirectory(prefix="costbench-int8-") as tmp, contextlib.redirect_stdout(sys.stderr):
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source.path), str(prepared))
            quantize_static(
                str(prepared), str(out), Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=cfg.per_channel,
                reduce_range=reduce_range,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, cfg.calibration_method),
                extra_options={"ActivationSymmetric": cfg.activation_symmetric, "WeightSymmetric": True,
                               "CalibStridedMinMax": 1, "QuantizeBias": quantize_bias},
            )
        return {
            "method": "static PTQ (ONNX Runtime, QDQ)",
            "bits": 8,
            "weight_bits": 7 if reduce_range else 8,
            "weights": "symmetric int8",
            "weight_granularity": "per-channel" if cfg.per_channel else "per-tensor",
            "activations": ("symmetric int8, per-tensor (TensorRT-compatible)" if cfg.activation_symmetric
                            else "asymmetric uint8, per-tensor"),
            "activation_symmetric": cfg.activation_symmetric,
            "reduce_range": reduce_range,
            "reduce_range_reason": why,
            "quantize_bias": quantize_bias,
            "bias": "int32 (DequantizeLinear)" if quantize_bias else "float32 (not quantized)",
            "quantize_bias_reason": bias_why,
            "calibration": {
                "description": samples.description,
                "samples": len(samples),
                "batch_size": batch_size,
                "batches": len(batches),
                "batches_per_pass": 1,
                "method": cfg.calibration_method,
            },
            "onnxruntime": onnxruntime.__version__,
            "fp32_onnx_artifact": source.key,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            **count_quantization(out),
        }


