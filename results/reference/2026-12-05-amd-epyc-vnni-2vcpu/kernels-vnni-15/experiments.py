"""The experiments of this folder, on variants built by variants.py (BUILD/<name>.so), each loaded as its own module.

    python experiments.py trace BUILD VARIANT MxKxN   # one process, 30 samples of 0.03 s on 2 threads; V2_TRACE=1 prints
    python experiments.py halves                      # the committed kernel on 1 thread: the top and bottom halves of 784x40x240
    python experiments.py offsets                     # the committed kernel, output at five offsets within a page, interleaved
    python experiments.py ab BUILD ROUNDS VARIANT...  # variants interleaved in one process, 0.03 s a sample, paired ratios
"""
import importlib.util, sys, time
import numpy as np
from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle

AB_SHAPES = [(784, 40, 240), (3136, 24, 144), (12544, 32, 16), (784, 240, 40), (128, 384, 1536), (512, 384, 384),
             (32, 384, 384)]


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name.replace('-', '_')}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def operands(m, k, n, rng):
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    return rng.integers(0, 256, (m, k), dtype=np.uint8), gemm.PackedWeight.pack(b, "avx512vnni"), np.empty((m, n), np.int32)


def sample(a, pw, out, threads=2):
    settle()
    return _per_call(lambda: gemm.int8_gemm(a, pw, threads=threads, out=out), 0.03)


def trace(build, variant, shape):
    gemm._gemm = load(build, variant)
    a, pw, out = operands(*map(int, shape.split("x")), np.random.default_rng(1))
    ts = [sample(a, pw, out) for _ in range(30)]
    print(f"{variant} {shape}: median {np.median(ts) * 1e6:.1f} us a call", file=sys.stderr, flush=True)


def halves():
    a, pw, out = operands(784, 40, 240, np.random.default_rng(1))
    cases = {"rows 0-389": (a[:390], out[:390]), "rows 390-783": (a[390:], out[390:]),
             "rows 390-779": (a[390:780], out[390:780])}
    res = {c: [] for c in cases}
    for _ in range(10):
        for c, (aa, oo) in cases.items():
            res[c].append(sample(aa, pw, oo, threads=1))
    print("one thread, 784x40x240's halves (median of 10 samples): " +
          "; ".join(f"{c}: {np.median(v) * 1e6:.1f} us" for c, v in res.items()))


def offsets():
    m, k, n = 784, 40, 240
    a, pw, _ = operands(m, k, n, np.random.default_rng(1))
    offs = [0, 64, 1024, 2048, 3072]
    outs = [np.empty(m * n * 4 + 8192, np.uint8)[o:o + m * n * 4].view(np.int32).reshape(m, n) for o in offs]
    res = {o: [] for o in offs}
    for _ in range(12):
        for o, out in zip(offs, outs):
            res[o].append(sample(a, pw, out))
        print("2 threads, us a call by the output's offset: " + " ".join(f"{o}: {res[o][-1] * 1e6:5.1f}" for o in offs), flush=True)
    print("medians: " + "; ".join(f"offset {o} (address % 4096 = {out.ctypes.data % 4096}): {np.median(res[o]) * 1e6:.1f} us"
                                  for o, out in zip(offs, outs)))


def ab(build, rounds, variants):
    mods = {v: load(build, v) for v in variants}
    rng = np.random.default_rng(1)
    data = [operands(*s, rng) for s in AB_SHAPES]
    res = {(i, v): [] for i in range(len(AB_SHAPES)) for v in variants}
    t0 = time.time()
    for r in range(rounds):
        line = []
        for i, (a, pw, out) in enumerate(data):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                gemm._gemm = mods[v]
                res[(i, v)].append(sample(a, pw, out))
            line.append("x".join(map(str, AB_SHAPES[i])) + " " + " ".join(f"{res[(i, v)][-1] * 1e6:5.0f}" for v in variants))
        print(f"{time.time() - t0:5.1f}s " + " | ".join(line), flush=True)
    first = variants[0]
    for i, s in enumerate(AB_SHAPES):
        b = np.array(res[(i, first)])
        print("x".join(map(str, s)) + ": " + "; ".join(
            f"{v} {np.median(res[(i, v)]) * 1e6:.1f} us ({first}/{v} paired median {np.median(b / np.array(res[(i, v)])):.3f})"
            for v in variants))


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "trace":
        trace(*args)
    elif what == "halves":
        halves()
    elif what == "offsets":
        offsets()
    else:
        ab(args[0], int(args[1]), args[2:])
