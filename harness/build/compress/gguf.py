"""GGUF files (:data:`FORMAT_GGUF`) built from a causal-LM bundle's Hugging Face folder, for llama.cpp.

- ``fp32``: our own conversion, every tensor kept in F32, written with the ``gguf`` package's ``GGUFWriter``
  (Llama and Qwen2 layouts). Tensor names and metadata keys are llama.cpp's. Llama's q/k projection rows are
  permuted because llama.cpp applies rotary embeddings to adjacent pairs (its ``LLAMA_ROPE_TYPE_NORM``), where
  Transformers rotates the two halves of each head. Qwen2 uses the halves layout in llama.cpp too (NEOX), so it
  is written as it is, q/k/v biases included.
- ``bf16``, ``int8`` (Q8_0) and ``int4`` (Q4_K_M): llama.cpp's own ``llama_model_quantize`` (llama-cpp-python's
  low-level binding) from the cached F32 file, so the bits are llama.cpp's. Q4_K_M mixes types by tensor (Q4_K,
  with Q6_K for the output head and part of ``attn_v``/``ffn_down``), and a tensor whose rows are not a multiple
  of 256 falls back to another type (Q5_0, Q8_0...). The provenance therefore lists the types that the written
  file really holds, read back with ``GGUFReader``, with each type's block layout.

The tokenizer metadata (``gpt2`` byte-level BPE: tokens, types, merges, BOS/EOS) is what llama.cpp needs to load
the file. costbench feeds token ids, so llama.cpp's tokenizer is never used to measure anything.
``decode_weight_bytes`` counts every tensor's bytes in the file but the token embedding, of which a step reads one
row (where the output head is tied to the embedding, the embedding is read in full every step and counts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.zoo.base import SOURCE_HF, ModelBundle

GGUF_FILE = "model.gguf"
# Bumped when what this module writes changes: part of every GGUF artifact's cache key.
BUILD_VERSION = 1
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# llama.cpp's file types (enum llama_ftype) for the recipes that quantize the F32 file.
FILE_TYPES = {"bf16": ("MOSTLY_BF16", 32), "q8_0": ("MOSTLY_Q8_0", 7), "q4_k_m": ("MOSTLY_Q4_K_M", 15)}
# What ggml's CPU matmul does with the activations for each weight type (its vec_dot_type): they are converted to
# this type per row before the dot products, so a quantized GGUF model also computes with rounded activations.
ACTIVATIONS = {
    "bf16": "fp32 between ops; each matmul rounds its activations to bf16 (ggml's vec_dot_type for BF16)",
    "q8_0": "fp32 between ops; each matmul quantizes its activations to Q8_0 (int8 per block of 32, ggml's "
            "vec_dot_type for Q8_0) and computes in int8",
    "q4_k_m": "fp32 between ops; each matmul quantizes its activations to Q8_K (int8 per block of 256) or Q8_0 for "
              "its weights' type (ggml's vec_dot_type) and computes in integers",
}
# What each ggml type stores, from ggml's block definitions (ggml-common.h): bits per weight and block layout.
BLOCK_LAYOUTS = {
    "F32": "32-bit floats, no blocks",
    "F16": "16-bit floats, no blocks",
    "BF16": "bfloat16, no blocks",
    "Q8_0": "blocks of 32 weights: 32 int8 values and one fp16 scale (8.5 bits a weight)",
    "Q4_0": "blocks of 32 weights: 32 int4 values and one fp16 scale (4.5 bits a weight)",
    "Q4_1": "blocks of 32 weights: 32 int4 values, an fp16 scale and an fp16 min (5 bits a weight)",
    "Q5_0": "blocks of 32 weights: 32 5-bit values and one fp16 scale (5.5 bits a weight)",
    "Q5_1": "blocks of 32 weights: 32 5-bit values, an fp16 scale and an fp16 min (6 bits a weight)",
    "Q4_K": "super-blocks of 256 weights in 8 sub-blocks of 32: 4-bit values, a 6-bit scale and min per sub-block, "
            "an fp16 scale and min per super-block (4.5 bits a weight)",
    "Q5_K": "super-blocks of 256 weights in 8 sub-blocks of 32: 5-bit values, a 6-bit scale and min per sub-block, "
            "an fp16 scale and min per super-block (5.5 bits a weight)",
    "Q6_K": "super-blocks of 256 weights in 16 sub-blocks of 16: 6-bit values, an 8-bit scale per sub-block, an "
            "fp16 scale per super-block (6.5625 bits a weight)",
}


def gguf_material(bundle: ModelBundle) -> dict[str, Any]:
    """What decides a GGUF file's bytes beyond the recipe's config: this module's version, the gguf package's and
    llama-cpp-python's (empty for a model that is not a Hugging Face folder)."""
    if bundle.source_kind != SOURCE_HF:
        return {}
    return {"gguf_build": {"version": BUILD_VERSION, "gguf": library_version("gguf"),
                           "llama_cpp_python": library_version("llama_cpp_python")}}


