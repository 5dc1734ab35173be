"""Builds of gemm.c, interleaved in one process on the amx path, with ONNX Runtime's MatMulInteger (MLAS) beside them.

    python ab.py gemm BUILD ROUNDS NAME...     # BUILD/NAME.so, each loaded as its own module
    python ab.py linear BUILD ROUNDS NAME...   # int8_linear on torch's OpenMP team, MiniLM's M = 512 layers

gemm: every build packs its own weight (the packing may differ between builds) and runs int8_gemm (u8 activations, int32
out, 2 threads) as the bench times "ours"; ORT is prepared as the bench prepares it. Each round times every
implementation once (0.03 s of back-to-back calls, after the process's threads have gone quiet) in an order
shuffled per round; a ratio is the median over rounds of that round's ratio (paired, so a slow spell that both
samples of a round shared cancels).

linear: what Int8Linear runs inside a torch model (fp32 x quantized per token, fp32 out with the per-channel
scales and bias, GELU on the 1536-wide layer, the residual on the others), on torch's OpenMP team, with the
first build as the reference for bits: every build must give the same output.
"""
import importlib.util, sys, time
import numpy as np
from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle
from costbench.kernels.peers import OrtMatMulInteger

SHAPES = [(32, 384, 384), (128, 384, 384), (512, 384, 384), (32, 384, 1536), (512, 384, 1536), (512, 1536, 384),
          (2048, 384, 1536), (12544, 32, 16), (3136, 24, 144), (784, 40, 240), (784, 240, 40), (196, 80, 480),
          (196, 480, 112), (49, 672, 192), (49, 1152, 320), (49, 320, 1280)]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name.replace('-', '_')}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LINEAR_SHAPES = [(512, 384, 384, None), (512, 384, 1536, "gelu"), (512, 1536, 384, None)]


def linear(build, rounds, names):
    import torch  # noqa: F401  (its libgomp is the team)
    from costbench.kernels.linear import torch_openmp_runtime

    mods = {v: load(build, v) for v in names}
    team = torch_openmp_runtime()
    for mod in mods.values():
        mod.use_openmp(team)
    rng = np.random.default_rng(2)
    fns = []
    for m, k, n, act in LINEAR_SHAPES:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        ws = rng.uniform(0.001, 0.01, n).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        res = None if act else rng.standard_normal((m, n)).astype(np.float32)
        row, first = {}, None
        for v in names:
            gemm._gemm = mods[v]
            pw = gemm.PackedWeight.from_linear_weight(w, "amx")
            out = np.empty((m, n), np.float32)

            def run(x=x, pw=pw, ws=ws, bias=bias, out=out, mod=mods[v], act=act, res=res):
                gemm._gemm = mod
                return gemm.int8_linear(x, pw, ws, bias, threads=2, out=out, openmp=True, activation=act,
                                        residual=res)
            y = run().copy()
            if first is None:
                first = y
            elif not np.array_equal(y, first):
                raise SystemExit(f"{v}: not the bits of {names[0]} at {m}x{k}x{n}")
            row[v] = run
        fns.append(row)
    res_t = [{v: [] for v in names} for _ in LINEAR_SHAPES]
    for r in range(rounds):
        for i, row in enumerate(fns):
            for j in rng.permutation(len(names)):
                settle()
                res_t[i][names[j]].append(_per_call(row[names[j]], 0.03))
    print(f"{'int8_linear (team)':>22} " + " ".join(f"{v + ' us':>12}" for v in names) + "  "
          + " ".join(f"{names[0] + '/' + v:>16}" for v in names[1:]))
    for i, (m, k, n, act) in enumerate(LINEAR_SHAPES):
        t = {v: np.array(res_t[i][v]) for v in names}
        label = f"{m}x{k}x{n} {act or 'residual'}"
        print(f"{label:>22} " + " ".join(f"{np.median(t[v]) * 1e6:12.1f}" for v in names)
              + "  " + " ".join(f"{np.median(t[names[0]] / t[v]):16.2f}" for v in names[1:]), flush=True)


def main(build, rounds, names):
    mods = {v: load(build, v) for v in names}
    default = gemm._gemm
    rng = np.random.default_rng(1)
    fns = []
    for m, k, n in SHAPES:
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        ref = a.astype(np.int64) @ b.astype(np.int64)
        row = {}
        for v in names:
            gemm._gemm = mods[v]
            pw = gemm.PackedWeight.pack(b, "amx")
            out = np.empty((m, n), np.int32)

            def run(a=a, pw=pw, out=out, mod=mods[v]):
                gemm._gemm = mod
                return gemm.int8_gemm(a, pw, threads=2, out=out)
            if not np.array_equal(run(), ref):
                raise SystemExit(f"{v}: inexact at {m}x{k}x{n}")
            row[v] = run
        gemm._gemm = default
        ort = OrtMatMulInteger().prepare(b, "u8", 2)
        if not np.array_equal(ort.run(a), ref):
            print(f"note: ORT inexact at {m}x{k}x{n}", flush=True)
        row["ort"] = lambda a=a, r=ort.run: r(a)
        fns.append(row)
    keys = names + ["ort"]
    res = [{k: [] for k in keys} for _ in SHAPES]
    t0 = time.time()
    for r in range(rounds):
        for i, row in enumerate(fns):
            for j in rng.permutation(len(keys)):
                settle()
                res[i][keys[j]].append(_per_call(row[keys[j]], 0.03))
        print(f"round {r + 1} done at {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"{'shape':>16} " + " ".join(f"{k + ' us':>12}" for k in keys) + "  "
          + " ".join(f"{'ort/' + v:>14}" for v in names) + "  " + " ".join(f"{names[0] + '/' + v:>16}" for v in names[1:]))
    for i, (m, k, n) in enumerate(SHAPES):
        t = {key: np.array(res[i][key]) for key in keys}
        print(f"{f'{m}x{k}x{n}':>16} " + " ".join(f"{np.median(t[key]) * 1e6:12.1f}" for key in keys) + "  "
              + " ".join(f"{np.median(t['ort'] / t[v]):14.2f}" for v in names) + "  "
              + " ".join(f"{np.median(t[names[0]] / t[v]):16.2f}" for v in names[1:]), flush=True)


if __name__ == "__main__":
    what, build, rounds, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    (linear if what == "linear" else main)(build, rounds, names)
