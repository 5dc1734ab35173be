"""Where two threads of ours lose to ONNX Runtime's: ours and ONNX Runtime MatMulInteger on one and on two
threads, at a small-K shape (EfficientNet-Lite0's 784x40x240) and at a MiniLM shape (512x384x384), u8 x s8 ->
int32, 10 interleaved rounds of 0.15 s each (shuffled every round; each sample after the previous one's threads
went quiet). Prints microseconds per call (median over rounds) and each one's two-thread speed-up. Run from the
repository root, nothing else running:
    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-4/two_threads.py > .../two_threads.txt"""
import numpy as np

from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle
from costbench.kernels.peers import OrtMatMulInteger

rng = np.random.default_rng(20261206)
for m, k, n in ((784, 40, 240), (512, 384, 384)):
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    pw = gemm.PackedWeight.pack(b, gemm.best_isa())
    ort = {t: OrtMatMulInteger().prepare(b, "u8", t) for t in (1, 2)}
    fns = {"ours 1 thread": lambda: gemm.int8_gemm(a, pw, threads=1),
           "ours 2 threads": lambda: gemm.int8_gemm(a, pw, threads=2),
           "ORT 1 thread": lambda: ort[1].run(a), "ORT 2 threads": lambda: ort[2].run(a)}
    times = {name: [] for name in fns}
    for _ in range(10):
        for name in rng.permutation(list(fns)):
            settle()
            times[name].append(_per_call(fns[name], 0.15))
    us = {name: 1e6 * float(np.median(t)) for name, t in times.items()}
    print(f"{m}x{k}x{n} ({gemm.best_isa()}): " + ", ".join(f"{name} {v:.1f} us" for name, v in us.items()))
    print(f"    two-thread speed-up: ours x{us['ours 1 thread'] / us['ours 2 threads']:.2f}, "
          f"ORT x{us['ORT 1 thread'] / us['ORT 2 threads']:.2f}; ORT / ours on two threads "
          f"x{us['ours 2 threads'] / us['ORT 2 threads']:.2f} slower for ours")
