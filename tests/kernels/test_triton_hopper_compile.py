"""The Triton kernel compiled ahead of time for Hopper (sm_90) on this CPU machine: Triton's compiler and
its bundled ptxas need no GPU. A wgmma-eligible tile must come out as wgmma and a small-M tile as mma.sync,
which is what the autotune list (and the README) claims; on a GPU, scripts/gpu_check.py repeats this for
every configuration from the kernels it actually launched.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton", reason="triton is not installed: pip install triton")

from costbench.kernels.gpu import triton_gemm as tg  # noqa: E402


@pytest.mark.parametrize("index, fused, out", [(0, False, "*i32"), (-1, True, "*fp16")])
def test_hopper_compilation_uses_the_predicted_mma(index, fused, out):
    if tg.INTERPRETED:
        pytest.skip("TRITON_INTERPRET is set: nothing is compiled")
    cfg = tg.CONFIGS[index]
    kernel = tg.compile_for_target(cfg, fused=fused, out=out, even_k=not fused)
    ptx = kernel.asm["ptx"]
    assert ".target sm_90" in ptx
    assert tg.mma_kind(ptx) == ("wgmma" if tg.wgmma_eligible(cfg) else "mma.sync"), cfg
    assert "mma" in ptx and ".s8" in ptx  # int8 operands reach the tensor-core instruction
