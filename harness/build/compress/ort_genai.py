"""ONNX Runtime GenAI folders (:data:`FORMAT_ORT_GENAI`) built from a causal-LM bundle's Hugging Face folder.

ONNX Runtime GenAI's own model builder (``python -m onnxruntime_genai.models.builder``) turns the bundle's local
folder into ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json`` and the tokenizer files, for the CPU
execution provider. It runs in a child process (it imports torch and Transformers and holds the whole model), with
the Hugging Face hub switched off: the input is the bundle's ``hf_path`` and nothing is downloaded.

- ``fp32``: ``-p fp32``, every weight kept in fp32 (the builder fuses q/k/v into one MatMul and uses ONNX
  Runtime's GroupQueryAttention with its rotary cos/sin caches).
- ``int4``/``int8``: ``-p int4``/``-p int8``, every MatMul's weight (the output head included) quantized by
  ONNX Runtime's ``MatMulNBitsQuantizer`` to ``MatMulNBits`` (4 or 8 bits, symmetric, one fp32 scale per block
  of ``block_size`` input channels); the embedding table stays fp32. ``accuracy_level`` = 4, the builder's CPU
  default, lets MLAS quantize each MatMul's fp32 activations to int8 per block on the fly and compute in int8:
  that is how ONNX Runtime GenAI runs a quantized model on a CPU, and what the provenance says.

The provenance carries ``decode_weight_bytes``: the bytes of the initializers a decoding step reads, i.e. every
initializer but the lookup tables of which a step reads one row (the token embedding, the rotary cos/sin caches;
a table that a MatMul also reads, like a tied output head, is counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.zoo.base import SOURCE_HF, ModelBundle

GENAI_CONFIG = "genai_config.json"
BUILDER_MODULE = "onnxruntime_genai.models.builder"
# Bumped when what this module asks of the builder changes: part of every ORT GenAI artifact's cache key.
BUILD_VERSION = 1
EXECUTION_PROVIDER = "cpu"
ACCURACY_LEVEL = 4  # MatMulNBits computes with int8-quantized activations (the builder's CPU default)
INT8_BLOCK_SIZE = 128  # int8 has no group size option: 128 input channels per scale (3% of the weight bytes)
BLOCK_SIZES = (16, 32, 64, 128, 256)  # what the builder's MatMulNBits quantization accepts
PRECISIONS = ("fp32", "int8", "int4")
# Inputs of ONNX Runtime's attention/rotary contrib ops that are position lookup tables (one row read per token).
_ROTARY_TABLE_INPUTS = {"GroupQueryAttention": (7, 8), "RotaryEmbedding": (2, 3)}


def ort_genai_material(bundle: ModelBundle) -> dict[str, Any]:
    """What decides an ORT GenAI folder's bytes beyond the recipe's config: the builder's and its libraries'
    versions and the options this module passes (empty for a model that is not a Hugging Face folder)."""
    if bundle.source_kind != SOURCE_HF:
        return {}
    return {"ort_genai_build": {
        "version": BUILD_VERSION, "execution_provider": EXECUTION_PROVIDER, "accuracy_level": ACCURACY_LEVEL,
        "int8_block_size": INT8_BLOCK_SIZE,
        **{dist: library_version(dist) for dist in ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir",
                                                    "transformers", "torch")}}}


def builder_options(precision: str, block_size: int | None = None) -> dict[str, str]:
    """The builder's ``--extra_options`` for ``precision`` (block size and accuracy level for the quantized ones)."""
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX Runtime GenAI build: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    options = {"hf_token": "false", "hf_remote": "false"}
    if precision == "fp32":
        return options
    block = INT8_BLOCK_SIZE if block_size is None else block_size
    if block not in BLOCK_SIZES:
        raise RecipeNotApplicable(f"ONNX Runtime GenAI's MatMulNBits takes a block size in "
                                  f"{', '.join(map(str, BLOCK_SIZES))}; group_size={block} is not one")
    return {**options, "block_size": str(block), "accuracy_level": str(ACCURACY_LEVEL), "is_symmetric": "true"}


