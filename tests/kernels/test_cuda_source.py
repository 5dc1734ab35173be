"""The CUDA C int8 GEMM source, checked without a GPU: nvcc builds it for sm_90a cleanly (warnings are
errors), the SASS has the s8 tensor-core instructions (IMMA.16832.S8.S8) and no local memory, the PTX has
mma.sync.m16n8k32 and cp.async; plus a numpy emulation of the kernel's fragment mapping (the PTX ISA's
m16n8k32 register layout with the kernel's K permutation) that must reproduce A·B exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from costbench.kernels.gpu import cuda_gemm
from costbench.kernels.reference import int8_gemm_reference

NVCC = cuda_gemm.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found: install the CUDA toolkit (or set CUDA_HOME)")


@pytest.fixture(scope="module")
def cubin(tmp_path_factory):
    return cuda_gemm.build("cubin", (9, 0), cache_dir=tmp_path_factory.mktemp("cubin"))


@needs_nvcc
def test_cubin_builds_for_sm90a_without_spills(cubin):
    assert cubin.path.stat().st_size > 0 and not cubin.cached
    assert any("compute_90a,code=sm_90a" in part for part in cubin.command)
    assert set(cubin.resources) == set(cuda_gemm.kernel_names())
    for name, res in cubin.resources.items():
        assert res["spill_store_bytes"] == 0 and res["spill_load_bytes"] == 0, (name, res)
        assert res["stack_bytes"] == 0, (name, res)
        # the large tile runs 256 threads; two CTAs per SM need <= 128 registers per thread
        limit = 128 if name.endswith("128x128") else 255
        assert res["registers"] <= limit, (name, res)


@needs_nvcc
def test_second_build_comes_from_the_cache(cubin):
    again = cuda_gemm.build("cubin", (9, 0), cache_dir=cubin.path.parent)
    assert again.cached and again.path == cubin.path and again.resources == cubin.resources


@needs_nvcc
def test_sass_has_int8_tensor_core_mma_in_every_kernel(cubin):
    tool = cuda_gemm.find_cuobjdump(NVCC)
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA toolkit or Triton's wheel ships it)")
    text = cuda_gemm.sass(cubin.path, tool)
    functions = re.split(r"\n\s*Function : ", text)[1:]
    names = {f.split()[0] for f in functions}
    assert names == set(cuda_gemm.kernel_names())
    for body in functions:
        name = body.split()[0]
        assert cuda_gemm.count_instructions(body, r"IMMA\.16832\.S8\.S8") >= 16, name
        assert cuda_gemm.count_instructions(body, r"\bLDGSTS\.E\.BYPASS\.128") > 0, name  # cp.async.cg 16 B
        assert cuda_gemm.count_instructions(body, r"LDS\.128") > 0, name  # 16-byte fragment loads
        assert cuda_gemm.count_instructions(body, r"\b(LDL|STL)\b") == 0, name  # nothing in local memory
        assert "HGMMA" not in body  # mma.sync, not wgmma: documented, not hidden


@needs_nvcc
def test_ptx_has_mma_m16n8k32_s8_and_cp_async(tmp_path):
    ptx = cuda_gemm.build("ptx", (9, 0), cache_dir=tmp_path)
    text = ptx.path.read_text()
    assert ".target sm_90a" in text
    for name in cuda_gemm.kernel_names():
        assert f".entry {name}(" in text
    assert text.count("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32") >= 16 * len(cuda_gemm.kernel_names())
    assert "cp.async.cg.shared.global" in text and "cp.async.wait_group" in text


def test_arch_flags():
    assert cuda_gemm.arch_flags((9, 0)) == ["-gencode=arch=compute_90a,code=sm_90a"]
    assert cuda_gemm.arch_flags((8, 9)) == ["-gencode=arch=compute_89,code=sm_89"]
    with pytest.raises(ValueError, match="needs 8.0"):
        cuda_gemm.arch_flags((7, 5))


def test_ptxas_report_parser():
    text = """ptxas info    : Compiling entry function 'cb_int8_gemm_i32_64x64' for 'sm_90a'
