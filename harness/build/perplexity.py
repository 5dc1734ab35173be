"""Perplexity of a causal LM on a user's own text: exp(mean negative log-likelihood of each next token).

Only for a model with real weights (``source = 'hf'``): the zoo's causal LMs have random weights, so their
perplexity says nothing and is not computed (the bundle's details say why). The text is tokenized with the
model's own ``tokenizer.json`` and its first ``perplexity_tokens`` + 1 tokens kept; token ``i`` (1..N) is scored
from the ``min(i, window - 1)`` tokens before it, ``window`` being the model's context (a sliding window of
stride 1: every backend computes the same quantity, however it gets its logits).

- A session with logits at every position (:meth:`GenerativeSession.position_logits`) scores a whole window
  in one forward pass.
- Any other generative session scores one prefix per token through ``run`` (the last position's logits), exact
  for any backend and quadratic in the tokens, hence the cap.

fp32's perplexity is computed once with PyTorch eager fp32 (float64 log-softmax) and cached beside the
fp32 reference outputs, so every variant's row carries it and the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from costbench.harness.build.zoo.base import ModelBundle

DEFAULT_TOKENS = 255  # scored tokens: with the first one, a 256-token window, a few hundred prefixes at most
KEY = "perplexity_text"  # the ModelSpec key, named in errors


@dataclass(frozen=True)
class PerplexityText:
    """The tokens of a user's text a model is scored on, and where they came from."""

    tokens: np.ndarray  # int64, N + 1 ids: the first is only context
    window: int  # the most tokens one forward pass sees (the model's context, at most N + 1)
    source: dict[str, Any]  # the file, its sha256, its token count, the cap

    @property
    def scored(self) -> int:
        return int(self.tokens.size - 1)

    def key(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.tokens).tobytes())
        h.update(str(self.window).encode())
        return h.hexdigest()[:16]


def check_text(model: str, path: Path) -> None:
    """A clear error naming the key, the model and the file when the text is missing or empty."""
    if not path.is_file():
        raise FileNotFoundError(f"model {model!r}: {KEY} {path} does not exist (a plain-text file to score the "
                                "model's perplexity on)")
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        raise ValueError(f"model {model!r}: {KEY} {path} is empty (a plain-text file to score perplexity on)")


def tokenize_text(model: str, folder: Path, path: Path, cap: int) -> PerplexityText:
    """The text's first ``cap`` + 1 tokens by the folder's own tokenizer; the window is the model's context."""
    from tokenizers import Tokenizer

    check_text(model, path)
    text = path.read_text(encoding="utf-8")
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids
    if len(ids) < 2:
        raise ValueError(f"model {model!r}: {KEY} {path} is {len(ids)} token(s) for its tokenizer; perplexity needs "
                         "at least 2 (one to predict from, one to score)")
    tokens = np.asarray(ids[:cap + 1], dtype=np.int64)
    config = json.loads((folder / "config.json").read_text())
    context = int(config.get("max_position_embeddings") or tokens.size)
    return PerplexityText(tokens, min(context, tokens.size), {
        "file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "text_tokens": len(ids),
        "cap": cap})


def windows(n: int, window: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each forward pass over ``n`` tokens so that token i (1..n-1) is
    scored from the ``min(i, window - 1)`` tokens before it: one pass while the text fits, then one per token."""
    if n <= window:
        return [(0, n, 1)]
    return [(0, window, 1)] + [(i - window + 1, i + 1, i) for i in range(window, n)]


def _nll_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(targets)), targets]


def nll_position_logits(position_logits: Callable[[np.ndarray], np.ndarray], text: PerplexityText) -> np.ndarray:
    """Each scored token's NLL from forward passes that return every position's logits (1 x L x vocab)."""
    t = text.tokens
    out = []
    for start, end, first in windows(t.size, text.window):
        logits = np.asarray(position_logits(t[None, start:end]))[0]
        # the logits at position p (absolute start + p) predict token start + p + 1
        rows = np.arange(first - 1, end - 1)
        out.append(_nll_rows(logits[rows - start], t[rows + 1]))
    return np.concatenate(out)


def nll_prefixes(run: Callable[[np.ndarray], np.ndarray], text: PerplexityText) -> np.ndarray:
    """Each scored token's NLL from one call per prefix that returns the last position's logits (1 x vocab)."""
    t = text.tokens
    out = np.empty(text.scored)
    for i in range(1, t.size):
        logits = np.asarray(run(t[None, max(0, i - text.window + 1):i]))
        out[i - 1] = _nll_rows(logits.reshape(1, -1), t[i:i + 1])[0]
    return out


def perplexity(nll: np.ndarray) -> float:
    return float(np.exp(np.mean(nll)))


def method_details(text: PerplexityText, method: str) -> dict[str, Any]:
    """What a perplexity row was computed on and how (tokens scored, window, method, the text)."""
    how = {"position_logits": "every position's logits from one forward pass per window",
           "prefixes": "one forward pass per scored token over its prefix, the last position's logits",
           "torch_fp32": "PyTorch eager fp32, every position's logits from one forward pass per window"}[method]
    return {"tokens_scored": text.scored, "window": text.window, "method": method, "method_description": how,
            "scoring": "token i from the min(i, window - 1) tokens before it; exp(mean NLL), log-softmax in float64",
            "cap": f"at most {text.source['cap']} scored tokens (model key perplexity_tokens)", "text": text.source}


def fp32_nll(bundle: ModelBundle) -> np.ndarray:
    """fp32's NLL of each scored token: PyTorch eager, the folder's weights in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    assert bundle.perplexity_text is not None
    model = AutoModelForCausalLM.from_pretrained(str(bundle.hf_path), dtype=torch.float32).eval()

    def logits(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids), use_cache=False).logits.double().numpy()

    return nll_position_logits(logits, bundle.perplexity_text)


def _path(bundle: ModelBundle, cache_dir: Path) -> Path:
    assert bundle.perplexity_text is not None
    return Path(cache_dir) / "references" / f"{bundle.name}-{bundle.source_hash}-ppl-{bundle.perplexity_text.key()}.npy"


def cached_fp32_nll(bundle: ModelBundle, cache_dir: Path) -> np.ndarray | None:
    """fp32's per-token NLL on the bundle's text from the cache; None when not computed (or no text)."""
    if bundle.perplexity_text is None:
        return None
    path = _path(bundle, cache_dir)
    return np.load(path) if path.exists() else None


def reference_nll(bundle: ModelBundle, cache_dir: Path) -> np.ndarray | None:
    """fp32's per-token NLL on the bundle's text, computed and cached when missing; None without a text."""
    if bundle.perplexity_text is None:
        return None
    cached = cached_fp32_nll(bundle, cache_dir)
    if cached is not None:
        return cached
    nll = fp32_nll(bundle)
    path = _path(bundle, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, nll)
    os.replace(tmp, path)
    return nll
