"""Parameter and FLOP counts of a model, from its torch module or its ONNX graph, cached per source model.

FLOPs are approximate by design: 2 x the multiply-accumulates of convolutions and matrix
products (torch: ``Conv*d``/``Linear`` via forward hooks; ONNX: ``Conv``/``ConvTranspose``/
``Gemm``/``MatMul`` via shape inference) for one sample. Normalisation, activations, pooling
and element-wise ops are not counted; they are a few percent of a CNN's arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from costbench.core.artifacts import content_key, write_json_atomic
from costbench.harness.build.zoo.base import ModelBundle

FLOPS_METHOD_TORCH = "2 x MACs of Conv/Linear layers (forward hooks), one sample; other ops not counted"
FLOPS_METHOD_ONNX = "2 x MACs of Conv/ConvTranspose/Gemm/MatMul nodes (ONNX shape inference), one sample; other ops not counted"


def cached_model_flops(bundle: ModelBundle, cache_dir: Path) -> dict[str, Any]:
    """:func:`model_flops`, kept per source model: counting runs the torch model, and a case whose artifact
    is cached (an ONNX Runtime or OpenVINO case) should not have to import torch just for that."""
    key = content_key({"source": bundle.source_hash, "inputs": [(i.name, i.shape, i.dtype) for i in bundle.inputs],
                       "method": [FLOPS_METHOD_TORCH, FLOPS_METHOD_ONNX]})
    path = cache_dir / "model-flops" / f"{bundle.name}-{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # damaged: count again and replace it
    counts = model_flops(bundle)
    write_json_atomic(path, counts)
    return counts


def model_flops(bundle: ModelBundle) -> dict[str, Any]:
    """Parameter count and FLOPs for one sample, from the torch module or the ONNX graph."""
    if bundle.module_factory is not None:
        return torch_flops(bundle.torch_module(), bundle.evaluation.batch(1), bundle.inputs)
    if bundle.onnx_path is not None:
        return onnx_flops(bundle.onnx_path)
    return {}


def torch_flops(module, sample: dict[str, np.ndarray], inputs) -> dict[str, Any]:
    """Parameters and 2 x MACs of Conv/Linear layers, counted by hooks during one forward pass."""
    import torch
    from torch import nn

    macs = 0

    def conv_hook(layer, _inp, out):
        nonlocal macs
        kernel = int(np.prod(layer.kernel_size))
        macs += out.numel() * (layer.in_channels // layer.groups) * kernel

    def linear_hook(layer, _inp, out):
        nonlocal macs
        macs += out.numel() * layer.in_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(sample[i.name]) for i in inputs))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in module.parameters())
    return {"parameters": int(params), "flops": int(2 * macs), "flops_method": FLOPS_METHOD_TORCH}


def onnx_flops(path: Path) -> dict[str, Any]:
    """Parameters (initializer elements) and 2 x MACs of Conv/Gemm/MatMul nodes, via shape inference at batch 1."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    initializers = {t.name: tuple(t.dims) for t in model.graph.initializer}
    params = sum(int(np.prod(d)) for d in initializers.values())
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # count one sample
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot handle: report parameters only
        return {"parameters": params, "flops": None, "flops_method": "unknown (ONNX shape inference failed)"}
    shapes = dict(initializers)
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for node in model.graph.node:  # Constant nodes can hold weights too (e.g. after constant folding)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(numpy_helper.to_array(node.attribute[0].t).shape)
    macs, uncounted = 0, 0
    for node in model.graph.node:
        counter = _ONNX_MACS.get(node.op_type)
        if counter is None:
            continue
        n = counter(node, shapes)
        if n is None:
            uncounted += 1
        else:
            macs += n
    method = FLOPS_METHOD_ONNX + (f"; {uncounted} node(s) with unknown shapes not counted" if uncounted else "")
    return {"parameters": params, "flops": int(2 * macs), "flops_method": method}


def _conv_macs(node, shapes) -> int | None:
    out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
    if out is None or weight is None:
        return None
    # Weight (M, C/group, k...): each output element needs C/group * prod(k) MACs.
    return int(np.prod(out)) * int(np.prod(weight[1:]))


def _conv_transpose_macs(node, shapes) -> int | None:
    inp, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
    if inp is None or weight is None:
        return None
    # Weight (C, M/group, k...): each input element scatters into M/group * prod(k) outputs.
    return int(np.prod(inp)) * int(np.prod(weight[1:]))


def _gemm_macs(node, shapes) -> int | None:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if a is None or out is None:
        return None
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    return int(np.prod(out)) * (a[0] if trans_a else a[-1])


def _matmul_macs(node, shapes) -> int | None:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if a is None or out is None:
        return None
    return int(np.prod(out)) * a[-1]


_ONNX_MACS: dict[str, Callable[[Any, dict[str, tuple[int, ...]]], int | None]] = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs,
}
