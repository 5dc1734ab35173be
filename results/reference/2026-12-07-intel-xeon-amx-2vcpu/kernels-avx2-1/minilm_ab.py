"""all-MiniLM-L6-v2 (batch 8 x 64 tokens, from the zoo) with its Linear layers through Int8Linear on the avx2 path
of two builds of gemm.c, and on avx2-saturating (7-bit activations) of the second, beside torch dynamic int8 and
fp32, interleaved in one process; then each model's embedding parity with fp32 over the zoo's sentences.

    python minilm_ab.py BUILD ROUNDS BEFORE AFTER     # BUILD/BEFORE.so, BUILD/AFTER.so

A round times each model once (0.2 s of back-to-back forward passes) in an order shuffled per round; a ratio is
the median over rounds of that round's ratio. Both builds' outputs are checked bit-identical first.
"""
import copy
import importlib.util
import sys

import numpy as np
import torch

from costbench.core.artifacts import default_cache_dir
from costbench.harness.build.zoo.registry import zoo_model
from costbench.kernels import gemm, linear
from costbench.kernels.bench import first_batch, int8_variants, time_interleaved
from costbench.kernels.linear import swap_linear_layers, torch_openmp_runtime


def load(build, name):
    spec = importlib.util.spec_from_file_location(f"{name}._gemm", f"{build}/{name}.so")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build, rounds, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
mods = {before: load(build, before), after: load(build, after)}
seed = int(np.random.SeedSequence().entropy % 2**32)
rng = np.random.default_rng(seed)
bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
fp32, tq, _, _ = int8_variants(bundle.torch_module(), 2)
omp = torch_openmp_runtime()  # looked up once; each build's pool is pointed at torch's team
for mod in mods.values():
    if omp:
        mod.use_openmp(omp)
models = {"torch fp32": (fp32, None), "torch dynamic int8": (tq, None)}
for name, isa, mod in ((f"avx2 {before}", "avx2", before), (f"avx2 {after}", "avx2", after),
                       (f"avx2-saturating {after}", "avx2-saturating", after)):
    gemm._gemm = mods[mod]
    m = copy.deepcopy(fp32)
    swap_linear_layers(m, isa=isa, threads=2)
    models[name] = (m, mods[mod])


def forward(model, mod, inputs):
    if mod is not None:
        gemm._gemm = linear._gemm = mod
    return model(**inputs)


batch = {k: torch.from_numpy(v) for k, v in first_batch(bundle.evaluation.inputs, 8).items()}
everything = {k: torch.from_numpy(v) for k, v in bundle.evaluation.inputs.items()}
with torch.inference_mode():
    embs = {name: forward(m, mod, everything).numpy() for name, (m, mod) in models.items()}
    assert np.array_equal(embs[f"avx2 {before}"], embs[f"avx2 {after}"]), "the builds differ"
    fns = {name: (lambda m=m, mod=mod: forward(m, mod, batch)) for name, (m, mod) in models.items()}
    t = {k: np.array(v) for k, v in time_interleaved(fns, rounds, 0.2, rng).items()}
ref = embs["torch fp32"]
print(f"seed {seed}; {rounds} interleaved rounds of 0.2 s, 2 threads, batch 8 x {batch['input_ids'].shape[1]} "
      f"tokens; parity over {len(ref)} sentences; the two builds' embeddings: bit-identical")
print(f"{'model':>26} {'median ms':>10} {'vs torch dyn. int8':>19} {'vs ' + before:>16} {'mean cos':>9} {'min cos':>9}")
for name in models:
    cos = (embs[name] * ref).sum(1) / (np.linalg.norm(embs[name], axis=1) * np.linalg.norm(ref, axis=1))
    r = np.median(t["torch dynamic int8"] / t[name])
    rb = np.median(t[f"avx2 {before}"] / t[name])
    print(f"{name:>26} {1e3 * np.median(t[name]):10.1f} {r:19.2f} {rb:16.2f} {cos.mean():9.5f} {cos.min():9.5f}")