ptxas info    : Function properties for cb_int8_gemm_i32_64x64
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 95 registers, used 1 barriers, 16 bytes smem"""
    assert cuda_gemm.parse_ptxas_report(text) == {"cb_int8_gemm_i32_64x64": {
        "stack_bytes": 0, "spill_store_bytes": 8, "spill_load_bytes": 4, "registers": 95, "static_smem_bytes": 16}}


def test_tiles_and_names_match_the_source():
    source = cuda_gemm.SOURCE.read_text()
    for tile in cuda_gemm.TILES.values():
        assert f"{tile.block_m}, {tile.block_n}," in source
    instantiated = re.findall(r"^CB_DEFINE_(?:I32|FUSED)\(", source, re.M)
    assert len(instantiated) == len(cuda_gemm.kernel_names())
    assert cuda_gemm.TILES["128x128"].smem_bytes == 64 * 1024  # above 48 KiB: launchers raise the limit


# ------------------------------------------------------------------------------------------------
# The kernel's warp-level data flow, emulated. Register layout of mma.m16n8k32 (.s8, PTX ISA):
# lane = 4*g + t; A (16x32, row): reg0 = A[g][4t..4t+3], reg1 = A[g+8][4t..], reg2 = A[g][16+4t..],
# reg3 = A[g+8][16+4t..]; B (32x8, col): reg0 = B[4t..4t+3][g], reg1 = B[16+4t..][g];
# C (16x8): c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1].


def _mma(a_regs: np.ndarray, b_regs: np.ndarray) -> np.ndarray:
    """One mma.m16n8k32 from per-lane registers: a_regs (32 lanes, 4 regs, 4 bytes), b_regs (32, 2, 4)."""
    A = np.zeros((16, 32), np.int64)
    B = np.zeros((32, 8), np.int64)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for reg, (row, k0) in enumerate([(g, 4 * t), (g + 8, 4 * t), (g, 16 + 4 * t), (g + 8, 16 + 4 * t)]):
            A[row, k0:k0 + 4] = a_regs[lane, reg]
        for reg, k0 in enumerate([4 * t, 16 + 4 * t]):
            B[k0:k0 + 4, g] = b_regs[lane, reg]
    return A @ B


def _emulate_warp_stage(a_tile: np.ndarray, bt_tile: np.ndarray) -> np.ndarray:
    """A warp's 16x8 accumulator fragment over one 64-byte K stage, loaded as the kernel loads it."""
    acc = np.zeros((32, 4), np.int64)  # per lane: c0..c3
    lanes = [divmod(lane, 4) for lane in range(32)]
    # 16-byte loads: a_frag[0] = row g, a_frag[1] = row g+8, b_frag = Bt row g; bytes 16t..16t+15
    a0 = np.stack([a_tile[g, 16 * t:16 * t + 16] for g, t in lanes]).reshape(32, 4, 4)  # words x,y,z,w
    a1 = np.stack([a_tile[g + 8, 16 * t:16 * t + 16] for g, t in lanes]).reshape(32, 4, 4)
    bf = np.stack([bt_tile[g, 16 * t:16 * t + 16] for g, t in lanes]).reshape(32, 4, 4)
    for s in range(2):  # s=0: words x,y; s=1: words z,w
        lo, hi = 2 * s, 2 * s + 1
        d = _mma(np.stack([a0[:, lo], a1[:, lo], a0[:, hi], a1[:, hi]], axis=1), np.stack([bf[:, lo], bf[:, hi]], 1))
        for lane, (g, t) in enumerate(lanes):
            acc[lane] += [d[g, 2 * t], d[g, 2 * t + 1], d[g + 8, 2 * t], d[g + 8, 2 * t + 1]]
    c = np.zeros((16, 8), np.int64)
    for lane, (g, t) in enumerate(lanes):
        c[g, 2 * t], c[g, 2 * t + 1], c[g + 8, 2 * t], c[g + 8, 2 * t + 1] = acc[lane]
    return c


def test_fragment_mapping_with_k_permutation_reproduces_the_product(rng):
    a = rng.integers(-128, 128, (16, 64), dtype=np.int8)
    bt = rng.integers(-128, 128, (8, 64), dtype=np.int8)
    assert np.array_equal(_emulate_warp_stage(a, bt), int8_gemm_reference(a, np.ascontiguousarray(bt.T)))
    a[:] = -128
    bt[:] = -128
    assert np.all(_emulate_warp_stage(a, bt) == 128 * 128 * 64)
