"""Generative (decoder-only) language models: a Hugging Face folder as a bundle, and the zoo's random ones.

A causal-LM bundle points at a local Hugging Face folder (``config.json``, safetensors weights,
``tokenizer.json``); nothing is ever downloaded. Its evaluation and calibration sets are prompts of
:data:`PARITY_PROMPT_TOKENS` tokens cut from a text corpus with the model's own tokenizer: parity runs
them through one forward pass (the next-token distribution) and through greedy generation, and the
generate scenarios cut prompts of any length from the same token stream.

The zoo's models (``tiny-llama``, ``tiny-qwen``, ``llama-200m``) are built here from a fixed seed: a
Llama- or Qwen2-shaped config, weights drawn by ``transformers``' own initialisation under
``torch.manual_seed``, and a byte-level BPE tokenizer trained on the docstrings of a fixed list of
Python standard-library modules. **Their weights are random**: they are valid for speed, memory and
parity with fp32, never for task quality (a random model has no quality to keep).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from costbench.core.artifacts import InputSpec, content_key, write_json_atomic
from costbench.harness.build.zoo.base import SOURCE_HF, ModelBundle, SampleSet, ZooModel

PARITY_PROMPT_TOKENS = 32  # prompt length of the parity set (next-token distribution, greedy continuation)
EVAL_PROMPTS = 16
CALIBRATION_PROMPTS = 16
WEIGHT_FILES = ("model.safetensors",)
RANDOM_WEIGHTS_NOTE = ("random weights from a fixed seed: valid for speed, memory and parity with fp32, "
                       "never for task quality")
# The tokenizer's training text: the docstrings of these standard-library modules (sorted by name), so it
# ships with Python itself. A new Python release may change a docstring, and so the tokenizer and the model's
# content hash: the hash then keeps stale artifacts from being reused.
CORPUS_MODULES = ("argparse", "collections", "contextlib", "dataclasses", "functools", "inspect", "itertools",
                  "json", "logging", "pathlib", "statistics", "string", "textwrap", "typing")


def corpus_texts() -> list[str]:
    """The docstrings of :data:`CORPUS_MODULES` and their public members, in a fixed order."""
    import importlib

    texts: list[str] = []
    for module_name in CORPUS_MODULES:
        module = importlib.import_module(module_name)
        if module.__doc__:
            texts.append(module.__doc__)
        for name in sorted(vars(module)):
            if name.startswith("_"):
                continue
            doc = getattr(vars(module)[name], "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                texts.append(doc)
    return texts


def train_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """A byte-level BPE tokenizer (``tokenizers``) trained on :func:`corpus_texts`, saved for ``transformers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(str(out_dir))


def safetensors_parameters(folder: Path) -> tuple[int, int, int]:
    """(all parameters, those outside the embedding and output head, bytes a decoding step reads), from the
    safetensors headers. A step reads every weight but the embedding table (it looks up one row), so the bytes
    count the output head and leave the embedding out."""
    total = embedding = head = step_bytes = 0
    for name in _weight_files(folder):
        with open(name, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            count = int(np.prod(meta["shape"], dtype=np.int64))
            total += count
            if "embed_tokens" in key:
                embedding += count
                continue
            if key.startswith("lm_head"):
                head += count
            start, end = meta["data_offsets"]
            step_bytes += end - start
    return total, total - embedding - head, step_bytes


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights (a causal-LM folder needs config.json, "
                                "safetensors weights and tokenizer.json)")
    return files


def folder_hash(folder: Path, cache_dir: Path) -> str:
    """Content hash of a model folder's config, tokenizer and weights; remembered in the cache, keyed by the
    files' sizes and modification times, so a multi-GB folder is read once, not in every process."""
    files = [folder / "config.json", *_weight_files(folder), *sorted(folder.glob("tokenizer*.json"))]
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    memo = Path(cache_dir) / "folder-hashes" / content_key({"path": str(folder.resolve()), "files": stamp})
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):  # not hashed yet at these sizes and times, or a damaged memo: hash and rewrite
        pass
    h = hashlib.sha256()
    for f in files:
        if not f.exists():
            continue
        h.update(f.name.encode())
        with open(f, "rb") as stream:
            while block := stream.read(1 << 22):
                h.update(block)
    digest = h.hexdigest()[:24]
    write_json_atomic(memo, digest)
    return digest


