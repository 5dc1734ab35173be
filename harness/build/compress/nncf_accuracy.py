"""``int8-nncf-ac``: NNCF quantization with accuracy control, for OpenVINO.

``nncf.quantize_with_accuracy_control`` quantizes like ``int8-nncf``, measures the model with a
validation function, and returns operations to fp32 (most harmful first) until the drop is within
``max_drop``. The validation function scores the model on samples held out of the calibration
subset (never the evaluation split the results report):

- labelled classification data: top-1 accuracy against the labels;
- a classifier without labels: top-1 agreement with the fp32 model;
- embeddings and other outputs: mean cosine similarity to the fp32 outputs (per-sample, so NNCF
  can rank which samples got worse).

Validation samples come after the calibration subset in the model's calibration data; when too
few are left, the whole calibration data validates and the provenance says they overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from costbench.core.artifacts import FORMAT_OPENVINO, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import calibration_batches, calibration_subset, library_version, samples_hash
from costbench.harness.build.compress.fp32 import fp32_onnx
from costbench.harness.build.compress.nncf_int8 import _PRESETS, stdout_to_stderr
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH, ModelBundle, SampleSet

MIN_HELD_OUT = 32  # fewer validation samples than this after the calibration subset: validate on all of them


class NncfAccuracyConfig(RecipeConfig):
    """Options of NNCF quantization with accuracy control."""

    max_drop: float = Field(0.01, ge=0, description="Largest allowed absolute drop of the validation metric.")
    preset: Literal["performance", "mixed"] = Field("performance", description="NNCF quantization preset.")
    calibration_samples: int = Field(64, ge=1, description="Calibration samples (NNCF subset_size).")
    validation_samples: int = Field(300, ge=2, description="Validation samples, held out of calibration when possible.")



def validation_split(bundle: ModelBundle, cfg: NncfAccuracyConfig) -> tuple[SampleSet, bool]:
    """(validation samples, whether they overlap the calibration subset)."""
    data = bundle.calibration
    start = min(cfg.calibration_samples, len(data))
    if len(data) - start >= MIN_HELD_OUT:
        end = min(len(data), start + cfg.validation_samples)
        idx = slice(start, end)
        held = SampleSet({k: v[idx] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[idx],
                         f"{data.description}; samples {start}-{end - 1} (after the calibration subset)")
        return held, False
    return data.take(cfg.validation_samples), True


def _metric_name(bundle: ModelBundle, data: SampleSet) -> str:
    if bundle.task == "classification":
        return "top-1 accuracy (labels)" if data.labels is not None else "top-1 agreement with fp32"
    return "mean cosine similarity to fp32 outputs"


class NncfAccuracyControlRecipe(Recipe):
    """NNCF int8 with accuracy control (max_drop) for OpenVINO."""

    name = "int8-nncf-ac"
    version = 1
    precision = "int8"
    Config = NncfAccuracyConfig
    description = "int8 NNCF quantization with accuracy control (nncf.quantize_with_accuracy_control, max_drop)"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """OpenVINO IR only."""
        return (FORMAT_OPENVINO,) if source_kind in (SOURCE_TORCH, SOURCE_ONNX) else ()

    def filename(self, fmt: str) -> str:
        """model.xml (with model.bin)."""
        return "model.xml"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds nncf/openvino versions, the calibration data and the validation data."""
        cfg = self.own_config(config)
        validation, _ = validation_split(bundle, cfg)
        labels = b"" if validation.labels is None else np.ascontiguousarray(validation.labels).tobytes()
        return {**super().cache_material(bundle, config), "nncf": library_version("nncf"),
                "openvino": library_version("openvino"),
                "calibration_data": samples_hash(calibration_subset(bundle, cfg.calibration_samples)),
                "validation_data": samples_hash(validation), "validation_labels": hash_bytes(labels)}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Quantize with accuracy control and save IR."""
        import nncf
        import openvino as ov

        cfg = self.own_config(config)
        calibration = calibration_subset(bundle, cfg.calibration_samples)
        validation, overlap = validation_split(bundle, cfg)
        source = fp32_onnx(bundle, cache)
        model = ov.convert_model(str(source.path))
        batch_size = bundle.details.get("fixed_batch") or 1
        core = ov.Core()
        fp32_compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        items = list(calibration_batches(validation, batch_size))
        references = [np.asarray(fp32_compiled(item)[0], dtype=np.float64) for item in items]
        labels = None if validation.labels is None else [validation.labels[i:i + batch_size]
                                                         for i in range(0, len(validation), batch_size)]
        name = _metric_name(bundle, validation)
        validation_items = [{"index": i, "inputs": item} for i, item in enumerate(items)]

        def per_item(outputs: np.ndarray, i: int) -> float:
            if bundle.task == "classification":
                target = labels[i] if labels is not None else references[i].argmax(1)
                return float(np.mean(outputs.argmax(1) == target))
            a, r = outputs.reshape(len(outputs), -1), references[i].reshape(len(outputs), -1)
            return float(np.mean(np.sum(a * r, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1),
                                                              1e-12)))

        def validate(compiled, data) -> tuple[float, list[float]]:
            # Items arrive as stored (NNCF hands the validation function the raw data items).
            per_sample = [per_item(np.asarray(compiled(item["inputs"])[0], dtype=np.float64), item["index"])
                          for item in data]
            return float(np.mean(per_sample)), per_sample

        with stdout_to_stderr():
            quantized = nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(list(calibration_batches(calibration, batch_size))),
                nncf.Dataset(validation_items, lambda item: item["inputs"]),
                validate,
                max_drop=cfg.max_drop,
                drop_type=nncf.DropType.ABSOLUTE,
                preset=getattr(nncf.QuantizationPreset, _PRESETS[cfg.preset]),
                subset_size=len(calibration),
            )
        path = out_dir / self.filename(fmt)
        ov.save_model(quantized, str(path), compress_to_fp16=False)
        fp32_score = validate(fp32_compiled, validation_items)[0]
        int8_score = validate(core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                              validation_items)[0]
        ops = [op.get_type_name() for op in quantized.get_ops()]
        int8_constants = sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.i8
                             for op in quantized.get_ops())
        return {
            "method": "static PTQ with accuracy control (nncf.quantize_with_accuracy_control)",
            "bits": 8,
            "weights": "symmetric int8, per-channel",
            "preset": cfg.preset,
            "max_drop": cfg.max_drop,
            "drop_type": "absolute",
            "validation": {"metric": name, "description": validation.description, "samples": len(validation),
                           "overlaps_calibration": overlap, "fp32": fp32_score, "int8": int8_score,
                           "drop": fp32_score - int8_score},
            "accuracy_retained": int8_score / fp32_score if fp32_score else None,
            "calibration": {"description": calibration.description, "samples": len(calibration),
                            "batch_size": batch_size, "method": "NNCF MinMax range estimation (preset defaults)"},
            "fake_quantize_ops": ops.count("FakeQuantize"),
            "int8_weight_constants": int(int8_constants),
            "nncf": nncf.__version__,
            "openvino": ov.__version__,
            "fp32_onnx_artifact": source.key,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
        }


def hash_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
