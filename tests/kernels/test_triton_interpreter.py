"""The Triton int8 GEMM under Triton's interpreter (TRITON_INTERPRET=1) on CPU tensors, small shapes.

The interpreter executes the kernel's program instances with numpy, so the integer part is checked
exactly and the fused epilogue against fp64 within the stated tolerance, for EVERY tile configuration
in the autotune list (each launched explicitly), not only the one an autotuner would pick. The same
checks run on a GPU in scripts/gpu_check.py.

TRITON_INTERPRET must be set before triton is first imported (triton.language's own helpers are
jitted at import), so the checks run in one child process started with it set; each test below
asserts one named check of that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from costbench.kernels.reference import int8_gemm_reference

pytest.importorskip("triton", reason="triton is not installed: pip install triton")

FUSED_SHAPES = [(1, 7, 33), (17, 65, 129)]


def _worker() -> dict:
    """Run every check under the interpreter; {check name: {"ok": bool, ...}}."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch

    from costbench.kernels.gpu import triton_gemm as tg
    from costbench.kernels.gpu import validate as gv
    from costbench.kernels.gpu.linear import CudaInt8Linear, int8_linear

    assert tg.INTERPRETED
    seed = int(os.environ["COSTBENCH_TEST_SEED"])  # the test session's seed: fresh inputs every run
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    t0 = time.perf_counter()

    # every configuration on the same fresh cases (one exact product per case)
    impls = [gv.TritonImpl(tg, cfg) for cfg in tg.CONFIGS]
    for r in gv.validate(impls, "cpu", gv.INTERPRETER_SHAPES, seed=seed, kinds=("int32",)):
        out[f"int32 {r.impl.removeprefix('triton ')}"] = {**r.as_dict(),
                                                          "expected_cases": 5 * len(gv.INTERPRETER_SHAPES)}
    fused_kinds = [f"fused {d}" for d in ("float32", "float16", "bfloat16")]
    for r in gv.validate(impls, "cpu", FUSED_SHAPES, seed=seed + 1, kinds=fused_kinds):
        out[f"fused {r.kind.split()[1]} {r.impl.removeprefix('triton ')}"] = r.as_dict()

    # extremes at K not a multiple of any BLOCK_K, through the public wrapper
    k = 97
    a = torch.full((3, k), -128, dtype=torch.int8)
    b = torch.full((k, 5), -128, dtype=torch.int8)
    pos = tg.int8_gemm(a, tg.pack_weight(b), config=tg.CONFIGS[-1])
    neg = tg.int8_gemm(a, tg.pack_weight(torch.full((k, 5), 127, dtype=torch.int8)), config=tg.CONFIGS[0])
    out["extremes"] = {"ok": bool(torch.all(pos == 128 * 128 * k) and torch.all(neg == -128 * 127 * k))}

    # the poison survives where a kernel does not write
    a = rng.integers(-128, 128, (9, 40), dtype=np.int8)
    b = rng.integers(-128, 128, (40, 11), dtype=np.int8)
    c = torch.full((9, 11), int(gv.POISON_I32), dtype=torch.int32)
    tg.run_config(tg.CONFIGS[-1], torch.from_numpy(a[:4]), tg.pack_weight(torch.from_numpy(b)), c[:4])
    out["poison"] = {"ok": bool(np.array_equal(c[:4].numpy(), int8_gemm_reference(a[:4], b))
                                and torch.all(c[4:] == int(gv.POISON_I32)))}

    # per-row quantizer against its numpy twin, bit for bit
    x = (rng.standard_normal((6, 100)) * rng.uniform(0.01, 100, (6, 1))).astype(np.float32)
    x[2] = 0.0
    x[3, 5] = 1e4
    q, s = tg.quantize_rows(torch.from_numpy(x))
    q_ref, s_ref = gv.quantize_rows_reference(x)
    out["quantize_rows"] = {"ok": bool(np.array_equal(s.numpy(), s_ref) and np.array_equal(q.numpy(), q_ref)
                                       and s.numpy()[2] == 1.0 and not q.numpy()[2].any()
                                       and np.abs(q.numpy()).max() <= 127)}

    # the Linear path: quantizer + fused GEMM against fp64, and against the float layer
    torch.manual_seed(seed)
    lin = torch.nn.Linear(48, 20)
    layer = CudaInt8Linear.from_linear(lin, device="cpu")
    xs = torch.randn(2, 3, 48)
    y = int8_linear(xs, layer.w_q, layer.w_scale, layer.bias, kernels=tg)
    q, s = gv.quantize_rows_reference(xs.reshape(-1, 48).numpy())
    ref, bound = gv.fused_reference(q, layer.w_q.numpy().T.copy(), s, layer.w_scale.numpy(), layer.bias.numpy())
    ratio = gv.fused_error_ratio(y.reshape(-1, 20).numpy(), ref, bound, "float32")
    with torch.no_grad():
        rel = float((y - lin(xs)).norm() / lin(xs).norm())
    out["linear"] = {"ok": bool(y.shape == (2, 3, 20) and ratio <= 1.0 and rel < 0.02), "ratio": ratio,
                     "relative_error_vs_float": rel}
    # the CUDA path of the CPU engineer's Int8Linear: same int8 weights, our quantizer and GEMM
    from costbench.kernels.gpu.linear import forward_from_int8
    from costbench.kernels.linear import Int8Linear

    cpu_layer = Int8Linear.from_linear(lin)
    y_dispatch = forward_from_int8(cpu_layer, xs, kernels=tg)
    out["int8linear_dispatch"] = {"ok": bool(torch.equal(y_dispatch, y)), "note": "same weights as CudaInt8Linear"}
    out["_seconds"] = {"ok": True, "value": time.perf_counter() - t0}  # reported with -rA; not asserted
    return out


