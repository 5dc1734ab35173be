"""``int8-weight-only`` and ``int4-weight-only``: a generative model's linear weights quantized, activations kept.

On a CPU, decoding one token reads every weight once and does little arithmetic with it, so its time is
bound by memory bandwidth: smaller weights are the lever, not faster arithmetic. These recipes shrink the
weights of every ``nn.Linear`` (the output head included; the embedding table is a lookup, kept in fp32):

- for PyTorch + Transformers (:data:`FORMAT_HF_CAUSAL_LM`), with torchao's ``quantize_``:
  int8 is ``Int8WeightOnlyConfig`` (symmetric, one scale per output channel); int4 is
  ``IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))`` (symmetric, one scale
  per group of ``group_size`` input channels). torchao 0.18 has no packed int4 CPU kernel for weight-only
  linears: its int4 values are held one per byte (``IntxUnpackedToInt8Tensor``) and dequantized per call,
  so this int4 variant is as large as int8 and no faster. The provenance says so; the bytes on disk show it.

The folder keeps the config and tokenizer; the weights become torchao's quantized state dict
(``torchao-weights.pt``) with ``torchao-quantization.json`` beside it.

- for OpenVINO GenAI (:data:`FORMAT_OPENVINO_LLM`), with NNCF's ``compress_weights`` on the fp32 OpenVINO folder
  (the ``fp32`` recipe's, reused through the cache; see ``openvino_llm.compress_folder``): int8 is ``INT8_SYM``,
  one scale per output channel; int4 is ``INT4_SYM`` per group of ``group_size`` with NNCF's ``ratio`` (the share
  of layers in int4, the rest int8). NNCF packs two int4 values per byte, so int4 is smaller than int8 on disk.

- for ONNX Runtime GenAI (:data:`FORMAT_ORT_GENAI`), with its model builder (``-p int8``/``-p int4``, see
  ``ort_genai.py``): ONNX Runtime's ``MatMulNBits``, symmetric, one scale per block of input channels (int4:
  ``group_size``; int8: 128), packed two int4 values per byte, so int4 is half the bytes of int8.

- for llama.cpp (:data:`FORMAT_GGUF`), with llama.cpp's own ``llama_model_quantize`` on the fp32 recipe's F32 GGUF
  file (see ``gguf.py``): int8 is ``Q8_0`` (blocks of 32 weights, one fp16 scale each); int4 is ``Q4_K_M``
  (super-blocks of 256 weights in sub-blocks of 32, with Q6_K for the output head and part of ``attn_v`` and
  ``ffn_down``). Its blocks are fixed, so ``group_size`` cannot be honoured: the default (128) builds the variant
  and its provenance states the real blocks; any other group size makes the GGUF variant not applicable, as a
  ``ratio`` below 1 does.
"""

from __future__ import annotations

import abc

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from costbench.core.artifacts import (FORMAT_GGUF, FORMAT_HF_CAUSAL_LM, FORMAT_OPENVINO_LLM, FORMAT_ORT_GENAI,
                                     HF_TORCHAO_RECIPE, HF_TORCHAO_WEIGHTS, ArtifactCache, write_json_atomic)
from costbench.harness.build.compress.base import Recipe, RecipeConfig, RecipeNotApplicable
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.compress.fp32 import fp32_gguf, fp32_openvino_llm, link_hf_folder
from costbench.harness.build.compress.gguf import GGUF_FILE, gguf_material, quantize
from costbench.harness.build.compress.openvino_llm import MODEL_XML, compress_folder, openvino_llm_material
from costbench.harness.build.compress.ort_genai import GENAI_CONFIG, build_ort_genai, ort_genai_material
from costbench.harness.build.zoo.base import SOURCE_HF, ModelBundle


class Int8WeightOnlyConfig(RecipeConfig):
    """int8 weights, symmetric, one scale per output channel; no options."""


