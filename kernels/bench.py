"""``costbench kernels bench``: ours against every peer, side by side, interleaved, in one run.

For each GEMM shape, every implementation is prepared once (weights packed/folded), then timed in
rounds: each round runs every implementation once, in a fresh random order, for about
``min_time`` seconds each, each sample once the previous one's threads have stopped spinning
(:func:`settle`). Interleaving makes a busy neighbour slow everyone alike; the ratio of medians (peer time / our time, > 1 means ours is faster) gets a bootstrap 95% interval. GOPS count
2·M·K·N operations. The int8 ceiling of each path is measured with a register-only multiply-add
loop (:func:`costbench.kernels.gemm.peak_gops`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from costbench.kernels import _gemm, gemm
from costbench.kernels.peers import OpenVinoInt8MatMul, OrtMatMulInteger, Ours, Peer, TorchDynamicLinear, TorchFp32, TorchIntMM

MINILM_K_N = [(384, 384), (384, 1152), (384, 1536), (1536, 384)]
M_VALUES = [1, 8, 32, 128, 512, 2048]
# EfficientNet-Lite0's 1x1 convolutions at batch 1 as GEMMs: M = H*W, K = C_in, N = C_out
EFFICIENTNET_1X1 = [(12544, 32, 16), (3136, 24, 144), (784, 40, 240), (784, 240, 40), (196, 80, 480),
                    (196, 480, 112), (49, 672, 192), (49, 1152, 320), (49, 320, 1280)]


def default_shapes(quick: bool = False) -> list[tuple[str, int, int, int]]:
    """(label, M, K, N) for the benchmark."""
    ms = [1, 32, 512] if quick else M_VALUES
    kn = MINILM_K_N[1:3] if quick else MINILM_K_N
    shapes = [("minilm", m, k, n) for k, n in kn for m in ms]
    eff = EFFICIENTNET_1X1[2:5] if quick else EFFICIENTNET_1X1
    shapes += [("effnet-1x1", m, k, n) for m, k, n in eff]
    return shapes


def extra_paths(best: str) -> list[str]:
    """Our other paths a bench times beside ``best``: avx512vnni and avx2 where the CPU has them, and where the best
    is avx2 (no VNNI, or forced), the inexact avx2-saturating too: the fast mode such a CPU could choose."""
    isas = gemm.supported_isas()
    more = [i for i in ("avx512vnni", "avx2") if i in isas and i != best]
    return more + (gemm.inexact_isas() if best == "avx2" else [])


def bench_peers() -> list[Peer]:
    """The implementations timed: ours (the best path, or the one $COSTBENCH_KERNELS_ISA forces, then
    :func:`extra_paths`) and the vendors'."""
    best = gemm.best_isa()
    ours: list[Peer] = [Ours(best)] + [Ours(i) for i in extra_paths(best)]
    return [*ours, OrtMatMulInteger(), TorchIntMM(), TorchDynamicLinear("x86", False),
            OpenVinoInt8MatMul(dynamic_quantization=True), TorchFp32()]


@dataclass
class Series:
    name: str
    a_type: str
    times: list[float] = field(default_factory=list)  # seconds per call, one per round
    note: str = ""
    ops: float = 0.0  # operations per call, where it is not the shape's 2·M·K·N (the peak loop)


