"""One thread against two, per build, on the amx path: int8_gemm (u8, int32 out), 5 samples of 0.03 s each, median.

    python threads.py BUILD NAME...     # BUILD/NAME.so, each loaded as its own module

Asked for two threads, a build may use one (the amx path's MIN_MACS_PER_THREAD_AMX): `tiles` is this commit's
kernel with that cap at the other paths' 2^21 and the avx512vnni hand-over off (AMX_V2_MAX_K 0), so its t2 column
is two threads on the tiles wherever the problem has 2^21 multiply-accumulates.
"""
import importlib.util, sys
import numpy as np
from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle

SHAPES = [(32, 384, 384), (128, 384, 384), (512, 384, 384), (32, 384, 1536), (49, 672, 192), (49, 320, 1280),
          (196, 480, 112), (12544, 32, 16), (3136, 24, 144), (784, 40, 240)]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(build, names):
    mods = {v: load(build, v) for v in names}
    rng = np.random.default_rng(3)
    print("us a call, median of 5 samples; " + ", ".join(names))
    for m, k, n in SHAPES:
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        ref = a.astype(np.int64) @ b.astype(np.int64)
        row = []
        for v in names:
            gemm._gemm = mods[v]
            pw = gemm.PackedWeight.pack(b, "amx")
            out = np.empty((m, n), np.int32)
            for th in (1, 2):
                if not np.array_equal(gemm.int8_gemm(a, pw, threads=th, out=out), ref):
                    raise SystemExit(f"{v}: inexact at {m}x{k}x{n}")
                ts = []
                for _ in range(5):
                    settle()
                    ts.append(_per_call(lambda: gemm.int8_gemm(a, pw, threads=th, out=out), 0.03))
                row.append(f"{v} t{th} {np.median(ts) * 1e6:6.1f}")
        print(f"{f'{m}x{k}x{n}':>12}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
