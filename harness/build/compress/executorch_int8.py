"""``int8-xnnpack``: PyTorch's export-based PTQ (PT2E) with the XNNPACK quantizer, lowered to an ExecuTorch .pte.

``torch.export`` -> ``prepare_pt2e(XNNPACKQuantizer)`` -> calibrate on the bundle's real calibration
samples (the same ones the ``int8`` and ``int8-nncf`` recipes use) -> ``convert_pt2e`` -> export
again -> lower to XNNPACK, which runs the quantized convolutions and matmuls as int8. Weights are
symmetric int8 ([-127, 127]) per output channel by default, activations asymmetric int8 per
tensor, ranges from the quantizer's histogram observer.

Conv -> ReLU6: the stock ``XNNPACKQuantizer`` fuses Conv -> ReLU but not Conv -> hardtanh (ReLU6),
so it observes the convolution's output before the clamp and hands that wide range to the clamp
too; on EfficientNet-Lite0 (33 ReLU6) that costs most of the accuracy. With ``fuse_relu6`` (the
default) the pair is annotated as one op whose output range is observed after the clamp, which is
how XNNPACK executes it anyway (its FuseActivationPass folds the clamp into the convolution).

Integer arithmetic: the stock quantizer also rewrites the scalar operand of every add/mul into a
float tensor, integer index arithmetic included, which breaks transformers' attention-mask code;
here only floating-point add/mul are rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from costbench.core.artifacts import FORMAT_EXECUTORCH, ArtifactCache
from costbench.harness.build.compress.base import Recipe, RecipeConfig
from costbench.harness.build.compress.common import calibration_batches, calibration_subset, library_version, samples_hash
from costbench.harness.build.compress.executorch_export import EXPORT_VERSION, MAX_BATCH, export_pte, export_program
from costbench.harness.build.zoo.base import SOURCE_TORCH, ModelBundle


class XnnpackInt8Config(RecipeConfig):
    """Options of PT2E static quantization for XNNPACK."""

    per_channel: bool = Field(True, description="One weight scale per output channel (else one per tensor).")
    calibration_samples: int = Field(
        64, ge=1, description="Calibration samples to use (capped by how many the model's data has)."
    )
    # The histogram observers' cost is per call, not per sample (EfficientNet-Lite0, 64 samples: 77 s in
    # batches of 8, 17 s in batches of 32, same accuracy), hence larger batches than the ONNX Runtime recipe's.
    calibration_batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="Samples per calibration inference.")
    fuse_relu6: bool = Field(
        True, description="Quantize Conv -> ReLU6 (hardtanh) as one op, observing the clamped output as XNNPACK "
        "runs it; False keeps XNNPACKQuantizer's stock annotation (the clamp shares the conv's pre-clamp range).",
    )


def _conv_targets() -> tuple[Any, ...]:
    import torch

    aten = torch.ops.aten
    return (aten.conv1d.default, aten.conv2d.default)


def annotate_conv_clamp(model: Any, config: Any) -> int:
    """Annotate every Conv -> hardtanh pair as one quantized op (inputs and weight at the conv, output
    after the clamp); returns how many pairs. Mirrors XNNPACKQuantizer's own Conv -> ReLU annotator."""
    import torch
    from torchao.quantization.pt2e.quantizer import (QuantizationAnnotation, get_bias_qspec, get_input_act_qspec,
                                                     get_output_act_qspec, get_weight_qspec)
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    convs = _conv_targets()

    def annotated(node: Any) -> bool:
        return Q_ANNOTATION_KEY in node.meta and node.meta[Q_ANNOTATION_KEY]._annotated

    fused = 0
    for clamp in model.graph.nodes:
        if clamp.op != "call_function" or clamp.target not in clamps:
            continue
        conv = clamp.args[0]
        # A conv with another user needs its own unclamped output quantized: leave it to the stock annotators.
        if not isinstance(conv, torch.fx.Node) or conv.op != "call_function" or conv.target not in convs \
                or len(conv.users) > 1:
            continue
        act, weight = conv.args[0], conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        partition = [clamp, conv, weight] + ([bias] if isinstance(bias, torch.fx.Node) else [])
        if any(annotated(n) for n in partition):
            continue
        qspecs = {act: get_input_act_qspec(config), weight: get_weight_qspec(config)}
        if isinstance(bias, torch.fx.Node):
            qspecs[bias] = get_bias_qspec(config)
        conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
        clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(output_qspec=get_output_act_qspec(config),
                                                              _annotated=True)
        for node in partition[2:]:
            node.meta.setdefault(Q_ANNOTATION_KEY, QuantizationAnnotation())._annotated = True
        fused += 1
    return fused