def check_folder(name: str, folder: Path) -> None:
    """A clear error naming what a causal-LM folder lacks."""
    if not folder.is_dir():
        raise FileNotFoundError(f"model {name!r}: {folder} is not a folder (source = 'hf' takes a local Hugging Face "
                                "model folder; nothing is downloaded)")
    missing = [f for f in ("config.json", "tokenizer.json") if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"model {name!r}: {folder} has no {', '.join(missing)} (a causal-LM folder needs "
                                "config.json, safetensors weights and tokenizer.json)")
    _weight_files(folder)
    config = json.loads((folder / "config.json").read_text())
    if not any(a.endswith("ForCausalLM") for a in config.get("architectures") or []):
        raise ValueError(f"model {name!r}: {folder}/config.json names architectures {config.get('architectures')}, "
                         "not a *ForCausalLM (source = 'hf' takes decoder-only generative models)")


def prompt_tokens(folder: Path, count: int, length: int) -> np.ndarray:
    """``count`` prompts of ``length`` tokens: the corpus tokenized with the folder's tokenizer, as one
    stream, cut into consecutive windows; the stream repeats if it is too short."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    stream: list[int] = []
    for text in corpus_texts():
        stream += tok.encode(text).ids
        if len(stream) >= count * length:
            break
    if not stream:
        raise ValueError(f"{folder}: the tokenizer turned the corpus into no tokens")
    return np.resize(np.asarray(stream, dtype=np.int64), count * length).reshape(count, length)


def hf_bundle(name: str, folder: Path, source_hash: str, details: dict[str, Any]) -> ModelBundle:
    """A causal-LM bundle over a local Hugging Face folder, with prompts cut by its own tokenizer."""
    check_folder(name, folder)
    config = json.loads((folder / "config.json").read_text())
    prompts = prompt_tokens(folder, EVAL_PROMPTS + CALIBRATION_PROMPTS, PARITY_PROMPT_TOKENS)
    evaluation = SampleSet({"input_ids": prompts[:EVAL_PROMPTS]},
                           description=f"{EVAL_PROMPTS} prompts of {PARITY_PROMPT_TOKENS} tokens: Python standard-"
                                       "library docstrings, tokenized by the model's tokenizer")
    calibration = SampleSet({"input_ids": prompts[EVAL_PROMPTS:]},
                            description="the next prompts of the same token stream")
    parameters, body, step_bytes = safetensors_parameters(folder)
    return ModelBundle(
        name=name, task="causal_lm",
        inputs=[InputSpec("input_ids", (PARITY_PROMPT_TOKENS,), "int64")], outputs=["next_token_logits"],
        calibration=calibration, evaluation=evaluation, source_hash=source_hash, source_kind=SOURCE_HF,
        module_factory=lambda: next_token_module(folder), hf_path=folder,
        details={"architecture": (config.get("architectures") or ["?"])[0], "layers": config.get("num_hidden_layers"),
                 "hidden_size": config.get("hidden_size"), "vocab_size": config.get("vocab_size"),
                 "parameters": parameters, "flops": 2 * body, "decode_weight_bytes": step_bytes,
                 "flops_scope": "per generated token: 2 x the weights outside the embedding (attention over the "
                                "KV cache not counted)", **details},
    )


def next_token_module(folder: Path) -> Any:
    """The fp32 model as a torch module mapping ``input_ids`` to the last position's logits (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()

    class NextToken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, use_cache=False).logits[:, -1, :]

    return NextToken().eval()


