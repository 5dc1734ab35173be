"""The traced build (BUILD/trace.so): 2000 back-to-back int8_gemm calls a line, on 1 thread and then on 2."""
import importlib.util, sys
import numpy as np
from costbench.kernels import gemm

spec = importlib.util.spec_from_file_location("trace._gemm", f"{sys.argv[1]}/trace.so")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
gemm._gemm = mod
rng = np.random.default_rng(4)
for m, k, n in [(49, 672, 192), (32, 384, 384), (128, 384, 384), (512, 384, 384), (2048, 384, 384)]:
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    pw = gemm.PackedWeight.pack(b, "amx")
    out = np.empty((m, n), np.int32)
    for th in (1, 2):
        print(f"{m}x{k}x{n}, {th} thread(s): ", end="", file=sys.stderr, flush=True)
        for _ in range(2000):
            gemm.int8_gemm(a, pw, threads=th, out=out)
