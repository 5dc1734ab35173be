"""Where all-MiniLM-L6-v2's time goes on the avx512vnni and avx2 paths (batch 8 x 64 tokens, 2 threads): the time
inside Int8Linear.forward (every int8 layer's call: quantizer, GEMM, epilogue passes) and inside feed_forward (the
feed-forward pair: one job on avx512vnni, two Int8Linear calls elsewhere, so those overlap the first figure),
against the whole forward; median of 10 forwards after 3 warm-up ones, each path in turn.

    python minilm_paths.py
"""
import copy, time, numpy as np, torch
from costbench.core.artifacts import default_cache_dir
from costbench.harness.build.zoo.registry import zoo_model
from costbench.kernels import linear as L
from costbench.kernels.bench import first_batch
from costbench.kernels.linear import swap_linear_layers
torch.set_num_threads(2)
bundle = zoo_model("all-minilm-l6-v2").load(default_cache_dir())
fp32 = bundle.torch_module().eval()
batched = {k: torch.from_numpy(v) for k, v in first_batch(bundle.evaluation.inputs, 8).items()}
acc = {"linear": 0.0, "ffn": 0.0}
orig_fwd, orig_ffn = L.Int8Linear.forward, L.feed_forward
def fwd(self, *a, **k):
    t0 = time.perf_counter(); r = orig_fwd(self, *a, **k); acc["linear"] += time.perf_counter() - t0; return r
def ffn(*a, **k):
    t0 = time.perf_counter(); r = orig_ffn(*a, **k); acc["ffn"] += time.perf_counter() - t0; return r
L.Int8Linear.forward = fwd
for isa in ["avx512vnni", "avx2"]:
    m = copy.deepcopy(fp32); swap_linear_layers(m, isa=isa, threads=2)
    L.feed_forward = ffn
    with torch.inference_mode():
        for _ in range(3): m(**batched)
        tot = []; lin = []; ff = []
        for _ in range(10):
            acc["linear"] = acc["ffn"] = 0.0
            t0 = time.perf_counter(); m(**batched); tot.append(time.perf_counter() - t0)
            lin.append(acc["linear"]); ff.append(acc["ffn"])
    print(f"{isa}: forward {1e3*np.median(tot):.1f} ms; inside Int8Linear.forward {1e3*np.median(lin):.1f} ms; "
          f"feed_forward (includes its Int8Linear calls when unfused) {1e3*np.median(ff):.1f} ms", flush=True)
