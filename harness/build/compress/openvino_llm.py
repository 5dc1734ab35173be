"""OpenVINO GenAI folders (:data:`FORMAT_OPENVINO_LLM`) built from a causal-LM bundle's Hugging Face folder.

The folder is what ``openvino_genai.LLMPipeline`` loads: a stateful ``openvino_model.xml``/``.bin``, the
tokenizer and detokenizer as OpenVINO models (``openvino_tokenizer.xml``, ``openvino_detokenizer.xml``, from
``openvino_tokenizers.convert_tokenizer(..., with_detokenizer=True)``) and the folder's config files.

**Why not optimum-intel.** ``optimum-cli export openvino`` is the usual exporter, but no optimum-intel release
installs beside transformers 5.25.0: optimum-intel 2.2.0 (the newest) requires ``transformers<5.6,>=4.51``, and
the only release pip will take (1.15.0) predates transformers 5 altogether. So this module does what its
exporter does, with OpenVINO's own converter, and nothing else:

1. the model (fp32 weights, SDPA attention) is traced by ``openvino.convert_model`` through a wrapper whose
   signature is optimum-intel's: ``input_ids``, ``attention_mask``, ``position_ids`` and
   ``past_key_values.<layer>.key/value`` in, ``logits`` and ``present.<layer>.key/value`` out;
2. a ``beam_idx`` input gathers the past KV cache along the batch axis (what ``LLMPipeline`` feeds, one index
   per sequence);
3. ``openvino._offline_transformations.apply_make_stateful_transformation`` turns every past/present pair into
   an internal state, initialised to an empty cache of the batch's size;
4. ``openvino.save_model(..., compress_to_fp16=False)``: the weights stay fp32 (optimum-intel would also
   compress a model above 1 B parameters to int8 by default; nothing here does).

The fp32 folder is what the ``int8-weight-only``/``int4-weight-only`` recipes compress with NNCF
(:func:`compress_folder`), reusing it through the artifact cache.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.compress.common import library_version
from costbench.harness.build.zoo.base import ModelBundle

MODEL_XML = "openvino_model.xml"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
# Bumped when what this module writes changes: part of every OpenVINO LLM artifact's cache key.
EXPORT_VERSION = 1
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json")


def openvino_llm_material() -> dict[str, Any]:
    """What decides an OpenVINO LLM folder's bytes: the exporter's libraries and this module's version."""
    return {"openvino_llm_export": EXPORT_VERSION, "openvino": library_version("openvino"),
            "openvino_tokenizers": library_version("openvino-tokenizers"), "torch": library_version("torch"),
            "transformers": library_version("transformers")}


def _architecture(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return (config.get("architectures") or ["?"])[0]


def export_openvino_llm(bundle: ModelBundle, out_dir: Path) -> dict[str, Any]:
    """Write the stateful fp32 OpenVINO model, tokenizer, detokenizer and config files of ``bundle`` into
    ``out_dir``; returns the provenance."""
    if bundle.hf_path is None:
        raise RecipeNotApplicable(f"model {bundle.name!r} has no Hugging Face folder to export to OpenVINO")
    src = Path(bundle.hf_path)
    arch = _architecture(src)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise RecipeNotApplicable(f"OpenVINO LLM export: architecture {arch!r} of {bundle.name!r} is not one this "
                                  f"exporter has been checked on {SUPPORTED_ARCHITECTURES}")
    import openvino as ov
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, attn_implementation="sdpa").eval()
    ov_model = _convert(model, ov, torch)
    ov.save_model(ov_model, str(out_dir / MODEL_XML), compress_to_fp16=False)
    del ov_model, model
    tokenizer = _tokenizers(src, out_dir, ov)
    for name in _CONFIG_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, out_dir / name)
    return {"exporter": "openvino.convert_model (TorchScript trace of the Transformers model, SDPA attention), "
                        "beam_idx cache reorder and apply_make_stateful_transformation, as optimum-intel's exporter "
                        "does (optimum-intel is not installable beside transformers 5.25)",
            "stateful": True, "weights": "fp32 (save_model compress_to_fp16=False; no default int8 compression)",
            "openvino": ov.__version__, "torch": torch.__version__, "transformers": library_version("transformers"),
            **tokenizer, "architecture": arch}


