"""What the pool's placement bug did to a process: all-MiniLM-L6-v2 (batch 8 x 64 tokens, 2 threads), torch dynamic
int8 and costbench-kernels, median of 15 forwards after 3 warm-up ones, in a process whose calling thread may run on
all its CPUs and in one where it was confined to one CPU before torch started its threads (as the bug left it in
some processes). Run each case in its own process:

    python affinity_effect.py all      # or: one
"""
import copy, os, sys, time
import numpy as np
if sys.argv[1] == "one":
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
import torch
from costbench.core.artifacts import default_cache_dir
from costbench.harness.build.zoo.registry import zoo_model
from costbench.kernels.bench import first_batch, int8_variants
torch.set_num_threads(2)
bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
_, tq, ours, _ = int8_variants(bundle.torch_module(), 2)
batch = {k: torch.from_numpy(v) for k, v in first_batch(bundle.evaluation.inputs, 8).items()}
out = []
with torch.inference_mode():
    for name, m in (("torch dynamic int8", tq), ("costbench-kernels", ours)):
        for _ in range(3):
            m(**batch)
        ts = []
        for _ in range(15):
            t0 = time.perf_counter(); m(**batch); ts.append(time.perf_counter() - t0)
        out.append(f"{name} {np.median(ts) * 1e3:.1f} ms")
print(f"calling thread's CPUs {sorted(os.sched_getaffinity(0))}: " + "; ".join(out))
