"""MiniLM end to end with and without the feed-forward job, beside torch dynamic int8: 25 interleaved rounds of
0.2 s, batch 8 x 64 tokens, 2 threads. Both costbench models have every other fusion; the one without the job
runs each feed-forward pair as two Int8Linear calls. Their outputs are compared bit for bit first. Run from the
repository root, nothing else running:
    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-7/ffn_ab.py
"""
import copy
import time

import numpy as np
import torch

from costbench.core.artifacts import default_cache_dir
from costbench.core.stats import ratio_of_medians_ci
from costbench.harness.build.zoo.registry import zoo_model
from costbench.kernels import linear
from costbench.kernels.bench import first_batch

torch.set_num_threads(2)
bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
fp32 = bundle.torch_module().eval()
with_job = copy.deepcopy(fp32)
linear.swap_linear_layers(with_job, threads=2)
detect = linear._is_feed_forward_layer
linear._is_feed_forward_layer = lambda layer: False  # every other fusion, the pairs as two calls
two_calls = copy.deepcopy(fp32)
linear.swap_linear_layers(two_calls, threads=2)
linear._is_feed_forward_layer = detect
tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
x = {k: torch.from_numpy(v) for k, v in first_batch(bundle.evaluation.inputs, 8).items()}
rng = np.random.default_rng(0)
with torch.inference_mode():
    print("outputs bit-identical:", torch.equal(with_job(**x), two_calls(**x)))
    fns = {"feed-forward job": lambda: with_job(**x), "two calls": lambda: two_calls(**x),
           "torch dynamic int8": lambda: tq(**x)}
    times = {k: [] for k in fns}
    names = list(fns)
    for _ in range(25):
        for i in rng.permutation(len(names)):
            fn = fns[names[i]]
            fn()
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < 0.2:
                fn()
                n += 1
            times[names[i]].append((time.perf_counter() - t0) / n)
for k, v in times.items():
    print(f"{k:20s} {1e3 * np.median(v):6.2f} ms")
for num, den in (("two calls", "feed-forward job"), ("torch dynamic int8", "feed-forward job"),
                 ("torch dynamic int8", "two calls")):
    lo, hi = ratio_of_medians_ci(times[den], times[num])
    print(f"{num} / {den}: {np.median(times[num]) / np.median(times[den]):.3f} [{lo:.3f}-{hi:.3f}]")
