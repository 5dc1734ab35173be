"""``fp16`` and ``bf16``: half-precision variants, with what they really are on the machine that builds them.

- ONNX fp16 (``onnxconverter-common``'s ``convert_float_to_float16``, float32 inputs and outputs
  kept): on an x86 CPU, ONNX Runtime's CPU provider has few fp16 kernels and casts around the
  rest, so this is a storage-size variant (half the bytes), not a speed-up.
- OpenVINO IR with fp16-compressed weights (``save_model(compress_to_fp16=True)``): the CPU plugin
  decompresses them and computes in the precision the backend asks for (costbench: f32), so it is
  storage-only too. For bf16 *compute* in OpenVINO, run the fp32 variant with the backend option
  ``inference_precision = "bf16"``.
- torch: the module's weights in fp16/bf16 behind a wrapper that casts float inputs down and the
  outputs back to float32. This one computes in half precision through oneDNN where the CPU has
  the instructions (avx512_fp16/amx_fp16 for fp16, avx512_bf16/amx_bf16 for bf16) and falls back
  to slow reference kernels where it does not; the provenance records which.

docs/architecture.md: benchmark fp16/bf16 where the hardware computes in it (GPU); on an x86 CPU report the
ONNX and IR variants as size-only. Each artifact's provenance has ``cpu_compute`` saying so.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

from costbench.core.artifacts import (FORMAT_GGUF, FORMAT_HF_CAUSAL_LM, FORMAT_ONNX, FORMAT_OPENVINO, FORMAT_TORCH,
                                     ArtifactCache)
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.compress.fp32 import FILENAMES, fp32_gguf, fp32_onnx, link_hf_folder
from costbench.harness.build.compress.gguf import GGUF_FILE, gguf_material, quantize
from costbench.harness.machine.env import cpu_flags
from costbench.harness.build.zoo.base import SOURCE_HF, SOURCE_ONNX, SOURCE_TORCH, ModelBundle

X86 = {"x86_64", "amd64", "i386", "i686", "x86"}
NATIVE_FLAGS = {"fp16": ("avx512_fp16", "amx_fp16"), "bf16": ("avx512_bf16", "amx_bf16")}
STORAGE_ONLY = {
    FORMAT_ONNX: "storage-size variant on x86 CPUs: ONNX Runtime's CPU provider computes most ops in fp32 and "
                 "casts around them; expect no speed-up (often a slow-down from the casts)",
    FORMAT_OPENVINO: "storage-size variant: the CPU plugin decompresses fp16 weights and computes in the "
                     "backend's inference precision (f32 unless the backend option says otherwise)",
}


def __getattr__(name: str) -> Any:
    if name == "ReducedPrecision":
        return _reduced_precision_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _reduced_precision_class() -> type:
    import torch
    from torch import nn

    class ReducedPrecision(nn.Module):
        """A module whose weights are fp16/bf16: float inputs are cast down, outputs back up to float32."""

        def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
            super().__init__()
            self.module = module.to(dtype)
            self.dtype = dtype

        def forward(self, *args):
            cast = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
            out = self.module(*cast)
            if isinstance(out, (tuple, list)):
                return type(out)(o.float() for o in out)
            return out.float()

    ReducedPrecision.__module__ = __name__
    ReducedPrecision.__qualname__ = "ReducedPrecision"
    return ReducedPrecision


def torch_cpu_compute(precision: str) -> str:
    """What a torch module in ``precision`` computes with on this CPU."""
    if platform.machine().lower() not in X86:
        return f"{precision} compute where torch has {platform.machine()} kernels for it"
    flags = cpu_flags()
    native = [f for f in NATIVE_FLAGS[precision] if f in flags]
    if native:
        return f"{precision} compute through oneDNN (this CPU has {', '.join(native)})"
    return (f"{precision} compute without native {precision} instructions on this CPU (no "
            f"{'/'.join(NATIVE_FLAGS[precision])}): reference kernels, expect a slow-down")


def ggml_bf16_compute() -> str:
    """What llama.cpp's CPU backend computes a BF16 matmul with on this CPU."""
    if platform.machine().lower() in X86 and "avx512_bf16" in cpu_flags():
        return "bf16 dot products with avx512_bf16 (ggml's BF16 vec_dot), fp32 accumulation"
    return "bf16 values widened to fp32 inside ggml's BF16 dot products (no avx512_bf16 on this CPU)"


class HalfConfig(RecipeConfig):
    """Half-precision variants have no options: weights are converted, interfaces stay float32."""