def _per_call(fn: Callable[[], object], min_time: float) -> float:
    fn()
    n, t0 = 1, time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    reps = max(1, int(min_time / max(dt, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def narrowed_threads(cpus: set[int]) -> dict[int, list[int]]:
    """The threads of this process (but the kernel pool's own) that may run on fewer than ``cpus``: tid to CPUs.

    A thread pool started after a thread's CPUs were narrowed inherits them: ONNX Runtime's or torch's OpenMP team
    then shares one CPU while the other idles, and its timings say nothing about the hardware. The bench reports
    any such thread at the end of a run.
    """
    import os

    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == _gemm.POOL_THREAD_NAME:  # moved off the caller's CPU on purpose
                    continue
            allowed = os.sched_getaffinity(int(tid))
        except (FileNotFoundError, ProcessLookupError, OSError):
            continue  # the thread ended meanwhile
        if not cpus <= allowed:
            out[int(tid)] = sorted(allowed)
    return out


def settle(max_wait: float = 0.5, interval: float = 0.01, busy: float = 0.1) -> float:
    """Wait until no thread of this process is burning CPU; returns the seconds waited.

    Thread pools keep spinning after a call, waiting for the next one (measured here: ONNX Runtime's
    for about 30-40 ms, torch's OpenMP threads for about 20 ms). Timed right after another
    implementation, a kernel would share the cores with those spinning threads, so every sample
    starts once the process's CPU time grows by less than ``busy`` of each ``interval`` slept
    (at most ``max_wait``).
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        c0 = time.process_time()
        time.sleep(interval)
        if time.process_time() - c0 < busy * interval:
            break
    return time.perf_counter() - t0


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_time: float,
                     rng: np.random.Generator) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` samples each, in a shuffled order every round.

    Each sample starts once the threads of the previous one have gone quiet (:func:`settle`).
    """
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            settle()
            out[names[i]].append(_per_call(fns[names[i]], min_time))
    return out


def peak_name(isa: str) -> str:
    """The series name of a path's register-only loop when it is timed beside a shape's implementations."""
    return f"peak loop {isa}"


def _on_cache_lines(v: np.ndarray) -> np.ndarray:
    out = gemm.aligned_array(v.shape, v.dtype)
    out[...] = v
    return out


def bench_shape(m: int, k: int, n: int, peers: list[Peer], threads: int, rounds: int, min_time: float,
                rng: np.random.Generator, peak_isa: str | None = None) -> list[Series]:
    """Time every available peer on one shape (u8 activations where a peer takes them, else s8).

    With ``peak_isa``, that path's register-only loop is timed in the same rounds (series :func:`peak_name`), so
    that a share of the peak does not rest on one measurement of the ceiling taken in a slow spell.
    """
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    # Activations on cache lines, as a framework's allocator gives them (every peer reads the same arrays)
    a_u8, a_s8, x = (_on_cache_lines(v) for v in (rng.integers(0, 256, (m, k), dtype=np.uint8),
                                                 rng.integers(-128, 128, (m, k), dtype=np.int8),
                                                 rng.standard_normal((m, k), dtype=np.float32)))
    fns, series = {}, {}
    for p in peers:
        if p.available():
            continue
        a_type = "u8" if (p.kind == "int32" and "u8" in p.a_types) else ("s8" if p.kind == "int32" else "f32")
        a = {"u8": a_u8, "s8": a_s8, "f32": x}[a_type]
        try:
            prepared = p.prepare(b, a_type, threads)
            prepared.run(a)
        except Exception as exc:
            series[p.name] = Series(p.name, a_type, [], f"failed: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        fns[p.name] = (lambda run=prepared.run, a=a: run(a))
        series[p.name] = Series(p.name, a_type, [], prepared.note)
    if peak_isa:
        call, ops = gemm.peak_call(peak_isa, threads)
        fns[peak_name(peak_isa)] = call
        series[peak_name(peak_isa)] = Series(peak_name(peak_isa), "-", [], "register-only multiply-add loop", ops)
    for name, ts in time_interleaved(fns, rounds, min_time, rng).items():
        series[name].times = ts
    return list(series.values())


def measure_peaks(threads: int) -> dict[str, dict[int, float]]:
    """GOPS of each path's register-only multiply-add loop (inexact ones included), on 1 thread and on ``threads``."""
    out = {}
    for isa in gemm.supported_isas() + gemm.inexact_isas():
        out[isa] = {t: gemm.peak_gops(isa, t) for t in sorted({1, threads})}
    return out


# ------------------------------------------------------------------------------------ MiniLM end to end


def int8_variants(fp32_module, threads: int):
    """(fp32 module, torch dynamic int8 module, costbench-kernels module, swapped layers) from an fp32 module.

    ``fp32_module`` is left as it is apart from ``eval()``; the two int8 modules are deep copies of it.
    """
    import copy

    import torch

    from costbench.kernels.linear import swap_linear_layers

    torch.set_num_threads(threads)
    fp32 = fp32_module.eval()
    tq = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    ours = copy.deepcopy(fp32)
    swapped = swap_linear_layers(ours, threads=threads)
    return fp32, tq, ours, swapped


def first_batch(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` samples of every input array, wrapping around when there are fewer."""
    n = len(next(iter(inputs.values())))
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}


def bench_minilm(fp32_module, inputs: dict[str, np.ndarray], threads: int, batch: int, rounds: int,
                 min_time: float, rng: np.random.Generator) -> dict:
    """Speed (interleaved) and embedding parity of MiniLM: fp32, torch dynamic int8, costbench-kernels on the best
    path (with swap_linear_layers' fusions, and without them: what the fusions are worth, measured in the same
    rounds), and on each other path this CPU runs (``costbench-kernels avx2``, ...).

    ``fp32_module`` is the fp32 sentence embedder (a torch module called with the input arrays as keyword
    tensors); ``inputs`` are its sample arrays keyed by input name: parity is taken over all of them, speed
    on the first ``batch``. The caller loads both (``costbench kernels bench`` takes them from the zoo).
    """
    import copy

    import torch

    from costbench.kernels.linear import swap_linear_layers

    fp32, tq, ours, swapped = int8_variants(fp32_module, threads)
    models = {"torch fp32": fp32, "torch dynamic int8": tq, "costbench-kernels": ours}
    models["costbench-kernels unfused"] = copy.deepcopy(fp32)
    swap_linear_layers(models["costbench-kernels unfused"], threads=threads, fuse=False)
    # every other path this CPU runs, with the same fusions (and avx2-saturating's 7-bit activations beside avx2)
    for isa in gemm.supported_isas() + (gemm.inexact_isas() if gemm.best_isa() == "avx2" else []):
        if isa != gemm.best_isa():
            models[f"costbench-kernels {isa}"] = copy.deepcopy(fp32)
            swap_linear_layers(models[f"costbench-kernels {isa}"], isa=isa, threads=threads)
    batched = {k: torch.from_numpy(v) for k, v in first_batch(inputs, batch).items()}
    everything = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        ref = fp32(**everything).numpy()
        embs = {name: m(**everything).numpy() for name, m in models.items() if m is not fp32}
        fns = {name: (lambda m=m: m(**batched)) for name, m in models.items()}
        times = time_interleaved(fns, rounds, min_time, rng)
    parity = {}
    for name, e in embs.items():
        cos = (e * ref).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))
        parity[name] = {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}
    return {"batch": batch, "seq_len": int(batched["input_ids"].shape[1]), "sentences": len(ref),
            "times": times, "parity": parity, "int8_layers": len(swapped), "isa": gemm.best_isa()}