def convert_float_scalars_to_attrs(model: Any) -> Any:
    """XNNPACKQuantizer's scalar-to-tensor rewrite (so add/mul scalars can be observed), on float ops only.

    The stock rewrite turns the scalar of every ``add``/``mul`` into a float tensor, integer arithmetic
    included: transformers' attention-mask code (``int64 arange + 1``, then used as an index) becomes
    float and fails with "tensors used as indices must be long, int, byte or bool tensors".
    """
    import torch
    from torchao.quantization.pt2e.utils import get_new_attr_name_with_prefix

    targets = (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor)
    for node in model.graph.nodes:
        value = node.meta.get("val")
        if node.op != "call_function" or node.target not in targets or not isinstance(value, torch.Tensor) \
                or not value.dtype.is_floating_point:
            continue
        args = []
        for arg in node.args:
            if isinstance(arg, torch.fx.Node):
                args.append(arg)
                continue
            name = get_new_attr_name_with_prefix("_tensor_constant_")(model)
            constant = torch.tensor(float(arg))
            model.register_buffer(name, constant)
            with model.graph.inserting_before(node):
                attr = model.graph.create_node("get_attr", name, (), {})
                attr.meta["val"] = value.fake_mode.from_tensor(constant, static_shapes=True)
            args.append(attr)
        node.args = tuple(args)
    model.recompile()
    return model