class _HalfRecipe(Recipe):
    """Shared by fp16 and bf16."""

    Config = HalfConfig
    torch_dtype_name: str

    def filename(self, fmt: str) -> str:
        """model.pt, model.onnx or model.xml."""
        return FILENAMES[fmt]

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the converters' versions."""
        return {**super().cache_material(bundle, config), "torch": library_version("torch"),
                "onnx": library_version("onnx"), "onnxconverter_common": library_version("onnxconverter-common"),
                "openvino": library_version("openvino"), "transformers": library_version("transformers"),
                **gguf_material(bundle)}

    def _torch(self, bundle: ModelBundle, path: Path) -> dict[str, Any]:
        import torch

        dtype = getattr(torch, self.torch_dtype_name)
        module = _reduced_precision_class()(bundle.torch_module(), dtype).eval()
        torch.save(module, path)
        float_params = [p for p in module.parameters() if p.is_floating_point()]
        return {
            "weights_dtype": str(dtype).replace("torch.", ""),
            "half_precision_tensors": sum(p.dtype == dtype for p in float_params),
            "float_tensors": len(float_params),
            "interface": "float32 in, float32 out (cast inside the module)",
            "cpu_compute": torch_cpu_compute(self.precision),
            "serialization": "torch.save(module); load with torch.load(weights_only=False)",
            "torch": torch.__version__,
        }

    def _hf(self, bundle: ModelBundle, out_dir: Path) -> dict[str, Any]:
        """A causal LM's folder with its weights stored (and, by the transformers backend, computed) in half precision."""
        import torch
        from transformers import AutoModelForCausalLM

        from costbench.harness.build.zoo.causal_lm import safetensors_parameters

        dtype = getattr(torch, self.torch_dtype_name)
        linked = link_hf_folder(bundle, out_dir, weights=False)
        model = AutoModelForCausalLM.from_pretrained(str(bundle.hf_path), dtype=torch.float32)
        model.to(dtype).save_pretrained(str(out_dir))  # rewrites config.json with the new dtype
        return {"weights_dtype": self.torch_dtype_name, "files": linked["files"],
                "cpu_compute": torch_cpu_compute(self.precision),
                "decode_weight_bytes": safetensors_parameters(out_dir)[2], "torch": torch.__version__}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Write the half-precision artifact for ``fmt``."""
        path = out_dir / self.filename(fmt)
        common = {"method": f"{self.precision} weights", "bits": 16,
                  "parameters": bundle.details.get("parameters"), "flops": bundle.details.get("flops")}
        if fmt == FORMAT_HF_CAUSAL_LM:
            return {**common, **self._hf(bundle, out_dir)}
        if fmt == FORMAT_GGUF:  # llama.cpp's own BF16 conversion of the cached F32 GGUF file
            fp32 = fp32_gguf(bundle, cache)
            return {**common, "fp32_artifact": fp32.key, "cpu_compute": ggml_bf16_compute(),
                    **quantize(fp32.path, out_dir / GGUF_FILE, "bf16")}
        if fmt == FORMAT_TORCH:
            return {**common, **self._torch(bundle, path)}
        if fmt == FORMAT_ONNX:
            return {**common, **onnx_fp16(bundle, cache, path)}
        return {**common, **openvino_fp16(bundle, cache, path)}


class Fp16Recipe(_HalfRecipe):
    """fp16 weights: ONNX (converted), OpenVINO IR (compressed weights), torch (half module)."""

    name = "fp16"
    version = 1
    precision = "fp16"
    torch_dtype_name = "float16"
    description = ("fp16 weights: ONNX via onnxconverter-common and OpenVINO IR (storage-size variants on x86 CPUs), "
                   "torch half module")

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Torch sources: torch, ONNX and IR; ONNX sources: ONNX and IR."""
        return {SOURCE_TORCH: (FORMAT_TORCH, FORMAT_ONNX, FORMAT_OPENVINO),
                SOURCE_ONNX: (FORMAT_ONNX, FORMAT_OPENVINO), SOURCE_HF: (FORMAT_HF_CAUSAL_LM,)}.get(source_kind, ())


class Bf16Recipe(_HalfRecipe):
    """bf16 weights in a torch module (ONNX Runtime's CPU provider has no bf16 kernels; OpenVINO takes bf16 as a
    backend option)."""

    name = "bf16"
    version = 1
    precision = "bf16"
    torch_dtype_name = "bfloat16"
    description = "bf16 torch module (for OpenVINO bf16, run fp32 with inference_precision='bf16')"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """Torch modules, and causal-LM folders (bf16 weights, computed in bf16 by the transformers backend) and
        their GGUF file (llama.cpp's BF16)."""
        return {SOURCE_TORCH: (FORMAT_TORCH,), SOURCE_HF: (FORMAT_HF_CAUSAL_LM, FORMAT_GGUF)}.get(source_kind, ())


def onnx_fp16(bundle: ModelBundle, cache: ArtifactCache, path: Path) -> dict[str, Any]:
    """Convert the fp32 ONNX artifact's float tensors to fp16, keeping float32 inputs and outputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxconverter_common import float16

    source = fp32_onnx(bundle, cache)
    model = onnx.load(str(source.path))
    # Cast nodes stay as they are (the converter would relabel their outputs fp16 without changing
    # their 'to' type, e.g. the attention-mask cast in MiniLM); it inserts casts around them instead.
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | {"Cast"})
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save(converted, str(path))
    init = converted.graph.initializer
    fp16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in init)
    fp32_left = sum(t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1 for t in init)
    # Check the converted model against the fp32 one on real samples: a broken conversion must not pass as a variant.
    feed = bundle.calibration.batch(4)
    ref = ort.InferenceSession(str(source.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    return {
        "converter": "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)",
        "onnxconverter_common": library_version("onnxconverter-common"),
        "op_block_list": block,
        "fp16_initializers": int(fp16),
        "fp32_initializers_left": int(fp32_left),
        "max_abs_error_vs_fp32": float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))),
        "cpu_compute": STORAGE_ONLY[FORMAT_ONNX],
        "fp32_onnx_artifact": source.key,
    }


def openvino_fp16(bundle: ModelBundle, cache: ArtifactCache, path: Path) -> dict[str, Any]:
    """OpenVINO IR of the fp32 ONNX artifact with fp16-compressed weights."""
    import openvino as ov

    source = fp32_onnx(bundle, cache)
    model = ov.convert_model(str(source.path))
    ov.save_model(model, str(path), compress_to_fp16=True)
    saved = ov.Core().read_model(str(path))
    fp16_constants = sum(op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f16
                         for op in saved.get_ops())
    return {
        "converter": "openvino.convert_model + save_model(compress_to_fp16=True)",
        "openvino": ov.__version__,
        "fp16_weight_constants": int(fp16_constants),
        "cpu_compute": STORAGE_ONLY[FORMAT_OPENVINO],
        "fp32_onnx_artifact": source.key,
    }
