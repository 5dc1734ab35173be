"""The VNNI GEMM's thread split: the previous build (ties along N) against this one (ties along the longer of M and
N) and ONNX Runtime MatMulInteger, side by side on the shapes where the choice changed, 2 threads.

    python split_ab.py OLD_SO [ROUNDS] [SECONDS]

OLD_SO is ``kernels/_gemm*.so`` built from the commit before the change (run.sh builds it). Each round times the
three in a fresh random order, ``SECONDS`` of back-to-back calls each, after the previous one's threads have gone
quiet. Per shape: median µs and, for each pair, the median of the per-round ratios with its 95% bootstrap interval,
and the rounds where a build ran at less than 2/3 of its own best speed.
"""

import importlib.util
import sys

import numpy as np

from costbench.core.stats import paired_median_ratio
from costbench.kernels import _gemm, gemm, peers
from costbench.kernels.bench import _per_call, settle

SHAPES = [(2048, 384, 384), (2048, 384, 1152), (2048, 384, 1536), (2048, 1536, 384), (512, 384, 384),
          (512, 1536, 384), (784, 240, 40), (196, 480, 112)]


def main() -> None:
    spec = importlib.util.spec_from_file_location("_gemm", sys.argv[1])
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 41
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    print(f"seed {seed}; {rounds} rounds of {seconds} s; old build {sys.argv[1]}")
    for m, k, n in SHAPES:
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        pw = gemm.PackedWeight.pack(b, "avx512vnni")
        ort = peers.OrtMatMulInteger().prepare(b, "u8", 2).run
        out = np.empty((m, n), np.int32)

        def raw(module):  # both builds called the same way, without the Python wrapper's checks (~1-2 µs)
            return lambda: module.gemm(module.ISA_AVX512VNNI, a, True, m, k, k, pw.data, pw.n, pw.colsum, None, None,
                                       None, None, out, False, 2)

        fns = {"old": raw(old), "new": raw(_gemm), "ort": lambda: ort(a)}
        exact = a.astype(np.int64) @ b.astype(np.int64)
        for name in ("old", "new"):
            out.fill(0)
            fns[name]()
            assert (out == exact).all(), name
        ts = {name: [] for name in fns}
        for _ in range(rounds):
            for i in rng.permutation(len(fns)):
                name = list(fns)[i]
                settle()
                ts[name].append(_per_call(fns[name], seconds))
        t = {name: np.array(v) for name, v in ts.items()}

        def pair(num: str, den: str) -> str:
            r, lo, hi = paired_median_ratio(t[den], t[num])
            return f"{num}/{den} {r:.3f} [{lo:.3f}-{hi:.3f}]"

        slow = {name: int((v > 1.5 * v.min()).sum()) for name, v in t.items()}
        print(f"{m}x{k}x{n}: µs old {1e6 * np.median(t['old']):.0f} new {1e6 * np.median(t['new']):.0f} "
              f"ort {1e6 * np.median(t['ort']):.0f} | {pair('old', 'new')} | {pair('ort', 'new')} | "
              f"{pair('ort', 'old')} | rounds at < 2/3 of best speed: "
              + " ".join(f"{name} {c}" for name, c in slow.items()), flush=True)


if __name__ == "__main__":
    main()