@pytest.fixture(scope="module")
def checks(seed) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "COSTBENCH_TEST_SEED": str(seed)}
    proc = subprocess.run([sys.executable, __file__, "--worker"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _config_names() -> list[str]:
    from costbench.kernels.gpu.triton_gemm import CONFIGS

    return [c.name for c in CONFIGS]


@pytest.mark.parametrize("name", _config_names())
def test_every_config_is_exact_on_full_range_odd_shapes(checks, name):
    r = checks[f"int32 {name}"]
    assert r["ok"], r
    assert r["cases"] == r["expected_cases"]  # one random + four extremes per shape, none skipped


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", _config_names())
def test_every_config_fused_epilogue_within_tolerance(checks, name, dtype):
    r = checks[f"fused {dtype} {name}"]
    assert r["ok"], r
    assert r["cases"] == 5 * len(FUSED_SHAPES) and r["worst"] <= 1.0


@pytest.mark.parametrize("check", ["extremes", "poison", "quantize_rows", "linear", "int8linear_dispatch"])
def test_named_checks(checks, check):
    assert checks[check]["ok"], checks[check]


def test_exact_product_equals_the_int64_reference(rng):
    from costbench.kernels.gpu import validate as gv
    from costbench.kernels.validate import make_cases

    for case in make_cases(rng, [(1, 1, 1), (7, 1000, 33), (64, 4096, 5)], "s8"):
        assert np.array_equal(gv.exact_product(case.a, case.b), int8_gemm_reference(case.a, case.b))


def test_fused_error_ratio_flags_nan_and_real_errors():
    from costbench.kernels.gpu import validate as gv

    ref = np.array([[1.0, 2.0]])
    bound = np.array([[1.0, 2.0]])
    assert gv.fused_error_ratio(np.array([[1.0, 2.0]]), ref, bound, "float32") == 0.0
    assert gv.fused_error_ratio(np.array([[1.0, np.nan]]), ref, bound, "float32") == float("inf")
    assert gv.fused_error_ratio(np.array([[1.001, 2.0]]), ref, bound, "float16") > 1.0


def test_wgmma_rule_and_config_list():
    from costbench.kernels.gpu.triton_gemm import CONFIGS, TileConfig, wgmma_eligible

    assert wgmma_eligible(TileConfig(128, 256, 128, 8, 8, 3))
    assert not wgmma_eligible(TileConfig(32, 64, 256, 1, 4, 4))  # BLOCK_M not a multiple of 64
    assert not wgmma_eligible(TileConfig(64, 64, 64, 8, 2, 3))  # warps not a multiple of 4
    assert not wgmma_eligible(TileConfig(64, 64, 16, 8, 4, 3))  # BLOCK_K < 32
    assert any(wgmma_eligible(c) for c in CONFIGS) and any(not wgmma_eligible(c) for c in CONFIGS)
    assert len({c.name for c in CONFIGS}) == len(CONFIGS)
    for c in CONFIGS:  # operand pipeline fits Hopper's 227 KiB of shared memory per block
        assert c.smem_bytes() <= 227 * 1024, c


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    print(json.dumps(_worker()))
