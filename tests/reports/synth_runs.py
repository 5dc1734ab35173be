"""Small synthetic-but-valid run files, written the way the runner writes them (RunFile, same records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from costbench.harness.machine.env import env_id_of
from costbench.core.stats import summarize
from costbench.harness.results.store import RunFile


def make_env(cpu: str = "Synthetic Xeon 8488C", cores: int = 4, onnxruntime: str = "1.32.0",
             gpus: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A fingerprint shaped like ``costbench.harness.machine.env.fingerprint()``."""
    key = {"cpu_model": cpu, "isa": {"avx2": True, "avx512_vnni": True}, "machine": "x86_64", "logical_cores": cores,
           "physical_cores": cores, "gpus": gpus or [], "libraries": {"onnxruntime": onnxruntime, "torch": "2.13.0"},
           "python": "3.11.7", "threads": {"OMP_NUM_THREADS": None}}
    return {"env_id": env_id_of(key), "key": key,
            "recorded": {"hostname": "synth", "os": "Linux-6.1-x86_64", "memory_bytes": 16 << 30}}


def latency_samples(median_ms: float, n: int = 200, spread: float = 0.02, seed: int = 0) -> np.ndarray:
    """Positive, slightly skewed latencies around ``median_ms`` (fixed seed)."""
    rng = np.random.default_rng(seed)
    return median_ms * np.exp(rng.normal(0.0, spread, n))


def case(model: str = "digits-cnn", variant: str = "fp32", backend: str = "onnxruntime", scenario: str = "single_stream",
         median_ms: float = 1.0, n: int = 200, spread: float = 0.02, seed: int = 0, device: str = "cpu",
         batch_size: int = 1, throughput: float | None = None, size_bytes: float = 40_000.0,
         acc_delta: float | None = 0.0, top1: float | None = 1.0, rss_mib: float = 300.0, status: str = "ok",
         reason: str = "", valid: bool = True, power_w: float | None = None,
         runner_unstable: bool = False, kind: str | None = None) -> dict[str, Any]:
    """One case record with the metrics the worker writes for it (``kind``: the scenario's, default its label)."""
    spec = {"case_id": f"{model}-{variant}-{backend}-{device}-{scenario}-b{batch_size}", "model": model,
            "variant": variant, "backend": backend, "device": device, "scenario": scenario, "batch_size": batch_size,
            "recipe": variant, "backend_name": backend, "scenario_spec": {"kind": kind or scenario}}
    if status != "ok":
        return {"type": "case", "case": spec, "status": status, "reason": reason, "metrics": [], "info": {}}
    ms = latency_samples(median_ms, n, spread, seed)
    s = summarize(ms)
    prefix = "latency" if scenario == "single_stream" else "batch_latency"
    timing = {"details": {"timing": {"clock": "perf_counter_ns"}}}
    metrics = [
        {"metric": "model_size", "value": size_bytes, "unit": "bytes"},
        {"metric": f"{prefix}_p50", "value": s.p50, "unit": "ms", "ci_low": s.p50_ci_low, "ci_high": s.p50_ci_high,
         "valid": valid, "samples": ms.tolist(), **timing},
        {"metric": f"{prefix}_p99", "value": s.p99, "unit": "ms", "ci_low": s.p99_ci_low, "ci_high": s.p99_ci_high,
         "valid": valid, **timing},
        {"metric": "throughput", "value": throughput if throughput is not None else batch_size * 1000.0 / s.mean,
         "unit": "samples/s", "valid": valid, **timing},
        {"metric": "peak_rss", "value": rss_mib, "unit": "MiB"},
    ]
    if acc_delta is not None:
        metrics.append({"metric": "task_accuracy_delta", "value": acc_delta, "unit": "ratio"})
    if top1 is not None:
        metrics.append({"metric": "top1_agreement", "value": top1, "unit": "ratio"})
    if power_w is not None:
        metrics.append({"metric": "power_w", "value": power_w, "unit": "W"})
    if runner_unstable:  # what the runner appends when the CV is far above this case's history
        metrics.append({"metric": "unstable", "value": 1.0, "unit": "bool",
                        "details": {"cv": 0.3, "history_median_cv": 0.02, "judged": True}})
    info = {"artifact": {"format": "onnx", "size_bytes": size_bytes}, "provenance": {"recipe": variant}}
    return {"type": "case", "case": spec, "status": "ok", "reason": "", "elapsed_s": 1.0, "metrics": metrics,
            "info": info, "finished": "2026-01-01T00:00:00+00:00"}