def _permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection reordered from Transformers' rotate-half layout (the first and second half of each
    head pair up) to llama.cpp's adjacent pairs (0,1), (2,3)..."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape))


def _hf_config(folder: Path) -> tuple[dict[str, Any], str]:
    """The folder's config.json and its llama.cpp architecture; not applicable for a layout we do not convert."""
    config = json.loads((folder / "config.json").read_text())
    names = config.get("architectures") or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        raise RecipeNotApplicable(f"GGUF conversion: architectures {names} are none of "
                                  f"{', '.join(ARCHITECTURES)}, the layouts costbench converts for llama.cpp")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise RecipeNotApplicable(f"GGUF conversion: rope_type {rope_type!r} (scaled rotary embeddings) is not "
                                  "converted; only the default rotary embedding is")
    if config.get("mlp_bias"):
        raise RecipeNotApplicable("GGUF conversion: mlp_bias = true is not converted (llama.cpp's llama layout has "
                                  "no MLP biases)")
    return config, arch


def _tokenizer(folder: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens (one per embedding row: ids the tokenizer lacks become unused ``[PADi]``), their types, and the BPE
    merges, from tokenizer.json."""
    import gguf

    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise RecipeNotApplicable(f"GGUF conversion: {path} is a {model.get('type')!r} tokenizer; only BPE is "
                                  "converted")
    by_id = {int(i): tok for tok, i in model["vocab"].items()}
    control = {int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
    for t in spec.get("added_tokens", []):
        by_id[int(t["id"])] = t["content"]
    if by_id and max(by_id) >= vocab_size:
        raise ValueError(f"GGUF conversion: {path} has token id {max(by_id)}, beyond the model's vocab_size "
                         f"{vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(int(gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def _tensor_names(arch: str, layers: int) -> dict[str, str]:
    """Transformers' parameter names to llama.cpp's tensor names (biases for Qwen2's, and any Llama's, q/k/v/o)."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight"}
    for proj, short in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
        per_layer[f"self_attn.{proj}.weight"] = f"{short}.weight"
        per_layer[f"self_attn.{proj}.bias"] = f"{short}.bias"
    for i in range(layers):
        names.update({f"model.layers.{i}.{hf}": f"blk.{i}.{gg}" for hf, gg in per_layer.items()})
    return names


