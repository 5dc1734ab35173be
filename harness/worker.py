"""One case, measured inside its own child process: model -> artifact -> session -> accuracy -> scenario.

Run as ``python -m costbench.harness.worker JOB.json RESULT.json``. The parent owns the
timeout and the run file; this process only writes RESULT.json (atomically) when it finishes.
What the case needs and the cache lacks is built first by ``worker --build`` in a grandchild, so the
measured process never holds a builder's memory.
Anything it prints goes to stderr, which the parent keeps the tail of when a case fails.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.artifacts import write_json_atomic
from costbench.harness.plan import Case


def _metric(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"metric": name, "value": float(value), "unit": unit, **extra}


def _read_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so peak RSS covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _percentile_rows(prefix: str, ms: np.ndarray, common: dict[str, Any], keep_samples: bool) -> list[dict[str, Any]]:
    from costbench.core.stats import summarize

    s = summarize(ms)
    return [
        _metric(f"{prefix}_p50", s.p50, "ms", ci_low=s.p50_ci_low, ci_high=s.p50_ci_high,
                samples=ms.tolist() if keep_samples else None, **common),
        _metric(f"{prefix}_p90", s.p90, "ms", **common),
        _metric(f"{prefix}_p99", s.p99, "ms", ci_low=s.p99_ci_low, ci_high=s.p99_ci_high, **common),
        _metric(f"{prefix}_mean", s.mean, "ms", **common),
        _metric(f"{prefix}_cv", s.cv, "ratio", **common),
    ]


# The latency series each scenario reports, and what its samples mean.
_PRIMARY = {"single_stream": "latency", "offline": "batch_latency", "server": "latency"}
_SERIES_MEANING = {
    "latency": "service time of one query",
    "batch_latency": "service time of one batch (per worker thread)",
    "device": "device time of one query (device clock)",
    "queue_wait": "time from scheduled arrival to start of service",
    "scheduler_lateness": "start of service minus the earliest moment it could start (scheduler error)",
}


def _timing_metrics(result, timing: dict[str, str]) -> list[dict[str, Any]]:
    """Rows for a scenario result: percentiles of each latency series, throughput, and scenario scalars."""
    common = {"valid": result.valid, "details": {"timing": timing, "notes": result.notes, **result.details}}
    primary = _PRIMARY[result.kind]
    meaning = ("arrival to completion, queueing included" if result.kind == "server" else _SERIES_MEANING[primary])
    rows = _percentile_rows(primary, np.asarray(result.samples_ns, dtype=np.float64) / 1e6,
                            {**common, "details": {**common["details"], "series": meaning}}, True)
    for name, values in result.series_ns.items():
        if values:
            prefix = "device_latency" if name == "device" else name
            details = {**common["details"], "series": _SERIES_MEANING[name]}
            if name == "device":
                details["timing"] = {**timing, "clock": "CUDA events (device)"}
            rows += _percentile_rows(prefix, np.asarray(values, dtype=np.float64) / 1e6,
                                     {**common, "details": details}, True)
    throughput = result.batch_size * result.queries / (result.wall_ns / 1e9)
    rows += [
        _metric("throughput", throughput, "samples/s", **common),
        _metric("queries", result.queries, "count", **common),
        _metric("duration", result.wall_ns / 1e9, "s", **common),
    ]
    rows += [_metric(name, value, unit, **common) for name, (value, unit) in result.scalars.items()]
    return rows


def execute(case: Case, cache_dir: Path) -> dict[str, Any]:
    """Measure one case; returns {'metrics': [...], 'info': {...}}. Raises on failure."""
    from costbench.backends.registry import get_backend
    from costbench.harness.accuracy import collect_outputs, compare
    from costbench.core.artifacts import ArtifactCache, artifact_summary
    from costbench.harness.compress.registry import get_recipe
    from costbench.harness.reference import cached_reference
    from costbench.harness.scenarios import make_scenario
    from costbench.harness.suite_schema import ModelSpec
    from costbench.harness.zoo.registry import load_bundle

    metrics: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    built_here: dict[str, Any] = {}
    # Whatever this case needs and the cache lacks (a trained zoo model, the artifact, the fp32
    # reference) is built in a separate process, so the memory of this one (peak RSS) is the same
    # whether the cache was cold or warm: no trainer's, quantizer's or exporter's heap stays
    # resident here. The stamp says a build for these inputs succeeded before; the lookups below
    # catch what it cannot see (a changed source model).
    if not _stamp_holds(case, cache_dir):
        built_here = _build_in_child(case, cache_dir)
    bundle = load_bundle(ModelSpec.model_validate(case.model_spec), cache_dir)
    fixed = bundle.details.get("fixed_batch")
    if fixed and fixed != case.batch_size:
        raise ValueError(f"model {case.model!r} has a fixed batch size of {fixed} in its ONNX graph; this case asks "
                         f"for batch {case.batch_size} (set batch_sizes = [{fixed}] for it, or export it with a "
                         "dynamic batch dimension)")
    recipe = get_recipe(case.recipe)
    config = recipe.parse_config(case.recipe_options)
    cache = ArtifactCache(cache_dir)

    def from_cache() -> tuple[Any, Any, bool]:
        art = recipe.cached_artifact(bundle, config, case.artifact_format, cache)
        ref = cached_reference(bundle, cache_dir) if case.measure_accuracy else None
        return art, ref, art is not None and (ref is not None or not case.measure_accuracy)

    artifact, reference, complete = from_cache()
    if not complete:
        built_here = _build_in_child(case, cache_dir)
        artifact, reference, complete = from_cache()
        if not complete:
            raise RuntimeError(f"the build process finished but {case.recipe!r} or the fp32 reference is not in "
                               f"the cache {cache_dir}")
    metrics.append(_metric("model_size", artifact.size_bytes, "bytes"))
    if built_here.get("build_time_s") is not None:
        artifact.build_time_s, artifact.cached = built_here["build_time_s"], False
        metrics.append(_metric("build_time", artifact.build_time_s, "s"))
    setup_s = time.perf_counter() - t0

    from costbench.harness import gpu

    gpu_start = gpu.snapshot() if case.device != "cpu" else {"gpus": [], "reason": "CPU case"}
    backend = get_backend(case.backend_name)
    options = backend.parse_options(case.backend_options)
    setup_hwm_kb = _read_status_kb("VmHWM")  # read before the reset: it resets ru_maxrss too
    rss_reset = _reset_peak_rss()
    t_load = time.perf_counter()
    session = backend.prepare(artifact, options, case.batch_size, case.device)
    metrics.append(_metric("load_time", (time.perf_counter() - t_load) * 1e3, "ms"))
    first = bundle.evaluation.batch(case.batch_size)
    t_first = time.perf_counter_ns()
    session.run(first)
    session.synchronize()
    metrics.append(_metric("first_inference", (time.perf_counter_ns() - t_first) / 1e6, "ms"))

    if reference is not None:
        outputs = collect_outputs(session, bundle.evaluation, case.batch_size)
        metrics += [_metric(m.name, m.value, m.unit, details={"description": m.description})
                    for m in compare(outputs, reference, bundle.evaluation.labels, bundle.task)]

    scenario = make_scenario(case.scenario_spec)
    result = scenario.run(session, bundle.evaluation, case.batch_size)
    metrics += _timing_metrics(result, session.timing.as_dict())
    session_info = session.info()
    device_peak = session.peak_device_memory()
    if device_peak is not None:
        metrics.append(_metric("peak_device_memory", device_peak / 2**20, "MiB"))
    session.close()

    gpu_end = gpu.snapshot() if case.device != "cpu" else gpu_start
    slowdowns = gpu.throttled(gpu_start, gpu_end)
    if gpu_start["gpus"]:
        metrics.append(_metric("gpu_throttled", float(bool(slowdowns)), "bool", details={"slowdowns": slowdowns}))

    hwm_kb = _read_status_kb("VmHWM")
    if hwm_kb is not None:
        scope = ("load+inference (high-water mark reset once the model, artifact and reference were in memory)"
                 if rss_reset else "whole measuring process")
        metrics.append(_metric("peak_rss", hwm_kb / 1024, "MiB", details={"scope": scope}))
    process_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, setup_hwm_kb or 0, hwm_kb or 0)
    metrics.append(_metric("process_peak_rss", process_kb / 1024, "MiB",
                           details={"scope": "whole measuring process: imports, model, reference, load and "
                                                "inference; builds run in a separate process"}))
    info = {
        "artifact": artifact_summary(artifact),
        "provenance": artifact.provenance,
        "model_details": bundle.details,
        "session": session_info,
        "timing": session.timing.as_dict(),
        "gpu": {"start": gpu_start, "end": gpu_end},
        "setup_s": setup_s,
        "evaluation_samples": len(bundle.evaluation),
        "evaluation_data": bundle.evaluation.description,
    }
    return {"metrics": metrics, "info": info}


def build(case: Case, cache_dir: Path) -> dict[str, Any]:
    """What a case needs from the cache, built (artifact, and the fp32 reference when accuracy is on)."""
    from costbench.core.artifacts import ArtifactCache
    from costbench.harness.compress.registry import get_recipe
    from costbench.harness.reference import reference_outputs
    from costbench.harness.suite_schema import ModelSpec
    from costbench.harness.zoo.registry import load_bundle

    bundle = load_bundle(ModelSpec.model_validate(case.model_spec), cache_dir)
    recipe = get_recipe(case.recipe)
    artifact = recipe.artifact(bundle, recipe.parse_config(case.recipe_options), case.artifact_format,
                               ArtifactCache(cache_dir))
    if case.measure_accuracy:
        reference_outputs(bundle, cache_dir)
    stamp = _build_stamp(case, cache_dir)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(artifact.key)
    return {"build_time_s": artifact.build_time_s, "key": artifact.key}


def _build_stamp(case: Case, cache_dir: Path) -> Path:
    """A file that exists once a build for exactly these inputs has succeeded in this cache."""
    from costbench.core.artifacts import content_key

    key = content_key({"model": case.model_spec, "recipe": case.recipe, "options": case.recipe_options,
                       "format": case.artifact_format, "reference": case.measure_accuracy})
    return cache_dir / "built" / key


def _stamp_holds(case: Case, cache_dir: Path) -> bool:
    """The build stamp exists and the artifact it names is still in the cache (it may have been pruned)."""
    from costbench.core.artifacts import ArtifactCache

    stamp = _build_stamp(case, cache_dir)
    try:
        key = stamp.read_text().strip()
    except OSError:
        return False
    return ArtifactCache(cache_dir).contains(key)


def _build_in_child(case: Case, cache_dir: Path) -> dict[str, Any]:
    """Run :func:`build` in a child process (same process group: the case's timeout covers it)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="costbench-build-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"case": case.to_dict(), "cache_dir": str(cache_dir)}))
        proc = subprocess.run([sys.executable, "-m", "costbench.harness.worker", "--build", str(job), str(result)],
                              stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        if not result.exists():
            raise RuntimeError(f"the build process for {case.recipe!r} exited with {proc.returncode} and no result")
        payload = json.loads(result.read_text())
    if payload["status"] == "skipped":
        from costbench.harness.compress.base import RecipeNotApplicable

        raise RecipeNotApplicable(payload["reason"])
    if payload["status"] != "ok":
        raise RuntimeError(f"build failed: {payload['reason']}")
    return payload


def main(argv: list[str]) -> int:
    step = execute
    if argv and argv[0] == "--build":
        step, argv = build, argv[1:]
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())
    case = Case.from_dict(job["case"])
    # Keep stdout for nothing: libraries that print go to stderr, which the parent tails on failure.
    sys.stdout = sys.stderr
    from costbench.harness.compress.base import RecipeNotApplicable

    try:
        payload = {"status": "ok", **step(case, Path(job["cache_dir"]))}
    except RecipeNotApplicable as exc:  # the combination does not exist: skipped, with why
        payload = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:
        payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=20)}
        print(payload["traceback"], file=sys.stderr)
    write_json_atomic(result_path, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