class RandomCausalLM(ZooModel):
    """A decoder-only model of a given shape with random weights from a fixed seed, and its own tokenizer."""

    source_kind = SOURCE_HF
    architecture: ClassVar[str]  # "llama" or "qwen2"
    shape: ClassVar[dict[str, int]]
    tokenizer_vocab: ClassVar[int] = 512
    seed: ClassVar[int] = 0

    def folder_key(self) -> str:
        """What decides the folder's bytes: shape, seed, corpus (Python's version) and the libraries that write it."""
        from importlib.metadata import version

        return content_key({"name": self.name, "architecture": self.architecture, "shape": self.shape,
                            "tokenizer_vocab": self.tokenizer_vocab, "seed": self.seed, "python": sys.version_info[:2],
                            "corpus": CORPUS_MODULES, "torch": version("torch"),
                            "transformers": version("transformers"), "tokenizers": version("tokenizers")})

    def load(self, cache_dir: Path) -> ModelBundle:
        key = self.folder_key()
        folder = Path(cache_dir) / "zoo" / f"{self.name}-{key}"
        if not (folder / "config.json").exists():
            self._build(folder)
        return hf_bundle(self.name, folder, f"{self.name}-{key}",
                         {"weights": RANDOM_WEIGHTS_NOTE, "seed": self.seed, "hf_path": str(folder)})

    def _config(self) -> Any:
        import transformers

        common = dict(bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, **self.shape)
        if self.architecture == "llama":
            return transformers.LlamaConfig(**common)
        if self.architecture == "qwen2":
            return transformers.Qwen2Config(**common)
        raise ValueError(f"zoo model {self.name!r}: unknown architecture {self.architecture!r}")

    def _build(self, folder: Path) -> None:
        """Tokenizer and seeded weights into a temp folder beside ``folder``, then renamed into place."""
        import torch
        import transformers

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            train_tokenizer(self.tokenizer_vocab, tmp)
            torch.manual_seed(self.seed)
            model = transformers.AutoModelForCausalLM.from_config(self._config(), dtype=torch.float32)
            model.generation_config.do_sample = False
            model.save_pretrained(str(tmp))
            write_json_atomic(tmp / "costbench-zoo.json", {"weights": RANDOM_WEIGHTS_NOTE, "seed": self.seed,
                                                           "architecture": self.architecture, "shape": self.shape})
            try:
                os.replace(tmp, folder)
            except OSError:  # another process built it first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# The test models' shape: every linear takes 128 or 256 inputs, so int4 groups of 32..128 divide them all.
TINY_SHAPE = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


class TinyLlama(RandomCausalLM):
    """For tests: a 2-layer Llama-shaped model (grouped-query attention), 512-token vocabulary."""

    name = "tiny-llama"
    description = "tiny Llama-shaped decoder (2 layers, hidden 128, GQA 4/2 heads), " + RANDOM_WEIGHTS_NOTE
    architecture = "llama"
    shape = TINY_SHAPE


class TinyQwen(RandomCausalLM):
    """For tests: a 2-layer Qwen2-shaped model (biased q/k/v projections), 512-token vocabulary."""

    name = "tiny-qwen"
    description = "tiny Qwen2-shaped decoder (2 layers, hidden 128, GQA 4/2 heads), " + RANDOM_WEIGHTS_NOTE
    architecture = "qwen2"
    shape = TINY_SHAPE


class Llama200M(RandomCausalLM):
    """Realistic shape at a size a 2-vCPU machine generates with in seconds: about 200 M parameters.

    Llama layout: 12 layers, hidden 1024, 16 query and 4 key/value heads (head size 64), SwiGLU MLP of 2816,
    a 32,000-row vocabulary (the tokenizer uses its first 4,096 ids; the embedding and output head keep
    the size a real vocabulary costs), untied output head.
    """

    name = "llama-200m"
    description = ("Llama-shaped decoder of about 200 M parameters (12 layers, hidden 1024, GQA 16/4 heads, "
                   "32k vocabulary), " + RANDOM_WEIGHTS_NOTE)
    architecture = "llama"
    tokenizer_vocab = 4096
    shape = {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 12,
             "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 2048}
