"""The GELU epilogue pass in each form this CPU runs, on one MiniLM layer's intermediate output at batch 8 x 64 tokens
(512 x 1536 floats, as the avx2, generic and amx paths apply it after their GEMM): seconds a call, the forms
interleaved in a shuffled order every round, each sample the mean of calls filling 0.05 s; each form's ratio to the
scalar one is the median of per-round ratios with its bootstrap interval. Every form's bits are checked against
the scalar one's first.

    python gelu_forms.py [rounds]
"""
import sys
import numpy as np
from costbench.core.stats import paired_median_ratio
from costbench.harness.machine import env
from costbench.kernels import _gemm
from costbench.kernels.bench import time_interleaved

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 21
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
names = {0: "scalar", 2: "avx2", 3: "avx512"}
needs = {2: {"avx2", "fma"}, 3: {"avx512f"}}
forms = [f for f in names if f not in needs or needs[f] <= env.cpu_flags()]
y = (rng.standard_normal(512 * 1536) * 3).astype(np.float32)
ref = y.copy()
_gemm.gelu(ref, ref.size, 0)
for f in forms:
    z = y.copy()
    _gemm.gelu(z, z.size, f)
    assert np.array_equal(z.view(np.uint32), ref.view(np.uint32)), names[f]
bufs = {f: y.copy() for f in forms}  # in place, over and over: GELU's own output is as good an input
fns = {names[f]: (lambda f=f: _gemm.gelu(bufs[f], bufs[f].size, f)) for f in forms}
times = time_interleaved(fns, rounds, 0.05, rng)
print(f"seed {seed}; {rounds} interleaved rounds of 0.05 s; 512 x 1536 floats; same bits in every form: yes")
for name, ts in times.items():
    line = f"{name:7s} median {np.median(ts) * 1e3:8.3f} ms  (min {min(ts) * 1e3:.3f}, max {max(ts) * 1e3:.3f})"
    if name != "scalar":
        r, lo, hi = paired_median_ratio(ts, times["scalar"])
        line += f"  scalar / {name} {r:.1f} [{lo:.1f}-{hi:.1f}]"
    print(line)
print("per MiniLM forward (6 layers):", ", ".join(f"{n} {6 * np.median(ts) * 1e3:.2f} ms" for n, ts in times.items()))
