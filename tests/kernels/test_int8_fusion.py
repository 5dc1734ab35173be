"""Fusions in swap_linear_layers: Q/K/V as one GEMM (bit-identical to three), GELU in the epilogue, and the
skip connection's add in the epilogue (bit-identical to adding after)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from costbench.harness.machine import env
from costbench.kernels import _gemm, gemm
from costbench.kernels.linear import (FusedInt8Linear, Int8FeedForwardOutput, Int8Linear,
                                     Int8LinearPart, Int8ResidualOutput, feed_forward, swap_linear_layers)


class _Attention(nn.Module):
    """query/key/value as BERT's self-attention names them; returns the three projections."""

    def __init__(self, k: int, sizes: tuple[int, int, int], bias: bool = True):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(k, n, bias=bias) for n in sizes)

    def forward(self, x, kv=None):
        kv = x if kv is None else kv
        return self.query(x), self.key(kv), self.value(kv)


@pytest.mark.parametrize("isa", gemm.supported_isas())
@pytest.mark.parametrize("k,sizes,bias", [(384, (384, 384, 384), True), (101, (40, 70, 33), True),
                                          (64, (16, 16, 100), False)])
def test_fused_qkv_is_bit_identical_to_three_layers(isa, k, sizes, bias, seed):
    torch.manual_seed(seed)  # weights and inputs fresh from this run's (printed) seed
    attn = _Attention(k, sizes, bias)
    apart, fused = copy.deepcopy(attn), copy.deepcopy(attn)
    swap_linear_layers(apart, isa=isa, fuse=False)
    names = swap_linear_layers(fused, isa=isa)
    assert names == ["query", "key", "value"]
    assert all(isinstance(getattr(fused, n), Int8LinearPart) for n in names)
    assert fused.query.fused is fused.value.fused and fused.query.fused.layer.out_features == sum(sizes)
    for m in (1, 7, 512):
        x = torch.randn(m, k) * 3
        with torch.inference_mode():
            for a, b in zip(apart(x), fused(x)):
                assert torch.equal(a, b), f"isa={isa} m={m}"
        assert fused.query.fused._y is None  # nothing kept once every part has its columns


def test_fused_parts_on_different_inputs(seed):
    """Cross-attention: keys and values from another tensor than the queries."""
    torch.manual_seed(seed)
    attn = _Attention(48, (32, 32, 32))
    apart, fused = copy.deepcopy(attn), copy.deepcopy(attn)
    swap_linear_layers(apart, fuse=False)
    swap_linear_layers(fused)
    x, enc = torch.randn(5, 48), torch.randn(9, 48)
    with torch.inference_mode():
        for a, b in zip(apart(x, enc), fused(x, enc)):
            assert torch.equal(a, b)
        q1 = fused.query(x)
        assert torch.equal(fused.query(x), q1)  # asked twice: the same columns


def _gelu64(y: np.ndarray) -> np.ndarray:
    y = y.astype(np.float64)
    return 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))


# _gemm.gelu's vector forms, and the CPU flags each needs (the C side checks them at run time too)
GELU_FORMS = {_gemm.GELU_AVX2: ("avx2", "fma"), _gemm.GELU_AVX512: ("avx512f",)}


@pytest.mark.parametrize("form", sorted(GELU_FORMS))
def test_gelu_simd_and_scalar_agree_and_are_close_to_erf(rng, form):
    # a different length each run, so the vector loops' remainders (0-15 lanes) are all met across runs
    y = np.concatenate([rng.standard_normal(10_000 - int(rng.integers(0, 16))) * 4, np.linspace(-12, 12, 4097),
                        [0.0, -0.0, 1e-30, -1e-30, 3.4e38, -3.4e38, np.inf, np.nan]]).astype(np.float32)
    if not set(GELU_FORMS[form]) <= env.cpu_flags():
        with pytest.raises(ValueError, match=f"form {form}"):
            _gemm.gelu(y.copy(), len(y), form)
        pytest.skip(f"this CPU lacks {'/'.join(GELU_FORMS[form])}: the form is refused, as checked")
    simd, best, scalar = y.copy(), y.copy(), y.copy()
    _gemm.gelu(simd, len(simd), form)
    _gemm.gelu(best, len(best), _gemm.GELU_BEST)
    _gemm.gelu(scalar, len(scalar), _gemm.GELU_SCALAR)
    assert np.array_equal(simd.view(np.uint32), scalar.view(np.uint32))  # same bits, NaN included
    assert np.array_equal(best.view(np.uint32), scalar.view(np.uint32))
    assert np.isnan(simd[-1]) and simd[-2] == np.inf
    finite = np.abs(y) < 1e30
    ref = _gelu64(y[finite])
    err = np.abs(simd[finite] - ref)
    assert (err <= 2e-7 * np.abs(y[finite]) + 1e-7).all(), err.max()
    # torch's own CPU gelu (the fp32 model's) is about 3.5e-7 |y| from the exact one: ours is as close
    torch_err = np.abs(nn.functional.gelu(torch.from_numpy(y[finite])).numpy() - ref)
    assert (err <= np.maximum(torch_err, 2e-7 * np.abs(y[finite]) + 1e-7)).all()


