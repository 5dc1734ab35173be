"""``fp32``: the reference variant, as a pickled torch module, an ONNX file and OpenVINO IR.

Every other recipe starts from these artifacts (int8 quantizes the fp32 ONNX), so a model is
exported once per content hash and reused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from costbench.core.artifacts import (FORMAT_EXECUTORCH, FORMAT_GGUF, FORMAT_HF_CAUSAL_LM, FORMAT_ONNX,
                                     FORMAT_OPENVINO, FORMAT_OPENVINO_LLM, FORMAT_ORT_GENAI, FORMAT_TORCH, Artifact,
                                     ArtifactCache)
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.compress.gguf import GGUF_FILE, convert_f32, gguf_material
from costbench.harness.build.compress.openvino_llm import MODEL_XML, export_openvino_llm, openvino_llm_material
from costbench.harness.build.compress.ort_genai import GENAI_CONFIG, build_ort_genai, ort_genai_material
from costbench.harness.build.zoo.base import SOURCE_HF, SOURCE_ONNX, SOURCE_TORCH, ModelBundle

FILENAMES = {FORMAT_TORCH: "model.pt", FORMAT_ONNX: "model.onnx", FORMAT_OPENVINO: "model.xml",
             FORMAT_EXECUTORCH: "model.pte", FORMAT_HF_CAUSAL_LM: "config.json",
             FORMAT_OPENVINO_LLM: MODEL_XML, FORMAT_ORT_GENAI: GENAI_CONFIG, FORMAT_GGUF: GGUF_FILE}


class Fp32Config(RecipeConfig):
    """fp32 has no options: it is the model as trained."""


class Fp32Recipe(Recipe):
    """The unmodified fp32 model in every format a backend may need."""

    name = "fp32"
    version = 1
    precision = "fp32"
    Config = Fp32Config
    description = ("fp32 reference: torch module, ONNX export (opset 17, dynamic batch), OpenVINO IR, "
                   "ExecuTorch .pte (XNNPACK, dynamic batch)")

    _FORMATS = {
        SOURCE_TORCH: (FORMAT_TORCH, FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_EXECUTORCH),
        SOURCE_ONNX: (FORMAT_ONNX, FORMAT_OPENVINO),
        SOURCE_HF: (FORMAT_HF_CAUSAL_LM, FORMAT_OPENVINO_LLM, FORMAT_ORT_GENAI, FORMAT_GGUF),
    }

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Torch sources get every format; ONNX sources have no torch module; a causal LM is its own folder."""
        return self._FORMATS.get(source_kind, ())

    def filename(self, fmt: str) -> str:
        """model.pt, model.onnx or model.xml."""
        return FILENAMES[fmt]

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the versions of the libraries that write the bytes (exporter, converter)."""
        return {
            **super().cache_material(bundle, config),
            "torch": library_version("torch") if bundle.source_kind in (SOURCE_TORCH, SOURCE_HF) else None,
            "onnx": library_version("onnx"),
            "openvino": library_version("openvino"),
            **(executorch_material() if bundle.source_kind == SOURCE_TORCH else {}),
            **(openvino_llm_material() if bundle.source_kind == SOURCE_HF else {}),
            **ort_genai_material(bundle),
            **gguf_material(bundle),
        }

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Write the artifact for ``fmt``; provenance adds parameters, FLOPs and the source format."""
        builders: dict[str, Callable[..., dict[str, Any]]] = {
            FORMAT_TORCH: self._torch,
            FORMAT_ONNX: self._onnx,
            FORMAT_OPENVINO: self._openvino,
            FORMAT_EXECUTORCH: self._executorch,
            FORMAT_HF_CAUSAL_LM: self._hf,
            FORMAT_OPENVINO_LLM: self._openvino_llm,
            FORMAT_ORT_GENAI: self._ort_genai,
            FORMAT_GGUF: self._gguf,
        }
        return {
            "method": "none (fp32 reference)",
            "bits": 32,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            "source_format": {SOURCE_TORCH: "torch module", SOURCE_HF: "Hugging Face folder"}.get(bundle.source_kind,
                                                                                                  "ONNX file"),
            **builders[fmt](bundle, config, out_dir / self.filename(fmt), cache),
        }

    def _torch(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        import torch

        # The whole module is pickled (its class by reference), so loading needs its package importable.
        torch.save(bundle.torch_module(), path)
        return {"serialization": "torch.save(module); load with torch.load(weights_only=False)", "torch": torch.__version__}

    def _hf(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        return {**link_hf_folder(bundle, path.parent), "decode_weight_bytes": bundle.details.get("decode_weight_bytes")}

    def _ort_genai(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        return build_ort_genai(bundle, path.parent, "fp32")

    def _gguf(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        return convert_f32(bundle, path)

    def _openvino_llm(self, bundle: ModelBundle, config: RecipeConfig, path: Path,
                      cache: ArtifactCache) -> dict[str, Any]:
        return {**export_openvino_llm(bundle, path.parent),
                "decode_weight_bytes": bundle.details.get("decode_weight_bytes")}

    def _onnx(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        if bundle.source_kind == SOURCE_ONNX:
            return copy_onnx(bundle.onnx_path, path)
        from costbench.harness.build.compress.onnx_export import export_onnx

        return export_onnx(bundle.torch_module(), bundle.inputs, bundle.outputs, bundle.calibration, path)

    def _executorch(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        from costbench.harness.build.compress.executorch_export import export_pte

        return export_pte(bundle.torch_module(), bundle.inputs, bundle.calibration, path, bundle.name)

    def _openvino(self, bundle: ModelBundle, config: RecipeConfig, path: Path, cache: ArtifactCache) -> dict[str, Any]:
        import openvino as ov

        onnx_artifact = self.artifact(bundle, config, FORMAT_ONNX, cache)
        model = ov.convert_model(str(onnx_artifact.path))
        # Keep fp32 weights: save_model would otherwise halve them to fp16.
        ov.save_model(model, str(path), compress_to_fp16=False)
        return {"converter": "openvino.convert_model from the fp32 ONNX artifact", "openvino": ov.__version__,
                "onnx_artifact": onnx_artifact.key}


def link_hf_folder(bundle: ModelBundle, out_dir: Path, weights: bool = True) -> dict[str, Any]:
    """The model folder's config, tokenizer and generation files in ``out_dir`` (copies: a recipe may rewrite
    them), and its safetensors weights when ``weights`` (hard links where the file system allows, as nothing
    ever writes to a cached weight file; else copies)."""
    import os

    if bundle.hf_path is None:
        raise ValueError(f"model {bundle.name!r} has no Hugging Face folder")
    src = Path(bundle.hf_path)
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json"]
    small = [src / n for n in names if (src / n).exists()]
    for f in small:
        shutil.copyfile(f, out_dir / f.name)
    large = sorted(src.glob("*.safetensors")) if weights else []
    for f in large:
        try:
            os.link(f, out_dir / f.name)
        except OSError:
            shutil.copyfile(f, out_dir / f.name)
    return {"exporter": "the Hugging Face folder as it is (weights linked)", "files": [f.name for f in small + large]}


def copy_onnx(src: Path, dst: Path) -> dict[str, Any]:
    """Copy a user's ONNX file; a model with external data is re-saved with its data beside it."""
    import onnx

    proto = onnx.load(str(src), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    if external:
        proto = onnx.load(str(src))
        onnx.save_model(proto, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data")
    else:
        shutil.copyfile(src, dst)
    return {"exporter": "user-supplied ONNX file (copied)", "external_data": external}


def executorch_material() -> dict[str, Any]:
    """What decides an ExecuTorch export's bytes beyond torch: executorch/torchao versions, our export settings."""
    from costbench.harness.build.compress.executorch_export import EXPORT_VERSION, MAX_BATCH

    return {"executorch": library_version("executorch"), "torchao": library_version("torchao"),
            "executorch_export": {"version": EXPORT_VERSION, "max_batch": MAX_BATCH}}


def fp32_openvino_llm(bundle: ModelBundle, cache: ArtifactCache) -> Artifact:
    """The fp32 OpenVINO LLM folder the weight-only recipes compress."""
    recipe = Fp32Recipe()
    return recipe.artifact(bundle, recipe.Config(), FORMAT_OPENVINO_LLM, cache)


def fp32_gguf(bundle: ModelBundle, cache: ArtifactCache) -> Artifact:
    """The F32 GGUF file that llama.cpp's quantizer starts from."""
    recipe = Fp32Recipe()
    return recipe.artifact(bundle, recipe.Config(), FORMAT_GGUF, cache)


def fp32_onnx(bundle: ModelBundle, cache: ArtifactCache) -> Artifact:
    """The fp32 ONNX artifact other recipes start from."""
    recipe = Fp32Recipe()
    return recipe.artifact(bundle, recipe.Config(), FORMAT_ONNX, cache)