def build_ort_genai(bundle: ModelBundle, out_dir: Path, precision: str, block_size: int | None = None,
                    timeout_s: float = 3600) -> dict[str, Any]:
    """Run the model builder on ``bundle.hf_path`` into ``out_dir``; return the provenance (builder command and
    options, versions, quantized MatMuls, ``decode_weight_bytes``)."""
    if bundle.hf_path is None:
        raise ValueError(f"model {bundle.name!r} has no Hugging Face folder to build an ONNX Runtime GenAI model from")
    if library_version("onnxruntime-genai") == "not installed":
        raise RuntimeError("the ONNX Runtime GenAI build needs onnxruntime-genai's model builder: "
                           "pip install onnxruntime-genai onnx-ir")
    options = builder_options(precision, block_size)
    with tempfile.TemporaryDirectory(prefix="ort-genai-build-") as work:
        command = [sys.executable, "-m", BUILDER_MODULE, "-i", str(bundle.hf_path), "-o", str(out_dir),
                   "-p", precision, "-e", EXECUTION_PROVIDER, "-c", str(Path(work) / "cache"),
                   "--extra_options", *(f"{k}={v}" for k, v in options.items())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s)
    log = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        tail = "\n".join(log.splitlines()[-15:])
        if "not currently supported" in log or "is not supported" in log:
            raise RecipeNotApplicable(f"ONNX Runtime GenAI's model builder does not support model {bundle.name!r}: "
                                      f"{tail.splitlines()[-1] if tail else 'no message'}")
        raise RuntimeError(f"ONNX Runtime GenAI's model builder failed on {bundle.hf_path} (-p {precision}, exit "
                           f"{proc.returncode}):\n{tail}")
    missing = [n for n in (GENAI_CONFIG, "model.onnx") if not (out_dir / n).exists()]
    if missing:
        raise RuntimeError(f"ONNX Runtime GenAI's model builder exited 0 but wrote no {', '.join(missing)} in "
                           f"{out_dir}; its output ended with:\n" + "\n".join(log.splitlines()[-10:]))
    weights = weight_bytes(out_dir / "model.onnx")
    genai = json.loads((out_dir / GENAI_CONFIG).read_text())
    quantized = {"fp32": "nothing (fp32 weights)",
                 "int8": f"every MatMul's weight, the output head included ({weights['matmul_nbits']} MatMulNBits); "
                         "embedding kept fp32",
                 "int4": f"every MatMul's weight, the output head included ({weights['matmul_nbits']} MatMulNBits); "
                         "embedding kept fp32"}[precision]
    provenance: dict[str, Any] = {
        "builder": f"python -m {BUILDER_MODULE} -p {precision} -e {EXECUTION_PROVIDER} (from the local Hugging Face "
                   "folder, hub offline)",
        "builder_options": options, "quantized": quantized,
        "onnxruntime_genai": library_version("onnxruntime-genai"), "onnxruntime": library_version("onnxruntime"),
        "onnx_ir": library_version("onnx-ir"), "transformers": library_version("transformers"),
        "model_type": genai.get("model", {}).get("type"),
        "context_length": genai.get("model", {}).get("context_length"),
        "decode_weight_bytes": weights["step_bytes"],
        "decode_weight_bytes_scope": "every initializer of model.onnx but the lookup tables a step reads one row of ("
                                     + ", ".join(weights["lookup_tables"]) + ")",
        "files": sorted(p.name for p in out_dir.iterdir() if p.is_file()),
    }
    if precision != "fp32":
        bits = 8 if precision == "int8" else 4
        block = int(options["block_size"])
        provenance.update({
            "method": f"ONNX Runtime MatMulNBits ({bits}-bit weights, the model builder's RTN quantizer)",
            "granularity": f"per block of {block} input channels", "block_size": block, "symmetric": True,
            "accuracy_level": ACCURACY_LEVEL,
            "activations": "fp32 between ops; each MatMulNBits quantizes its input to int8 per block and computes in "
                           "int8 (accuracy_level 4, the builder's CPU default)"})
    return provenance


def weight_bytes(model_path: Path) -> dict[str, Any]:
    """Bytes of ``model_path``'s initializers: all of them, and those a decoding step reads (``step_bytes``: all but
    lookup tables of which each token reads one row), with the lookup tables named and the MatMulNBits counted."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    sizes = {t.name: _tensor_bytes(t) for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    lookup: set[str] = set()
    other_use: set[str] = set()
    for node in graph.node:
        tables = set()
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in sizes:
            tables.add(node.input[0])  # an embedding table indexed by token ids (or a position)
        for index in _ROTARY_TABLE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] in sizes:
                tables.add(node.input[index])
        lookup |= tables
        other_use |= {name for name in node.input if name in sizes and name not in tables}
    lookup -= other_use  # a table that something else reads in full (a tied output head) is read every step
    if "input_ids" not in inputs:
        raise ValueError(f"{model_path}: no 'input_ids' input; not a decoder built by ONNX Runtime GenAI's builder")
    return {"total_bytes": sum(sizes.values()),
            "step_bytes": sum(size for name, size in sizes.items() if name not in lookup),
            "lookup_tables": sorted(lookup),
            "matmul_nbits": sum(1 for n in graph.node if n.op_type == "MatMulNBits")}


def _tensor_bytes(tensor: Any) -> int:
    """An initializer's bytes: its external data's length, else its element count times its element size."""
    import numpy as np
    import onnx

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