@pytest.mark.parametrize("isa", gemm.supported_isas())
def test_gelu_epilogue_is_gelu_of_the_linear_output(isa, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(384, 1536 - 16 * (isa == "avx2") - 3)  # a tail panel and a tail vector
    plain = Int8Linear.from_linear(lin, isa=isa)
    act = Int8Linear.from_linear(lin, isa=isa, activation="gelu")
    for m in (1, 13, 512):
        x = torch.randn(m, 384)
        with torch.inference_mode():
            y = plain(x).numpy().copy()
            z = act(x).numpy()
        _gemm.gelu(y, y.size, True)
        assert np.array_equal(z, y), f"isa={isa} m={m}"  # the same pre-activation, the same GELU bits


def test_gelu_activation_checked_and_pickled(seed):
    with pytest.raises(ValueError, match="activation"):
        Int8Linear.from_linear(nn.Linear(8, 8), activation="relu")
    torch.manual_seed(seed)
    layer = Int8Linear.from_linear(nn.Linear(16, 24), activation="gelu")
    x = torch.randn(3, 16)
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), layer(x))


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=32)
    return transformers.BertModel(cfg).eval()


def test_swap_fuses_a_bert_encoder(seed):
    torch.manual_seed(seed)
    bert = _tiny_bert()
    ids = torch.randint(0, 50, (3, 16))
    mask = torch.ones_like(ids)
    apart, fused = copy.deepcopy(bert), copy.deepcopy(bert)
    names_apart = swap_linear_layers(apart, fuse=False)
    names = swap_linear_layers(fused)
    assert sorted(names) == sorted(names_apart)  # the same layers, each once
    layer = fused.encoder.layer[0]
    assert isinstance(layer.attention.self.query.fused, FusedInt8Linear)
    # the feed-forward pair is one block; the intermediate a pass-through
    assert isinstance(layer.output, Int8FeedForwardOutput) and isinstance(layer.intermediate, nn.Identity)
    assert layer.output.intermediate_dense.activation == "gelu"
    assert isinstance(layer.attention.output, Int8ResidualOutput)
    with torch.inference_mode():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        a = apart(input_ids=ids, attention_mask=mask).last_hidden_state
        b = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    cos = lambda u: nn.functional.cosine_similarity(u.reshape(-1, 64), ref.reshape(-1, 64)).min()  # noqa: E731
    assert cos(b) > 0.99 and abs(cos(b) - cos(a)) < 0.01
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).last_hidden_state, b)