def _convert(model: Any, ov: Any, torch: Any) -> Any:
    """The stateful OpenVINO model of a Transformers causal LM (see the module docstring)."""
    from transformers.cache_utils import DynamicCache

    cfg = model.config
    layers = cfg.num_hidden_layers
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class WithCache(torch.nn.Module):
        """input_ids, attention_mask, position_ids, past k/v per layer -> logits, present k/v per layer."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=cfg)
            for i in range(layers):  # filled directly: DynamicCache.update would concatenate onto an empty tensor
                layer = cache.layers[i]
                layer.device = past[2 * i].device
                layer.keys, layer.values, layer.is_initialized = past[2 * i], past[2 * i + 1], True
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present: list[Any] = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    past_len, new_len = 2, 3  # a non-empty past, so the trace keeps the cache's concatenation
    example = (torch.ones(1, new_len, dtype=torch.int64), torch.ones(1, past_len + new_len, dtype=torch.int64),
               torch.arange(past_len, past_len + new_len, dtype=torch.int64).view(1, -1),
               *(torch.zeros(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)))
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    shapes = [ov.PartialShape([-1, -1])] * 3 + [ov.PartialShape([-1, kv_heads, -1, head_dim])] * (2 * layers)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # the trace's warnings name Python branches on shapes; the converted model is checked against torch
        # (tests/backends/test_openvino_genai.py) on prompts of other lengths and on decoding steps
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(WithCache().eval(), example_input=example, input=shapes)
    for port, name in zip(ov_model.inputs, ["input_ids", "attention_mask", "position_ids", *past_names]):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *present_names]):
        port.get_tensor().set_names({name})
    _fuse_cache_reorder(ov_model, past_names, ov)
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(ov_model, dict(zip(past_names, present_names)))
    _init_states_by_batch(ov_model, ov)
    return ov_model


def _fuse_cache_reorder(ov_model: Any, past_names: list[str], ov: Any) -> None:
    """A ``beam_idx`` input (int32, one per sequence) that gathers every past tensor along the batch axis."""
    import openvino.opset13 as ops

    batch = ov_model.input("input_ids").get_partial_shape()[0]
    beam_idx = ops.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for name in past_names:
        port = ov_model.input(name)
        consumers = list(port.get_target_inputs())
        gathered = ops.gather(port, beam_idx, ops.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()


def _init_states_by_batch(ov_model: Any, ov: Any) -> None:
    """Every state starts as an empty cache (sequence length 0) with the batch size of ``input_ids``."""
    import numpy as np
    import openvino.opset13 as ops

    batch = ops.gather(ops.shape_of(ov_model.input("input_ids"), output_type="i64"), ops.constant([0]),
                       ops.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [ops.constant(np.array([d.get_min_length()], dtype=np.int64))
                           for d in op.get_output_partial_shape(0)]
        dims[0] = batch
        zeros = ops.broadcast(ops.constant(0.0, dtype=op.get_output_element_type(0)), ops.concat(dims, axis=0))
        op.set_arguments([zeros])
    ov_model.validate_nodes_and_infer_types()


def _tokenizers(src: Path, out_dir: Path, ov: Any) -> dict[str, Any]:
    """The folder's tokenizer as OpenVINO tokenizer and detokenizer models."""
    import openvino_tokenizers
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(src))
    tokenizer, detokenizer = openvino_tokenizers.convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    ov.save_model(tokenizer, str(out_dir / TOKENIZER_XML))
    ov.save_model(detokenizer, str(out_dir / DETOKENIZER_XML))
    return {"tokenizer": "openvino_tokenizers.convert_tokenizer(with_detokenizer=True)",
            "openvino_tokenizers": library_version("openvino-tokenizers")}


