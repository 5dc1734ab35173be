"""``bench_minilm`` times and checks a BERT embedder on every kernel path this CPU runs, in the same rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from costbench.kernels import gemm
from costbench.kernels.bench import bench_minilm


class _Embedder(nn.Module):
    """A tiny BERT (random weights from the test's seed) mean-pooled: the shape of a sentence embedder."""

    def __init__(self):
        super().__init__()
        transformers = pytest.importorskip("transformers")
        cfg = transformers.BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, max_position_embeddings=32)
        self.bert = transformers.BertModel(cfg)

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.mean(1)


def test_every_path_is_timed_in_the_same_rounds_and_keeps_parity(seed, rng):
    torch.manual_seed(seed)
    inputs = {"input_ids": rng.integers(0, 50, (5, 16)), "attention_mask": np.ones((5, 16), np.int64)}
    r = bench_minilm(_Embedder(), inputs, threads=2, batch=3, rounds=2, min_time=0.001, rng=rng)
    others = [f"costbench-kernels {isa}" for isa in gemm.supported_isas() if isa != gemm.best_isa()]
    assert others  # generic runs everywhere
    expected = ["torch fp32", "torch dynamic int8", "costbench-kernels", "costbench-kernels unfused", *others]
    assert list(r["times"]) == expected
    assert all(len(ts) == 2 and min(ts) > 0 for ts in r["times"].values())
    assert set(r["parity"]) == set(expected) - {"torch fp32"}
    for name in ["costbench-kernels", *others]:  # the same int8 model on each path: close to fp32 on every one
        assert r["parity"][name]["min_cos"] > 0.99, (name, r["parity"][name])
    assert r["isa"] == gemm.best_isa() and r["batch"] == 3 and r["sentences"] == 5


@pytest.mark.skipif("avx2-saturating" not in gemm.inexact_isas(), reason="this CPU has no AVX2")
def test_where_avx2_is_the_path_the_saturating_mode_runs_beside_it(seed, rng, monkeypatch):
    monkeypatch.setenv("COSTBENCH_KERNELS_ISA", "avx2")  # as on a CPU without VNNI
    torch.manual_seed(seed)
    inputs = {"input_ids": rng.integers(0, 50, (5, 16)), "attention_mask": np.ones((5, 16), np.int64)}
    r = bench_minilm(_Embedder(), inputs, threads=2, batch=3, rounds=2, min_time=0.001, rng=rng)
    assert r["isa"] == "avx2"
    assert "costbench-kernels avx2-saturating" in r["times"] and "costbench-kernels avx2" not in r["times"]
    # 7-bit activations: close to fp32, if less close than the exact path's 8 bits
    assert r["parity"]["costbench-kernels avx2-saturating"]["min_cos"] > 0.98, r["parity"]