def server_case(model: str = "digits-cnn", variant: str = "fp32", backend: str = "onnxruntime", device: str = "cpu",
                batch_size: int = 1, max_qps: float | None = 100.0, target_qps: float | None = None,
                slo_met: bool = True, slo_ms: float = 10.0, percentile: float = 99.0, median_ms: float = 1.0,
                seed: int = 0, valid: bool = True, scenario: str = "server",
                batching: dict[str, Any] | None = None) -> dict[str, Any]:
    """A server-scenario case: a QPS search (``max_qps``) or one run at ``target_qps``, with its SLO verdict;
    ``batching`` as the scenario records dynamic batching (max_batch, max_queue_delay_ms, ...)."""
    rec = case(model=model, variant=variant, backend=backend, scenario=scenario, median_ms=median_ms, seed=seed,
               device=device, batch_size=batch_size, acc_delta=None, top1=None, kind="server")
    common = {"valid": valid, "details": {"timing": {"clock": "perf_counter_ns"},
                                         "slo": {"slo_ms": slo_ms, "percentile": percentile, "seed": 0,
                                                 "concurrency": 1},
                                         **({"batching": batching} if batching else {})}}
    rate = max_qps if target_qps is None else target_qps
    rec["metrics"] += [
        {"metric": "target_qps", "value": rate, "unit": "queries/s", **common},
        {"metric": "achieved_qps", "value": rate, "unit": "queries/s", **common},
        {"metric": "slo_met", "value": float(slo_met), "unit": "bool", **common},
        {"metric": "slo_latency", "value": slo_ms * (0.8 if slo_met else 1.5), "unit": "ms", **common},
    ]
    if target_qps is None:  # a QPS search: its trials, as the scenario records them
        trials = [{"qps": max_qps * f, "p_latency_ms": slo_ms * lat, "meets_slo": slo_met and lat <= 1,
                   "complete": True, "queries": 200} for f, lat in ((0.25, 0.3), (1.0, 0.9), (1.5, 3.0))]
        rec["metrics"].append({"metric": "max_qps_within_slo", "value": 0.9 * max_qps if slo_met else 0.0,
                               "unit": "queries/s", **common,
                               "details": {**common["details"], "search": trials}})
        if slo_met:  # the estimate where the p99 crosses the SLO, with its interval (±5%)
            rec["metrics"] += [{"metric": name, "value": max_qps * f, "unit": "queries/s", **common}
                               for name, f in (("capacity_qps", 1.0), ("capacity_ci_low", 0.95),
                                               ("capacity_ci_high", 1.05))]
    return rec


def write_run(results_dir: Path, run_id: str, cases: list[dict[str, Any]], created: str = "2026-01-01T00:00:00+00:00",
              env: dict[str, Any] | None = None, commit: str = "a" * 40, suite_source: str = "suites/smoke.toml") -> RunFile:
    """A run file with a header like the runner's and the given case records."""
    env = env or make_env()
    rf = RunFile.create(Path(results_dir), {
        "run_id": run_id, "created": created, "commit": commit, "harness_version": "0.1.0", "env_id": env["env_id"],
        "env": env, "suite": {"name": "synth", "source": suite_source}, "planned_cases": len(cases),
        "argv": ["costbench", "run", suite_source]})
    for c in cases:
        rf.append({**c, "run_id": run_id})
    return rf


ENV_A, ENV_B = make_env(onnxruntime="1.31.0"), make_env(onnxruntime="1.32.0")


def history_dir(root: Path) -> Path:
    """Seven runs: int8 steps up 25% at run 4; fp32's run 3 is noisy; run 6 moves to a new environment."""
    int8 = [1.0, 1.0, 1.0, 1.0, 1.25, 1.25, 1.25]
    for i, m in enumerate(int8):
        write_run(root, f"2026010{i + 1}-000000-run{i}", [
            case(variant="fp32", median_ms=2.0, seed=10 * i + 1, spread=0.5 if i == 2 else 0.02),
            case(variant="int8", median_ms=m, seed=10 * i + 2),
            case(variant="int8", scenario="offline", median_ms=4 * m, batch_size=4, seed=10 * i + 3),
        ], created=f"2026-01-0{i + 1}T00:00:00+00:00", env=ENV_B if i == 6 else ENV_A, commit=f"{i}" * 40)
    return root


def process_cases(rng: np.random.Generator, median_ms: float = 1.0, processes: int = 5, between: float = 0.03,
                  within: float = 0.02, n: int = 400, **kw: Any) -> list[dict[str, Any]]:
    """One case measured in ``processes`` processes, as the runner records it: one record per process, each with its
    own launch offset exp(N(0, between²)) on the median and ``n`` samples of within-process spread ``within``."""
    records = []
    for k in range(processes):
        offset = float(np.exp(rng.normal(0.0, between)))
        rec = case(median_ms=median_ms * offset, n=n, spread=within, seed=int(rng.integers(2**31)), **kw)
        rec["case"] = {**rec["case"], "processes": processes, "process": k}
        rec["process"] = k
        if k:  # accuracy is measured by the first process only
            rec["metrics"] = [m for m in rec["metrics"] if m["metric"] not in ("task_accuracy_delta", "top1_agreement")]
        records.append(rec)
    return records
