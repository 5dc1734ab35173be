"""784x40x240 second by second in one process, to see the VM's slow phases from every side: ours on two threads
writing one reused output (as the bench calls it), ours on two threads writing a fresh output each call, ours on
one thread, and ONNX Runtime MatMulInteger on two threads (whose outputs come from its own allocator); each
sample 0.03 s of back-to-back calls, all four in each round, in turn.

    python phase_peers.py ROUNDS
"""
import sys, time
import numpy as np
from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle
from costbench.kernels.peers import OrtMatMulInteger

m, k, n = 784, 40, 240
rng = np.random.default_rng(1)
b = rng.integers(-128, 128, (k, n), dtype=np.int8)
a = rng.integers(0, 256, (m, k), dtype=np.uint8)
pw = gemm.PackedWeight.pack(b, "avx512vnni")
out = np.empty((m, n), np.int32)
ort = OrtMatMulInteger().prepare(b, "u8", 2).run
exact = a.astype(np.int64) @ b.astype(np.int64)
assert np.array_equal(ort(a), exact) and np.array_equal(gemm.int8_gemm(a, pw, threads=2, out=out), exact)
fns = {"ours reused": lambda: gemm.int8_gemm(a, pw, threads=2, out=out),
       "ours fresh": lambda: gemm.int8_gemm(a, pw, threads=2),
       "ours 1 thread": lambda: gemm.int8_gemm(a, pw, threads=1, out=out),
       "ORT": lambda: ort(a)}
res = {f: [] for f in fns}
t0 = time.time()
for r in range(int(sys.argv[1])):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
        settle()
        res[name].append(_per_call(fns[name], 0.03) * 1e6)
    print(f"{time.time() - t0:6.1f}s " + " | ".join(f"{f} {res[f][-1]:5.1f}" for f in fns), flush=True)
ours = np.array(res["ours reused"])
slow = ours > 1.5 * np.median(np.sort(ours)[: max(1, len(ours) // 4)])  # past 1.5x the fastest quarter's median
print(f"rounds {len(ours)}, of which slow for ours (reused output, over 1.5x its fastest quarter): {int(slow.sum())}")
for part, mask in (("all rounds", np.ones_like(slow)), ("slow rounds", slow), ("other rounds", ~slow)):
    if mask.any():
        print(f"{part}: " + "; ".join(f"{f} median {np.median(np.array(v)[mask]):.1f} us" for f, v in res.items()) +
              f"; ORT/ours-reused paired median {np.median(np.array(res['ORT'])[mask] / ours[mask]):.2f}")
