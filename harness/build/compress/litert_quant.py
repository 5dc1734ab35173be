"""LiteRT quantized variants through Google's AI Edge Quantizer, starting from the ``tflite-fp32`` artifact.

- ``tflite-dynamic-int8``: int8 weights (symmetric, per output channel), float activations that the kernels
  quantize on the fly: what TensorFlow Lite's converter did with ``Optimize.DEFAULT``.
- ``tflite-int8``: full integer: int8 weights (symmetric, per channel by default) and int8 activations
  (asymmetric, per tensor) from min/max calibration on the same real calibration samples every other static
  recipe uses. The quantizer also makes the model's inputs and outputs int8; the litert backend quantizes
  and dequantizes at that boundary with the model's own scale and zero point.
- ``tflite-fp16``: fp16 weights, fp32 compute (a DEQUANTIZE op casts them back; XNNPACK folds it into its
  packed fp32 weights on x86): half the size, not a speed-up on this CPU.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from costbench.core.artifacts import FORMAT_TFLITE, ArtifactCache
from costbench.core.tflite_files import read_inputs
from costbench.harness.build.compress.base import Recipe, RecipeConfig, RecipeNotApplicable
from costbench.harness.build.compress.common import calibration_subset, samples_hash
from costbench.harness.build.compress.litert_export import (EXPORT_VERSION, compare, library_versions, ops_summary,
                                                      quantize_tflite, signature_feeds, tflite_outputs)
from costbench.harness.build.compress.litert_fp32 import FILENAME, LiteRTConfig, fp32_tflite
from costbench.harness.build.zoo.base import SOURCE_TFLITE, SOURCE_TORCH, ModelBundle

QUANTIZER = "ai_edge_quantizer.quantizer.Quantizer"


def _op_config(weight: dict[str, Any], compute: str, explicit_dequantize: bool,
               activation: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"weight_tensor_config": weight, "compute_precision": compute, "explicit_dequantize": explicit_dequantize}
    if activation is not None:
        config["activation_tensor_config"] = activation
    return config


def _recipe(algorithm: str, op_config: dict[str, Any]) -> list[dict[str, Any]]:
    """An AI Edge Quantizer recipe (its JSON form) applying ``op_config`` to every op it supports."""
    return [{"regex": ".*", "operation": "*", "algorithm_key": algorithm, "op_config": op_config}]


class _LiteRTQuantRecipe(Recipe):
    """Shared by the quantized tflite-* recipes: quantize the tflite-fp32 artifact with an AI Edge Quantizer recipe."""

    version = 1
    Config = LiteRTConfig

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """A .tflite, from torch modules (via tflite-fp32) and from a user's float .tflite."""
        return (FORMAT_TFLITE,) if source_kind in (SOURCE_TORCH, SOURCE_TFLITE) else ()

    def filename(self, fmt: str) -> str:
        """model.tflite."""
        return FILENAME

    @abc.abstractmethod
    def quantizer_recipe(self, cfg: RecipeConfig) -> list[dict[str, Any]]:
        """The AI Edge Quantizer recipe (its JSON form) this variant applies."""

    def calibration(self, bundle: ModelBundle, cfg: RecipeConfig, float_path: Path, batch: int):
        """Calibration feeds for the quantizer, or None (dynamic and weight-only recipes need none)."""
        return None

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the converter and quantizer versions and the quantizer recipe itself."""
        cfg = self.own_config(config)
        return {**super().cache_material(bundle, config), "libraries": library_versions(), "export": EXPORT_VERSION,
                "quantizer_recipe": self.quantizer_recipe(cfg)}

    @abc.abstractmethod
    def provenance(self, bundle: ModelBundle, cfg: RecipeConfig) -> dict[str, Any]:
        """Method, bits, granularity, activations and calibration, recorded with every result."""

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Quantize the fp32 .tflite, then run both on LiteRT over the calibration samples to record the difference."""
        cfg = self.own_config(config)
        source = fp32_tflite(bundle, cache, cfg.batch_size)
        quantized_io = [i["name"] for i in read_inputs(source.path) if i["quantization"] is not None]
        if quantized_io:
            raise RecipeNotApplicable(f"model {bundle.name!r} is already quantized (integer inputs {quantized_io} with "
                                      "a scale); AI Edge Quantizer quantizes float models")
        batch = source.provenance.get("export_batch") or 1
        path = out_dir / FILENAME
        recipe = self.quantizer_recipe(cfg)
        try:
            sizes = quantize_tflite(source.path, path, recipe, self.calibration(bundle, cfg, source.path, batch))
        except (ImportError, MemoryError, RecipeNotApplicable):
            raise
        except Exception as exc:
            raise RuntimeError(f"AI Edge Quantizer failed on {source.path} ({bundle.name!r}, recipe {self.name!r}): "
                               f"{type(exc).__name__}: {exc}") from exc
        # Quantized against fp32 on the same runtime: the quantization error alone (accuracy is measured later).
        samples = bundle.calibration.take(8)
        ref, got = [], []
        for start in range(0, len(samples) - batch + 1, batch):
            feed = samples.batch(batch, start)
            ref.append(tflite_outputs(source.path, bundle.inputs, feed, batch))
            got.append(tflite_outputs(path, bundle.inputs, feed, batch))
        diff = compare([np.concatenate(p) for p in zip(*ref)], [np.concatenate(p) for p in zip(*got)], path, None,
                       "the fp32 .tflite")
        return {
            **self.provenance(bundle, cfg),
            "quantizer": QUANTIZER,
            "quantizer_recipe": recipe,
            "fp32_tflite_artifact": source.key,
            "export_batch": batch,
            "vs_fp32_tflite": {k.replace("export_", ""): v for k, v in diff.items()},
            **sizes,
            **ops_summary(path),
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            "libraries": library_versions(),
        }