class Int4WeightOnlyConfig(RecipeConfig):
    """int4 weights, symmetric, one scale per group of input channels."""

    group_size: int = Field(128, ge=16, description="Input channels sharing one scale (must divide every linear "
                            "layer's input width).")
    ratio: float = Field(1.0, gt=0.0, le=1.0, description="OpenVINO (NNCF) only: the share of the linear layers' "
                         "weights put in int4, as NNCF's compress_weights reads it (chosen data-free by weight-"
                         "quantization error); the rest go to int8 (asymmetric, per channel). 1.0 = every layer NNCF "
                         "puts in int4 (it keeps the embedding and output head in int8 regardless). Other runtimes' "
                         "int4 quantizes every layer, so a ratio below 1 makes those variants not applicable.")


class _WeightOnlyRecipe(Recipe):
    """Shared build: link the folder without its weights, quantize the fp32 model's linears, save the state dict."""

    bits: ClassVar[int]

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Causal-LM folders only: weight-only quantization is for generative models here."""
        return ((FORMAT_HF_CAUSAL_LM, FORMAT_OPENVINO_LLM, FORMAT_ORT_GENAI, FORMAT_GGUF) if source_kind == SOURCE_HF
                else ())

    def filename(self, fmt: str) -> str:
        return {FORMAT_ORT_GENAI: GENAI_CONFIG, FORMAT_OPENVINO_LLM: MODEL_XML, FORMAT_GGUF: GGUF_FILE}.get(
            fmt, "config.json")

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        return {**super().cache_material(bundle, config), "torch": library_version("torch"),
                "torchao": library_version("torchao"), "transformers": library_version("transformers"),
                **ort_genai_material(bundle), "nncf": library_version("nncf"), **openvino_llm_material(),
                **gguf_material(bundle)}

    @abc.abstractmethod
    def torchao_config(self, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """torchao's config object and the provenance that describes it."""

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path,
              cache: ArtifactCache) -> dict[str, Any]:
        ratio = getattr(config, "ratio", 1.0)
        if fmt == FORMAT_OPENVINO_LLM:  # NNCF compresses the fp32 OpenVINO folder (reused through the cache)
            fp32 = fp32_openvino_llm(bundle, cache)
            return {"parameters": bundle.details.get("parameters"), "fp32_artifact": fp32.key,
                    **compress_folder(fp32.directory, out_dir, self.bits, getattr(config, "group_size", None), ratio)}
        if fmt == FORMAT_GGUF:
            return self._gguf(bundle, config, out_dir, cache)
        if ratio != 1.0:
            raise RecipeNotApplicable(f"recipe {self.name!r}: ratio={ratio} is NNCF's mixed int4/int8 split, for the "
                                      f"OpenVINO format only; the {fmt} variant quantizes every layer to int4")
        if fmt == FORMAT_ORT_GENAI:  # ONNX Runtime GenAI's builder quantizes to MatMulNBits itself
            return {"bits": self.bits, "parameters": bundle.details.get("parameters"),
                    **build_ort_genai(bundle, out_dir, f"int{self.bits}", getattr(config, "group_size", None))}
        import torch
        from transformers import AutoModelForCausalLM

        try:
            import torchao
            from torchao.quantization import quantize_
        except ImportError as exc:
            raise RuntimeError(f"recipe {self.name!r} needs torchao: pip install torchao ({exc})") from exc
        linked = link_hf_folder(bundle, out_dir, weights=False)
        model = AutoModelForCausalLM.from_pretrained(str(bundle.hf_path), dtype=torch.float32).eval()
        self._check_shapes(model, config)
        ao_config, described = self.torchao_config(config)
        quantize_(model, ao_config)
        state = model.state_dict()
        torch.save(state, out_dir / HF_TORCHAO_WEIGHTS)
        provenance = {"method": f"torchao {type(ao_config).__name__}", "bits": self.bits, **described,
                      "quantized": "every nn.Linear (output head included); embedding kept fp32",
                      "activations": "fp32 (weight-only)", "torchao": torchao.__version__,
                      "decode_weight_bytes": step_bytes(state),
                      "parameters": bundle.details.get("parameters"), "files": linked["files"]}
        write_json_atomic(out_dir / HF_TORCHAO_RECIPE, provenance)
        return provenance

    def _gguf(self, bundle: ModelBundle, config: RecipeConfig, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """llama.cpp's Q8_0 or Q4_K_M of the cached F32 GGUF file."""
        ratio = getattr(config, "ratio", 1.0)
        if ratio != 1.0:
            raise RecipeNotApplicable(f"recipe {self.name!r}: ratio={ratio} is NNCF's mixed int4/int8 split, for the "
                                      "OpenVINO format only; llama.cpp's Q4_K_M picks its own type for each tensor")
        group = getattr(config, "group_size", None)
        default = type(config).model_fields["group_size"].default if group is not None else None
        if group is not None and group != default:
            raise RecipeNotApplicable(
                f"recipe {self.name!r}: group_size={group} cannot be honoured in GGUF: llama.cpp's Q4_K_M has fixed "
                f"blocks (super-blocks of 256 weights in sub-blocks of 32); only the default group_size={default} "
                "builds it, and its provenance states the real blocks")
        fp32 = fp32_gguf(bundle, cache)
        kind = "q8_0" if self.bits == 8 else "q4_k_m"
        provenance = {"method": f"llama.cpp {kind.upper()} (weight-only, its own quantizer)", "bits": self.bits,
                      "parameters": bundle.details.get("parameters"), "fp32_artifact": fp32.key,
                      "quantized": "every 2-D weight, token embedding and output head included, by llama.cpp's "
                                   "rules for the file type; norms and biases kept F32",
                      **quantize(fp32.path, out_dir / GGUF_FILE, kind)}
        if group is not None:
            provenance["group_size"] = (f"not applicable: Q4_K_M's blocks are fixed (super-blocks of 256 in sub-blocks "
                                        f"of 32); the config's default {group} is not used")
        return provenance

    def _check_shapes(self, model: Any, config: RecipeConfig) -> None:
        """An int4 group size that does not divide a linear's input width: not applicable, naming the layer."""
        group = getattr(config, "group_size", None)
        if group is None:
            return
        import torch

        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and module.in_features % group:
                raise RecipeNotApplicable(f"recipe {self.name!r}: group_size={group} does not divide the input width "
                                          f"{module.in_features} of {name}")


def step_bytes(state: dict[str, Any]) -> int:
    """Bytes a decoding step reads: every tensor of the state dict but the embedding table, a torchao tensor
    counted by the plain tensors it is made of (quantized data, scales, zero points)."""

    def nbytes(t: Any) -> int:
        if hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(nbytes(getattr(t, n)) for n in names)
        return int(t.numel() * t.element_size())

    return sum(nbytes(t) for k, t in state.items() if "embed_tokens" not in k)


class Int8WeightOnlyRecipe(_WeightOnlyRecipe):
    """int8 weight-only: torchao ``Int8WeightOnlyConfig`` for PyTorch."""

    name = "int8-weight-only"
    version = 2
    precision = "int8"
    bits = 8
    Config = Int8WeightOnlyConfig
    description = ("int8 weight-only (generative models): torchao Int8WeightOnlyConfig, per output channel; NNCF "
                   "INT8_SYM for OpenVINO")

    def torchao_config(self, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        from torchao.quantization import Int8WeightOnlyConfig as AoInt8

        return AoInt8(), {"granularity": "per output channel", "symmetric": True, "storage": "int8"}


class Int4WeightOnlyRecipe(_WeightOnlyRecipe):
    """int4 weight-only: torchao ``IntxWeightOnlyConfig`` (int4, per group) for PyTorch."""

    name = "int4-weight-only"
    version = 2
    precision = "int4"
    bits = 4
    Config = Int4WeightOnlyConfig
    description = ("int4 weight-only (generative models): torchao IntxWeightOnlyConfig(int4, per group); NNCF "
                   "INT4_SYM per group with a ratio for OpenVINO")

    def torchao_config(self, config: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        import torch
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        assert isinstance(config, Int4WeightOnlyConfig)
        return (IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(config.group_size)),
                {"granularity": f"per group of {config.group_size} input channels", "symmetric": True,
                 "storage": "int4 values held one per byte (torchao IntxUnpackedToInt8Tensor): the size of int8, "
                            "dequantized per call; no packed int4 CPU kernel in this torchao"})