def convert_f32(bundle: ModelBundle, out_path: Path) -> dict[str, Any]:
    """Write ``bundle.hf_path`` as an F32 GGUF file at ``out_path``; return the provenance."""
    import gguf
    from safetensors.numpy import load_file

    if bundle.hf_path is None:
        raise ValueError(f"model {bundle.name!r} has no Hugging Face folder to convert to GGUF")
    folder = Path(bundle.hf_path)
    config, arch = _hf_config(folder)
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or
                                                                config["num_attention_heads"])
    hidden, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rope = config.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    tokens, types, merges = _tokenizer(folder, vocab)

    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_name(bundle.name)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_vocab_size(vocab)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if config.get("bos_token_id") is not None:
        writer.add_bos_token_id(int(config["bos_token_id"]))
    eos = config.get("eos_token_id")
    if eos is not None:
        writer.add_eos_token_id(int(eos[0] if isinstance(eos, list) else eos))
    writer.add_add_bos_token(False)

    names = _tensor_names(arch, layers)
    weights: dict[str, np.ndarray] = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise RecipeNotApplicable(f"GGUF conversion: {folder} has tensors with no llama.cpp {arch} name: "
                                  f"{', '.join(unknown[:5])}")
    for hf_name, tensor in weights.items():
        data = np.ascontiguousarray(tensor, dtype=np.float32)
        if arch == "llama" and ".self_attn.q_proj." in hf_name:
            data = _permute_rotary(data, heads)
        elif arch == "llama" and ".self_attn.k_proj." in hf_name:
            data = _permute_rotary(data, kv_heads)
        writer.add_tensor(names[hf_name], data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"converter": f"costbench's own HF -> GGUF conversion (gguf {library_version('gguf')} GGUFWriter), "
                         f"llama.cpp architecture {arch!r}" + (", q/k rows permuted for llama.cpp's rotary pairs"
                                                                if arch == "llama" else ""),
            "gguf_type": "F32", "tied_output_head": "lm_head.weight" not in weights, **read_back(out_path)}


def quantize(f32_path: Path, out_path: Path, kind: str) -> dict[str, Any]:
    """``llama_model_quantize`` from the F32 file to ``kind`` (a key of :data:`FILE_TYPES`); return the provenance."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RuntimeError(f"GGUF quantization runs llama.cpp's own quantizer: pip install llama-cpp-python ({exc})") \
            from exc
    name, ftype = FILE_TYPES[kind]
    if getattr(llama_cpp, f"LLAMA_FTYPE_{name}") != ftype:
        raise RuntimeError(f"llama-cpp-python {llama_cpp.__version__}: LLAMA_FTYPE_{name} is not {ftype}; "
                           "this module's file types need updating")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    code = llama_cpp.llama_model_quantize(str(f32_path).encode(), str(out_path).encode(), params)
    if code != 0 or not out_path.exists():
        raise RuntimeError(f"llama.cpp's llama_model_quantize({f32_path} -> {name}) failed with code {code}")
    written = read_back(out_path)
    provenance = {"quantizer": f"llama.cpp llama_model_quantize (llama-cpp-python {llama_cpp.__version__}), from the "
                               "F32 GGUF file", "gguf_file_type": f"LLAMA_FTYPE_{name}",
                  "activations": ACTIVATIONS[kind], **written}
    intended = {"q8_0": {"Q8_0"}, "q4_k_m": {"Q4_K", "Q6_K"}}.get(kind)
    fallback = {k: n for k, n in written["tensor_types"].items() if intended and k not in intended | {"F32"}}
    if fallback:
        provenance["fallback"] = (f"{sum(fallback.values())} tensor(s) stored as {', '.join(sorted(fallback))}: "
                                  "llama.cpp's fallback for rows whose width is not a multiple of the type's block")
    return provenance


def read_back(path: Path) -> dict[str, Any]:
    """What the file holds: tensors by ggml type with each type's block layout, and the bytes a decoding step reads."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    names = {t.name for t in reader.tensors}
    step = 0
    for t in reader.tensors:
        kind = t.tensor_type.name
        counts[kind] = counts.get(kind, 0) + 1
        sizes[kind] = sizes.get(kind, 0) + int(t.n_bytes)
        # a step looks up one row of the embedding, unless the head is tied to it and reads it all
        if t.name != "token_embd.weight" or "output.weight" not in names:
            step += int(t.n_bytes)
    return {"tensor_types": counts, "tensor_type_bytes": sizes,
            "block_layouts": {k: BLOCK_LAYOUTS.get(k, "see ggml-common.h") for k in counts},
            "decode_weight_bytes": step,
            "decode_weight_bytes_scope": "every tensor of the GGUF file but token_embd.weight (one row read a step)"
                                         if "output.weight" in names else
                                         "every tensor of the GGUF file (the output head is tied to the embedding)",
            "llama_cpp_python": library_version("llama_cpp_python"), "gguf": library_version("gguf")}
