"""``tflite-fp32``: the fp32 model as a LiteRT ``.tflite``: converted from torch by litert-torch, or a user's file as given.

The quantized ``tflite-*`` recipes start from this artifact, so a model is converted once per content hash.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from costbench.core.artifacts import FORMAT_TFLITE, Artifact, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.litert_export import EXPORT_VERSION, convert_tflite, library_versions
from costbench.harness.build.zoo.base import SOURCE_TFLITE, SOURCE_TORCH, ModelBundle

FILENAME = "model.tflite"


class LiteRTConfig(RecipeConfig):
    """Options every tflite-* recipe takes."""

    batch_size: int = Field(
        1, ge=1, le=256, description="Static batch the torch model is converted at (litert-torch 0.10 cannot convert a "
        "dynamic batch for the zoo models; the backend resizes other batches where the graph allows). Torch sources only.")


class LiteRTFp32Recipe(Recipe):
    """The fp32 model as a .tflite (litert-torch conversion, checked against torch on the LiteRT interpreter)."""

    name = "tflite-fp32"
    version = 1
    precision = "fp32"
    Config = LiteRTConfig
    description = "fp32 LiteRT .tflite: litert-torch conversion of the torch model (static batch), or a user's .tflite"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """A .tflite from torch modules (converted) and from user .tflite files (copied)."""
        return (FORMAT_TFLITE,) if source_kind in (SOURCE_TORCH, SOURCE_TFLITE) else ()

    def filename(self, fmt: str) -> str:
        """model.tflite."""
        return FILENAME

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the converter's library versions and our export version (a copied user file needs neither)."""
        extra = {"libraries": library_versions(), "export": EXPORT_VERSION} if bundle.source_kind == SOURCE_TORCH else {}
        return {**super().cache_material(bundle, config), **extra}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Convert (torch) or copy (user .tflite) into ``out_dir/model.tflite``."""
        cfg = self.own_config(config)
        path = out_dir / FILENAME
        common = {"method": "none (fp32 reference)", "bits": 32, "parameters": bundle.details.get("parameters"),
                  "flops": bundle.details.get("flops")}
        if bundle.source_kind == SOURCE_TFLITE:
            shutil.copyfile(bundle.details["tflite_path"], path)
            return {**common, "method": "none (the user's .tflite as given)", "source_format": "tflite file",
                    "bits": None}
        return {**common, "source_format": "torch module",
                **convert_tflite(bundle.torch_module(), bundle.inputs, bundle.calibration, path, bundle.name,
                                 cfg.batch_size)}


def fp32_tflite(bundle: ModelBundle, cache: ArtifactCache, batch_size: int = 1) -> Artifact:
    """The fp32 .tflite artifact the quantized tflite-* recipes start from."""
    recipe = LiteRTFp32Recipe()
    return recipe.artifact(bundle, recipe.parse_config({"batch_size": batch_size}), FORMAT_TFLITE, cache)


__all__ = ["LiteRTConfig", "LiteRTFp32Recipe", "fp32_tflite"]
