"""What the generative backends' tests share: the torch reference model, a greedy decoding loop by hand, cosine."""

from __future__ import annotations

import numpy as np


def torch_model(bundle, dtype: str = "float32"):
    """The bundle's Hugging Face folder as a torch model in eval mode, in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(bundle.hf_path), dtype=getattr(torch, dtype)).eval()


def greedy_by_hand(model, prompt: np.ndarray, steps: int, eos: int) -> tuple[list[int], list[float]]:
    """Greedy decoding without a KV cache: the whole sequence re-run each step, EOS masked as
    generate(min_new_tokens=...) masks it. Returns the tokens and each step's gap between the best and second
    logit, so a test can tell a near-tie broken differently from a clear winner missed."""
    import torch

    ids = torch.from_numpy(prompt[None, :])
    tokens, gaps = [], []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=ids).logits[0, -1, :].clone()
            logits[eos] = -torch.inf
            top2 = torch.topk(logits, 2).values
            gaps.append(float(top2[0] - top2[1]))
            nxt = int(torch.argmax(logits))
            tokens.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tokens, gaps


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_eos_never_stops(session, eos: int, vocab: int, rng: np.random.Generator, rounds: int) -> None:
    """Find a random prompt whose greedy next token is EOS (random weights make it the argmax for about one prompt
    in ``vocab``; ``rounds`` batches of 1024 are searched), then generate 5 tokens from it: all 5 must come, none
    EOS, and the first must be the best token but EOS (the mask generate's minimum length applies)."""
    found = None
    for _ in range(rounds):
        prompts = rng.integers(2, vocab, size=(1024, 6), dtype=np.int64)
        logits = session.run({"input_ids": prompts})[0]
        hits = np.flatnonzero(np.argmax(logits, axis=1) == eos)
        if hits.size:
            found = prompts[hits[:1]], logits[hits[0]]
            break
    assert found is not None, "no random prompt had EOS as its greedy next token"
    prompt, logits = found
    stamps: list[int] = []
    out = session.generate(prompt, 5, lambda: stamps.append(1))
    assert out.shape == (1, 5) and len(stamps) == 5 and eos not in out
    masked = logits.copy()
    masked[eos] = -np.inf
    assert out[0, 0] == int(np.argmax(masked)), f"prompt {prompt.tolist()}"