@pytest.mark.parametrize("isa", gemm.supported_isas())
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_residual_epilogue_is_bit_identical_to_adding_after(isa, activation, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(384, 384 - 16 * (isa == "avx2") - 3)  # a tail panel and a tail vector
    layer = Int8Linear.from_linear(lin, isa=isa, activation=activation)
    for m in (1, 13, 512):
        x = torch.randn(2, m, 384)
        r = torch.randn(2, m, lin.out_features) * 5
        with torch.inference_mode():
            assert torch.equal(layer(x, residual=r), layer(x) + r), f"isa={isa} m={m}"
            # the numpy entry point: the same bits
            y = gemm.int8_linear(x[0].numpy(), layer.packed, layer.w_scale, layer.bias_f32,
                                 activation=activation, residual=r[0].numpy())
            assert np.array_equal(y, (layer(x[0]) + r[0]).numpy())


def test_residual_checked(seed):
    torch.manual_seed(seed)
    layer = Int8Linear.from_linear(nn.Linear(16, 24))
    x = torch.randn(5, 16)
    with pytest.raises(ValueError, match="residual: expected shape"):
        layer(x, residual=torch.randn(5, 16))
    with pytest.raises(ValueError, match=r"residual must be 5×24"):
        gemm.int8_linear(x.numpy(), layer.packed, layer.w_scale, residual=np.zeros((24, 5), np.float32))
    out = np.empty((5, 24), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        gemm.int8_linear(x.numpy(), layer.packed, layer.w_scale, out=out, residual=out)
    # another dtype: the unfused sum in that dtype
    r16 = torch.randn(5, 24, dtype=torch.bfloat16)
    assert torch.equal(layer(x, residual=r16), layer(x) + r16)


class _PostNormBlock(nn.Module):
    """BertOutput's layout: LayerNorm(dropout(dense(h)) + input)."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.dense, self.dropout, self.LayerNorm = nn.Linear(k, n), nn.Dropout(0.1), nn.LayerNorm(n)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class _LookAlikeBlock(_PostNormBlock):
    """Named and built alike, but normalises before the add: must not be fused."""

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states)) + input_tensor


def test_residual_block_fused_only_where_it_computes_the_pattern(seed):
    torch.manual_seed(seed)
    model = nn.ModuleDict({"post": _PostNormBlock(64, 48), "alike": _LookAlikeBlock(64, 48)}).eval()
    apart, fused = copy.deepcopy(model), copy.deepcopy(model)
    swap_linear_layers(apart, fuse=False)
    names = swap_linear_layers(fused)
    assert sorted(names) == ["alike.dense", "post.dense"]
    assert isinstance(fused["post"], Int8ResidualOutput) and type(fused["alike"]) is _LookAlikeBlock
    h, r = torch.randn(7, 64), torch.randn(7, 48)
    with torch.inference_mode():
        for key in ("post", "alike"):
            assert torch.equal(fused[key](h, r), apart[key](h, r)), key
    fused.train()  # dropout between the layer and the add again: the unfused path, still running
    assert fused["post"](h, r).shape == (7, 48)


class _CallNames(torch.overrides.TorchFunctionMode):
    """The names of the torch functions called inside it."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [False, True])
def test_swapped_modules_keep_the_mode_of_those_they_replace(training, seed):
    """A module built by the swap takes the replaced module's train/eval mode: an output block left in
    training mode (where a new module starts) would add the skip connection outside the epilogue."""
    torch.manual_seed(seed)
    bert = _tiny_bert().train(training)
    swap_linear_layers(bert)
    assert {m.training for m in bert.modules()} == {training}
    layer = bert.encoder.layer[0]
    hidden = layer.attention.output.dense.out_features
    for block in (layer.attention.output, layer.output):  # Int8ResidualOutput, Int8FeedForwardOutput
        h, r = torch.randn(2, 5, hidden), torch.randn(2, 5, hidden)
        with torch.no_grad(), _CallNames() as calls:
            block(h, r)
        added_outside = any(n in ("add", "__add__", "__radd__") for n in calls.names)
        assert added_outside == training, (type(block).__name__, calls.names)


_FFN_SHAPES = [(512, 384, 1536, 384), (200, 101, 70, 33), (53, 64, 128, 16), (7, 64, 64, 64), (1, 16, 32, 16)]


@pytest.mark.parametrize("m,k,n1,n2", _FFN_SHAPES)
@pytest.mark.parametrize("with_residual", [True, False])
def test_feed_forward_is_bit_identical_to_two_layers(m, k, n1, n2, with_residual, seed):
    """One job for both GEMMs of a feed-forward pair, rows in blocks: the same bits as the two calls, on
    shapes with tail panels, tail vectors and short last blocks, down to one row."""
    torch.manual_seed(seed)
    first = Int8Linear.from_linear(nn.Linear(k, n1), activation="gelu", threads=2)
    second = Int8Linear.from_linear(nn.Linear(n1, n2), threads=2)
    x = torch.randn(m, k) * 3
    r = torch.randn(m, n2) if with_residual else None
    with torch.inference_mode():
        expected = second(first(x), residual=r)
        assert torch.equal(feed_forward(first, second, x, r), expected)
        assert torch.equal(feed_forward(first, second, x.view(1, m, k), None if r is None else r.view(1, m, n2)),
                           expected.view(1, m, n2))
        if first.isa == "avx512vnni":  # the C job itself
            y = np.empty((m, n2), np.float32)
            p1, p2 = first.packed, second.packed
            _gemm.ffn(x.numpy(), m, k, k, p1.data, n1, p1.colsum, first.w_scale, first.bias_f32, p2.data, n2,
                      p2.colsum, second.w_scale, second.bias_f32, y, 2, False, None if r is None else r.numpy())
            assert np.array_equal(y, expected.numpy())


def test_feed_forward_checked(seed):
    if "avx512vnni" not in gemm.supported_isas():
        with pytest.raises(ValueError, match="avx512vnni"):
            _gemm.ffn(np.zeros((1, 4), np.float32), 1, 4, 4, b"", 4, b"", b"", None, b"", 4, b"", b"", None,
                      np.zeros((1, 4), np.float32), 1)
        return
    torch.manual_seed(seed)
    # ffn takes weights packed for avx512vnni: named, since on a CPU with AMX the default packing is amx's
    first = Int8Linear.from_linear(nn.Linear(32, 48), activation="gelu", isa="avx512vnni")
    second = Int8Linear.from_linear(nn.Linear(48, 32), isa="avx512vnni")
    p1, p2 = first.packed, second.packed
    buf = np.random.default_rng(seed).standard_normal((64, 32), dtype=np.float32)

    def call(x, out, residual=None, n1=48):
        _gemm.ffn(x, len(x), 32, 32, p1.data, n1, p1.colsum, first.w_scale, first.bias_f32, p2.data, 32, p2.colsum,
                  second.w_scale, second.bias_f32, out, 2, False, residual)

    with pytest.raises(ValueError, match="x must not overlap out"):
        call(buf[:40], buf[8:48])
    out = np.empty((40, 32), np.float32)
    with pytest.raises(ValueError, match="residual must not overlap out"):
        call(buf[:40], out, residual=out)
    with pytest.raises(ValueError, match="packed w1"):
        call(buf[:40], out, n1=96)
    with pytest.raises(ValueError, match="out"):
        call(buf[:40], out[:20])
    with pytest.raises(ValueError, match="must apply GELU"):
        Int8FeedForwardOutput(second, first, nn.Dropout(0.1), nn.LayerNorm(32))


class _FeedForwardLayer(nn.Module):
    """BertLayer's feed-forward half: ``output(intermediate(x), x)``."""

    def __init__(self, k: int, n: int, residual_scale: float = 1.0):
        super().__init__()
        self.intermediate = nn.Module()
        self.intermediate.dense, self.intermediate.intermediate_act_fn = nn.Linear(k, n), nn.GELU()
        self.intermediate.forward = lambda h: self.intermediate.intermediate_act_fn(self.intermediate.dense(h))
        self.output = _PostNormBlock(n, k)
        self.residual_scale = residual_scale

    def feed_forward_chunk(self, x):
        return self.output(self.intermediate(x), self.residual_scale * x)

    def forward(self, x):
        return self.feed_forward_chunk(x)


def test_feed_forward_fused_only_where_the_layer_computes_the_pattern(seed):
    torch.manual_seed(seed)
    model = nn.ModuleDict({"ffn": _FeedForwardLayer(48, 96), "alike": _FeedForwardLayer(48, 96, 2.0)}).eval()
    apart, fused = copy.deepcopy(model), copy.deepcopy(model)
    swap_linear_layers(apart, fuse=False)
    names = swap_linear_layers(fused)
    assert sorted(names) == ["alike.intermediate.dense", "alike.output.dense", "ffn.intermediate.dense",
                             "ffn.output.dense"]  # each layer once
    assert isinstance(fused["ffn"].output, Int8FeedForwardOutput) and isinstance(fused["ffn"].intermediate, nn.Identity)
    assert isinstance(fused["alike"].output, Int8ResidualOutput)  # the residual is not the input: no pair fusion
    x = torch.randn(40, 48)
    with torch.inference_mode():
        ref = model["ffn"](x)
        got = fused["ffn"](x)
    cos = nn.functional.cosine_similarity(got, ref).min()
    assert cos > 0.99, cos
    fused.train()  # dropout between the layer and the add again: the two layers apart, still running
    assert fused["ffn"](x).shape == x.shape
