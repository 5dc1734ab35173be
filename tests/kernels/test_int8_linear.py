"""Int8Linear as a drop-in for nn.Linear, the Linear swap, and pickling."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from costbench.kernels import gemm
from costbench.kernels.linear import Int8Linear, swap_linear_layers


@pytest.mark.parametrize("isa", gemm.supported_isas())
def test_close_to_fp32_linear(isa, seed):
    torch.manual_seed(seed)  # the layer's initialisation and the input
    lin = nn.Linear(384, 96)
    q = Int8Linear.from_linear(lin, isa=isa)
    x = torch.randn(3, 17, 384)
    with torch.inference_mode():
        y, yq = lin(x), q(x)
    assert yq.shape == y.shape and yq.dtype == torch.float32
    cos = nn.functional.cosine_similarity(y.reshape(-1, 96), yq.reshape(-1, 96)).min()
    assert cos > 0.999


def test_without_bias_and_one_row(seed):
    torch.manual_seed(seed)
    lin = nn.Linear(5, 3, bias=False)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(1, 5)
    with torch.inference_mode():
        y, yq = lin(x), q(x)
    # int8 error scales with the sum of |x|*|w| (not with the output, which may cancel to near zero):
    # half a quantization step on each operand is at most 1/255 of x's range and 1/127 of w's.
    scale = (x.abs() @ lin.weight.abs().T).max().item()
    assert torch.allclose(yq, y, atol=scale * (1 / 127 + 2 / 255) + 1e-6)


def test_swap_and_pickle_roundtrip(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 8)))
    x = torch.randn(4, 16)
    swapped = swap_linear_layers(model)
    assert swapped == ["0", "2.0"]
    assert isinstance(model[0], Int8Linear) and isinstance(model[2][0], Int8Linear)
    y = model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), y)


def test_min_features_keeps_small_layers_fp32():
    model = nn.Sequential(nn.Linear(16, 4), nn.Linear(4, 64))
    assert swap_linear_layers(model, min_features=8) == []


def test_on_torch_openmp_team_is_bit_identical_to_own_threads(rng):
    # the same C code on torch's OpenMP threads or on ours: the same bits, tails and several row blocks included
    from costbench.kernels.linear import torch_openmp_runtime

    if torch_openmp_runtime() is None:
        pytest.skip("no GNU OpenMP runtime loaded by torch in this process")
    for m, k, n in [(1, 384, 384), (37, 385, 200), (512, 1536, 130)]:
        w = gemm.PackedWeight.from_linear_weight(rng.integers(-127, 128, (n, k), dtype="int8"))
        ws = rng.uniform(1e-3, 1e-2, n).astype("float32")
        bias = rng.standard_normal(n).astype("float32")
        x = rng.standard_normal((m, k)).astype("float32")
        own = gemm.int8_linear(x, w, ws, bias, threads=2, openmp=False)
        team = gemm.int8_linear(x, w, ws, bias, threads=2, openmp=True)
        assert (own.view("int32") == team.view("int32")).all(), f"{m}x{k}x{n}"


def test_use_openmp_names_a_runtime_that_is_not_loaded():
    with pytest.raises(RuntimeError, match="no-such-libgomp.so"):
        gemm.use_openmp("/nonexistent/no-such-libgomp.so")