class LiteRTDynamicInt8Config(LiteRTConfig):
    """Dynamic-range int8: weights only are calibrated (from themselves); nothing else to set."""


class LiteRTDynamicInt8Recipe(_LiteRTQuantRecipe):
    """Dynamic-range int8 (``Optimize.DEFAULT``): int8 per-channel weights, float activations quantized by the kernels."""

    name = "tflite-dynamic-int8"
    precision = "int8"
    Config = LiteRTDynamicInt8Config
    description = ("LiteRT dynamic-range int8 (AI Edge Quantizer dynamic_wi8_afp32; TF Lite's Optimize.DEFAULT): "
                   "int8 symmetric per-channel weights, float activations quantized on the fly")

    def quantizer_recipe(self, cfg: RecipeConfig) -> list[dict[str, Any]]:
        weight = {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"}
        return _recipe("min_max_uniform_quantize", _op_config(weight, "INTEGER", False))

    def provenance(self, bundle: ModelBundle, cfg: RecipeConfig) -> dict[str, Any]:
        return {"method": "dynamic-range int8 (AI Edge Quantizer; weights int8, activations float, quantized per "
                          "inference by the kernels)",
                "bits": 8, "weights": "symmetric int8, min/max", "weight_granularity": "per-channel",
                "activations": "float32 in the model; int8 on the fly inside FULLY_CONNECTED/CONV kernels",
                "calibration": None}


class LiteRTInt8Config(LiteRTConfig):
    """Full-integer int8 options."""

    per_channel: bool = Field(True, description="Per-output-channel weight scales (False: one scale per tensor).")
    calibration_samples: int = Field(
        64, ge=1, description="Calibration samples to use (capped by how many the model's data has).")


class LiteRTInt8Recipe(_LiteRTQuantRecipe):
    """Full-integer int8 (static): int8 weights and activations, calibrated on the bundle's real samples."""

    name = "tflite-int8"
    precision = "int8"
    Config = LiteRTInt8Config
    description = ("LiteRT full-integer int8 (AI Edge Quantizer static_wi8_ai8): int8 symmetric per-channel weights, "
                   "int8 asymmetric per-tensor activations (min/max calibration on real samples), int8 model I/O")

    def quantizer_recipe(self, cfg: RecipeConfig) -> list[dict[str, Any]]:
        weight = {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE" if cfg.per_channel else "TENSORWISE",
                  "dtype": "INT"}
        activation = {"num_bits": 8, "symmetric": False, "granularity": "TENSORWISE", "dtype": "INT"}
        return _recipe("min_max_uniform_quantize", _op_config(weight, "INTEGER", False, activation))

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the calibration data itself: it decides the activation scales."""
        cfg = self.own_config(config)
        return {**super().cache_material(bundle, config),
                "calibration_data": samples_hash(calibration_subset(bundle, cfg.calibration_samples))}

    def calibration(self, bundle: ModelBundle, cfg: RecipeConfig, float_path: Path, batch: int):
        samples = calibration_subset(bundle, cfg.calibration_samples)
        return signature_feeds(float_path, bundle.inputs, samples, batch)

    def provenance(self, bundle: ModelBundle, cfg: RecipeConfig) -> dict[str, Any]:
        samples = calibration_subset(bundle, cfg.calibration_samples)
        return {"method": "full-integer static PTQ (AI Edge Quantizer, min/max calibration)",
                "bits": 8, "weights": "symmetric int8, min/max",
                "weight_granularity": "per-channel" if cfg.per_channel else "per-tensor",
                "activations": "asymmetric int8, per-tensor (min/max over the calibration samples)",
                "model_io": "int8 (the litert backend quantizes inputs and dequantizes outputs with the model's "
                            "scale and zero point)",
                "calibration": {"description": samples.description, "samples": len(samples),
                                "method": "min/max (AI Edge Quantizer calibrator on the fp32 .tflite)"}}


class LiteRTFp16Config(LiteRTConfig):
    """fp16 weights: nothing to set."""


class LiteRTFp16Recipe(_LiteRTQuantRecipe):
    """fp16 weights (float casting), fp32 compute: half the size of fp32."""

    name = "tflite-fp16"
    precision = "fp16"
    Config = LiteRTFp16Config
    description = "LiteRT fp16 weights (AI Edge Quantizer float_casting), fp32 activations and compute"

    def quantizer_recipe(self, cfg: RecipeConfig) -> list[dict[str, Any]]:
        weight = {"num_bits": 16, "dtype": "FLOAT"}
        return _recipe("float_casting", _op_config(weight, "FLOAT", True))

    def provenance(self, bundle: ModelBundle, cfg: RecipeConfig) -> dict[str, Any]:
        return {"method": "fp16 weights (AI Edge Quantizer float_casting; DEQUANTIZE to fp32 before each op)",
                "bits": 16, "weights": "float16", "weight_granularity": None,
                "activations": "float32", "calibration": None}


__all__ = ["LiteRTDynamicInt8Recipe", "LiteRTFp16Recipe", "LiteRTInt8Recipe"]