def make_quantizer(per_channel: bool, fuse_relu6: bool) -> Any:
    """XNNPACKQuantizer with the symmetric static config, two fixes: scalars of integer ops stay integers, and
    with ``fuse_relu6`` Conv -> ReLU6 pairs are annotated as one op before the stock patterns (which then skip them)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    class CostbenchXNNPACKQuantizer(XNNPACKQuantizer):
        """XNNPACKQuantizer with float-only scalar conversion and optional Conv -> ReLU6 fusion."""

        fused_clamps = 0

        def transform_for_annotation(self, model):
            return convert_float_scalars_to_attrs(model)

        def annotate(self, model):
            if fuse_relu6 and self.global_config is not None:
                self.fused_clamps += annotate_conv_clamp(model, self.global_config)
            return super().annotate(model)

    quantizer = CostbenchXNNPACKQuantizer()
    return quantizer.set_global(get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False))


def count_quant_nodes(graph_module: Any) -> dict[str, int]:
    """Quantize/dequantize nodes in the converted (reference) model: activation and weight quantizers."""
    names = [str(n.target) for n in graph_module.graph.nodes if n.op == "call_function"]
    return {
        "quantize_per_tensor": sum("quantize_per_tensor" in t and "dequantize" not in t for t in names),
        "dequantize_per_channel": sum("dequantize_per_channel" in t for t in names),
        "dequantize_per_tensor": sum("dequantize_per_tensor" in t for t in names),
    }


class XnnpackInt8Recipe(Recipe):
    """Static int8 PTQ with PT2E and XNNPACKQuantizer, as an ExecuTorch .pte delegated to XNNPACK."""

    name = "int8-xnnpack"
    version = 1
    precision = "int8"
    Config = XnnpackInt8Config
    description = ("int8 static PTQ with PT2E + XNNPACKQuantizer: ExecuTorch .pte on XNNPACK, per-channel "
                   "symmetric int8 weights, int8 activations")

    def formats_for(self, source_kind: str) -> tuple[str, ...]:
        """An ExecuTorch program, from torch modules only (torch.export needs the module)."""
        return (FORMAT_EXECUTORCH,) if source_kind == SOURCE_TORCH else ()

    def filename(self, fmt: str) -> str:
        """model.pte."""
        return "model.pte"

    def cache_material(self, bundle: ModelBundle, config: RecipeConfig) -> dict[str, Any]:
        """Adds the torch/executorch/torchao versions, the export settings and the calibration data itself."""
        cfg = self.own_config(config)
        return {
            **super().cache_material(bundle, config),
            "torch": library_version("torch"),
            "executorch": library_version("executorch"),
            "torchao": library_version("torchao"),
            "export": {"version": EXPORT_VERSION, "max_batch": MAX_BATCH},
            "calibration_data": samples_hash(calibration_subset(bundle, cfg.calibration_samples)),
        }

    def build(self, bundle: ModelBundle, config: RecipeConfig, fmt: str, out_dir: Path, cache: ArtifactCache) -> dict[str, Any]:
        """Export, quantize with PT2E on the calibration samples, lower to XNNPACK, verify on the runtime."""
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        cfg = self.own_config(config)
        samples = calibration_subset(bundle, cfg.calibration_samples)
        quantizer = make_quantizer(cfg.per_channel, cfg.fuse_relu6)
        calibration: dict[str, Any] = {}

        def quantize(program: Any, batch_info: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
            # A program exported with a static batch only takes that batch, calibration included.
            batch_size = cfg.calibration_batch_size if batch_info["batch"] == "dynamic" else batch_info["max_batch"]
            prepared = prepare_pt2e(program.module(), quantizer)
            with torch.no_grad():
                for batch in calibration_batches(samples, batch_size):
                    prepared(*(torch.from_numpy(batch[i.name]) for i in bundle.inputs))
            converted = convert_pt2e(prepared)
            calibration.update(batch_size=batch_size)
            requantized, _ = export_program(converted, bundle.inputs, samples, bundle.name,
                                            dynamic=batch_info["batch"] == "dynamic")
            return requantized, converted, {"quantized_graph": count_quant_nodes(converted),
                                            "fused_conv_relu6": quantizer.fused_clamps}

        provenance = export_pte(bundle.torch_module(), bundle.inputs, bundle.calibration, out_dir / self.filename(fmt),
                                bundle.name, prepare=quantize, tolerance=None)
        # verify_pte compared the .pte with the PT2E reference model (fake-quantized torch): kernel rounding only.
        provenance["export_reference"] = "PT2E converted model (quantize/dequantize in torch)"
        return {
            "method": "static PTQ (PT2E, XNNPACKQuantizer), lowered to XNNPACK",
            "bits": 8,
            "weights": "symmetric int8 [-127, 127]",
            "weight_granularity": "per-channel" if cfg.per_channel else "per-tensor",
            "activations": "asymmetric int8, per-tensor (HistogramObserver)",
            "fuse_relu6": cfg.fuse_relu6,
            "scalar_operands": "observed as tensors on float add/mul only (XNNPACKQuantizer converts integer ops too)",
            "calibration": {
                "description": samples.description,
                "samples": len(samples),
                "batch_size": calibration.get("batch_size"),
                "method": "HistogramObserver (activations), MinMax (weights)",
            },
            "parameters": bundle.details.get("parameters"),
            "flops": bundle.details.get("flops"),
            **provenance,
        }



__all__ = ["XnnpackInt8Config", "XnnpackInt8Recipe", "annotate_conv_clamp", "convert_float_scalars_to_attrs",
           "make_quantizer"]