def copy_folder_except_weights(src: Path, out_dir: Path) -> list[str]:
    """Copy an OpenVINO LLM folder's tokenizer, detokenizer and config files (not the model) into ``out_dir``."""
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in (MODEL_XML, MODEL_XML.replace(".xml", ".bin"), "artifact.json"):
            shutil.copyfile(f, out_dir / f.name)
            copied.append(f.name)
    return copied


def weight_bytes(ov_model: Any) -> tuple[int, int]:
    """(all constant bytes, bytes a decoding step reads): the second leaves out the token-embedding table, of
    which a step reads one row (a table the output head also reads, a tied head, is not told apart here)."""
    total = step = 0
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        size = int(op.get_byte_size())
        total += size
        if "embed_tokens" not in op.get_friendly_name():
            step += size
    return total, step


def compress_folder(fp32_folder: Path, out_dir: Path, bits: int, group_size: int | None,
                    ratio: float) -> dict[str, Any]:
    """NNCF ``compress_weights`` on the fp32 folder's model, written with the folder's tokenizer and configs.

    int8: ``CompressWeightsMode.INT8_SYM``, one scale per output channel, every MatMul and the embedding table
    (NNCF's int8 modes compress all of them). int4: ``CompressWeightsMode.INT4_SYM`` with one scale per
    ``group_size`` input channels; ``ratio`` is NNCF's: the share of those layers put in int4, chosen data-free
    by weight-quantization error, the rest (and, as NNCF always does in int4 modes, the embedding table and the
    output head) in its backup precision, int8 asymmetric per channel.
    """
    import nncf
    import openvino as ov

    config = json.loads((fp32_folder / "config.json").read_text())
    if group_size is not None:
        widths = {k: config.get(k) for k in ("hidden_size", "intermediate_size") if config.get(k)}
        bad = {k: w for k, w in widths.items() if w % group_size}
        if bad:
            raise RecipeNotApplicable(f"NNCF int4: group_size={group_size} does not divide the input width of the "
                                      f"model's linear layers {bad}")
    model = ov.Core().read_model(str(fp32_folder / MODEL_XML))
    fp32_bytes = weight_bytes(model)
    if bits == 8:
        mode, kwargs = nncf.CompressWeightsMode.INT8_SYM, {}
        described = {"mode": "INT8_SYM", "granularity": "per output channel", "symmetric": True,
                     "compressed": "every MatMul weight (output head included) and the embedding table"}
    elif bits == 4:
        mode = nncf.CompressWeightsMode.INT4_SYM
        kwargs = {"group_size": group_size, "ratio": ratio, "backup_mode": nncf.BackupMode.INT8_ASYM}
        described = {"mode": "INT4_SYM", "granularity": f"per group of {group_size} input channels",
                     "symmetric": True, "group_size": group_size, "ratio": ratio,
                     "ratio_semantics": "NNCF's: the share of the MatMul weights in int4, picked data-free by "
                                        "weight-quantization error; the rest in the backup mode",
                     "backup_mode": "INT8_ASYM (per output channel)",
                     "compressed": "MatMul weights int4 (ratio of them), embedding table and output head in the "
                                   "backup mode (NNCF keeps the first and last layers out of int4 by default)"}
    else:
        raise ValueError(f"NNCF weight compression: bits must be 8 or 4, got {bits}")
    compressed = nncf.compress_weights(model, mode=mode, **kwargs)
    total, step = weight_bytes(compressed)
    ov.save_model(compressed, str(out_dir / MODEL_XML), compress_to_fp16=False)
    files = copy_folder_except_weights(fp32_folder, out_dir)
    return {"method": f"NNCF compress_weights ({described['mode']})", "library": "nncf", "bits": bits, **described,
            "activations": "fp32 (weight-only; the CPU plugin may quantize activations dynamically at run time)",
            "nncf": nncf.__version__, "openvino": ov.__version__, "weight_bytes": total,
            "fp32_weight_bytes": fp32_bytes[0], "decode_weight_bytes": step, "files": files}
