"""Dynamic int8, the usual path for transformer models: int8 weights, activations quantized per batch at run time.

``int8-dynamic`` (ONNX Runtime ``quantize_dynamic``): MatMul/Gemm weights stored as int8 and run
as ``DynamicQuantizeLinear`` + ``MatMulInteger``; no calibration data. Convolutions are left in
fp32 by default: ``ConvInteger`` with one per-tensor activation scale costs EfficientNet-Lite0
about half its top-1 agreement with fp32 and runs slower than fp32 on ONNX Runtime's CPU
provider; ``op_types = ["MatMul", "Gemm", "Conv"]`` asks for it anyway.

``int8-dynamic-torch``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
(FBGEMM/oneDNN int8 GEMMs, ``DynamicQuantizedLinear`` modules). torch 2.13 still ships it but
deprecates eager-mode quantization in favour of torchao's ``quantize_``; costbench uses the
torch.ao path because its result is an ordinary module that ``torch.save`` pickles whole (the
torch backend's artifact format), while torchao's int8 tensor subclasses do not pickle that way
here. The provenance records the deprecation.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import Field

from costbench.core.artifacts import FORMAT_ONNX, FORMAT_TORCH, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.compress.fp32 import fp32_onnx
from costbench.harness.build.compress.ort_int8 import count_quantization, decide_reduce_range
from costbench.harness.build.zoo.base import SOURCE_ONNX, SOURCE_TORCH, ModelBundle

TORCH_DEPRECATION = ("torch.ao.quantization.quantize_dynamic is deprecated in torch 2.13 in favour of torchao's "
                     "quantize_(Int8DynamicActivationInt8WeightConfig); used here because its modules pickle whole")


class OrtDynamicConfig(RecipeConfig):
    """Options of ONNX Runtime dynamic quantization."""

    per_channel: bool = Field(False, description="One weight scale per output channel (else one per tensor).")
    op_types: list[str] = Field(["MatMul", "Gemm"], min_length=1,
                                description="ONNX op types whose weights are quantized (add 'Conv' for ConvInteger).")
    reduce_range: bool | None = Field(None, description="7-bit weights; None decides from the CPU's ISA (no VNNI: True).")


class TorchDynamicConfig(RecipeConfig):
    """torch's dynamic quantization has no options here: every nn.Linear, int8 weights per tensor."""



class OrtDynamicInt8Recipe(Recipe):
    """int8 weights with run-time activation quantization (ONNX Runtime)."""

    name = "int8-dynamic"
    version = 1
    precision = "int8"
    Config = OrtDynamicConfig
    description = "int8 dynamic quantization with ONNX Runtime: int8 MatMul/Gemm weights, activations per batch"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """ONNX (ONNX Runtime runs MatMulInteger; OpenVINO reads it too)."""
        return (FORMAT_ONNX,) if source_kind in (SOURCE_TORCH, SOURCE_ONNX) else ()

    def filename(self, fmt: str) -> str:
        """model.onnx."""
        return "model.onnx"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the onnxruntime version and the ISA decision."""
        return {**super().cache_material(bundle, config), "onnxruntime": library_version("onnxruntime"),
                "reduce_range": decide_reduce_range(self.own_config(config).reduce_range)[0]}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Pre-process and dynamically quantize the fp32 ONNX artifact."""
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        cfg = self.own_config(config)
        reduce_range, why = decide_reduce_range(cfg.reduce_range)
        source = fp32_onnx(bundle, cache)
        out = out_dir / self.filename(fmt)
        with tempfile.TemporaryDirectory(prefix="costbench-dyn-") as tmp, contextlib.redirect_stdout(sys.stderr):
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source.path), str(prepared))
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=list(cfg.op_types))
        return {
            "method": "dynamic quantization (ONNX Runtime quantize_dynamic)",
            "bits": 8,
            "weight_bits": 7 if reduce_range else 8,
            "weights": "int8",
            "weight_granularity": "per-channel" if cfg.per_channel else "per-tensor",
            "activations": "uint8, quantized per batch at run time (DynamicQuantizeLinear)",
            "op_types": list(cfg.op_types),
            "reduce_range": reduce_range,
            "reduce_range_reason": why,
            "calibration": None,
            "onnxruntime": onnxruntime.__version__,
            "fp32_onnx_artifact": source.key,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            **count_integer_ops(out),
        }


def count_integer_ops(path: Path) -> dict[str, int]:
    """Counts of the integer ops dynamic quantization inserts, and of int8 weight tensors."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    int8 = sum(t.data_type == onnx.TensorProto.INT8 and int(np.prod(t.dims)) > 1 for t in model.graph.initializer)
    return {"matmul_integer": ops.count("MatMulInteger"), "conv_integer": ops.count("ConvInteger"),
            "dynamic_quantize_linear": ops.count("DynamicQuantizeLinear"), "int8_weight_tensors": int(int8),
            **{k: v for k, v in count_quantization(path).items() if k == "quantize_linear"}}


class TorchDynamicInt8Recipe(Recipe):
    """torch.ao dynamic int8 on every nn.Linear (torch backend)."""

    name = "int8-dynamic-torch"
    version = 1
    precision = "int8"
    Config = TorchDynamicConfig
    description = "int8 dynamic quantization of nn.Linear with torch.ao (FBGEMM/oneDNN), for the torch backend"

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """A pickled torch module."""
        return (FORMAT_TORCH,) if source_kind == SOURCE_TORCH else ()

    def filename(self, fmt: str) -> str:
        """model.pt."""
        return "model.pt"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds torch's version (it decides the packed weight format)."""
        return {**super().cache_material(bundle, config), "torch": library_version("torch")}

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Quantize every nn.Linear of a copy of the model and pickle it."""
        import torch
        from torch.ao.quantization import quantize_dynamic

        module = bundle.torch_module().eval()
        linears = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the migration notice: recorded in the provenance instead
            quantized = quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
        torch.save(quantized, out_dir / self.filename(fmt))
        layers = [m for m in quantized.modules() if type(m).__name__ == "Linear" and hasattr(m, "_packed_params")]
        return {
            "method": "dynamic quantization (torch.ao.quantization.quantize_dynamic, nn.Linear)",
            "bits": 8,
            "weights": "int8, per-tensor (qint8)",
            "activations": "quantized per batch at run time",
            "quantized_linear_layers": len(layers),
            "linear_layers": int(linears),
            "other_layers": "left in fp32 (dynamic quantization covers nn.Linear only)",
            "quantized_engine": torch.backends.quantized.engine,
            "deprecation": TORCH_DEPRECATION,
            "calibration": None,
            "torch": torch.__version__,
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            "serialization": "torch.save(module); load with torch.load(weights_only=False)",
        }
