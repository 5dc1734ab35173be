"""The C extension built the way a non-x86 machine builds it (portable path only) is still exact.

``COSTBENCH_PORTABLE_ONLY`` drops every x86 include and SIMD path, as on arm64; a SIMD call left
outside the guard would fail this build. The module is loaded in a child process in place of the
installed one, and the public API runs on it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "kernels" / "csrc" / "gemm.c"

CHILD = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    spec = importlib.util.spec_from_file_location("costbench.kernels._gemm", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["costbench.kernels._gemm"] = mod
    from costbench.kernels import gemm
    from costbench.kernels.reference import int8_gemm_reference
    assert gemm.supported_isas() == ["generic"], gemm.supported_isas()
    rng = np.random.default_rng(int(sys.argv[2]))  # the test session's seed
    for m, k, n in [(1, 1, 1), (7, 33, 1000), (33, 129, 7), (64, 256, 48)]:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        pw = gemm.PackedWeight.pack(b, "generic")
        for threads in (1, 2):
            c = gemm.int8_gemm(a, pw, threads=threads, out=np.full((m, n), -7, np.int32))
            np.testing.assert_array_equal(c, int8_gemm_reference(a, b))
    for isa in ("avx2", "avx512vnni", "amx"):
        try:
            gemm.PackedWeight.pack(np.zeros((4, 4), np.int8), isa)
        except RuntimeError as e:
            assert isa in str(e), e
        else:
            raise AssertionError(isa + " accepted by a portable build")
    assert gemm.peak_gops("generic", seconds=0.02) > 0
    # the scalar activation quantizer, on the values the SIMD one is tested with
    for k in (1, 33, 1000):
        x = (rng.standard_normal((300, k)) * rng.uniform(1e-3, 1e3, (300, 1))).astype(np.float32)
        hit = rng.random(x.shape) < 0.02
        x[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0, 3e38, -3e38], np.float32), hit.sum())
        for got, want in zip(gemm.quantize_per_token(x, threads=2), gemm.quantize_per_token_reference(x)):
            np.testing.assert_array_equal(got, want)
    print("portable ok")
""")


def test_portable_only_build_is_exact(tmp_path, seed):
    cc = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(cc.split()[0]) is None:
        pytest.skip(f"no C compiler ({cc}) to build the portable variant")
    so = tmp_path / ("_gemm" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [*cc.split(), "-O2", "-std=gnu11", "-pthread", "-fPIC", "-shared", "-DCOSTBENCH_PORTABLE_ONLY",
           f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(so)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert "immintrin" not in build.stderr
    run = subprocess.run([sys.executable, "-c", CHILD, str(so), str(seed)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "portable ok" in run.stdout, run.stdout + run.stderr
