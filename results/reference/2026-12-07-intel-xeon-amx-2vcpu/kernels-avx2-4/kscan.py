"""Time our GEMM (int32 out, u8 A; ISA env, default avx2) at fixed M, N over K and fit time = fixed + per-k.

Usage: python kscan.py M N K1,K2,... [THREADS]. Medians of 15 samples of at least 50 ms each, after 20 warm calls."""
import os, sys, time, numpy as np
from costbench.kernels import gemm
isa = os.environ.get("ISA", "avx2")
M, N = int(sys.argv[1]), int(sys.argv[2]); ks = [int(x) for x in sys.argv[3].split(",")]; threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
rng = np.random.default_rng(0)
rows = []
for k in ks:
    b = rng.integers(-128, 128, (k, N), dtype=np.int8); a = rng.integers(0, 256, (M, k), dtype=np.uint8)
    pw = gemm.PackedWeight.pack(b, isa); out = gemm.aligned_array((M, N), np.int32)
    for _ in range(20): gemm.int8_gemm(a, pw, threads=threads, out=out)
    ts = []
    for _ in range(15):
        n = 0; t = time.perf_counter()
        while True:
            gemm.int8_gemm(a, pw, threads=threads, out=out); n += 1
            el = time.perf_counter() - t
            if el > 0.05: break
        ts.append(el / n)
    t = float(np.median(ts))
    peak = gemm.peak_gops(isa, threads) if k == ks[0] else peak
    rows.append((k, t))
    print(f"{M}x{k}x{N} {isa} {threads}t: {t*1e6:.1f} us, {2*M*k*N/t/1e9:.0f} GOPS = {2*M*k*N/t/1e9/peak:.0%} of {peak:.0f}")
ks_, ts_ = np.array([r[0] for r in rows], float), np.array([r[1] for r in rows])
slope, icpt = np.polyfit(ks_, ts_, 1)
print(f"fit: {icpt*1e6:.1f} us + {slope*1e6:.2f} us per k ({icpt/ (M*N)*1e9:.3f} ns per output; at K={ks[0]} the intercept is {icpt/ts_[0]:.0%})")
