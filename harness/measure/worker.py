"""One case, measured inside its own child process: model -> artifact -> session -> accuracy -> scenario.

Run as ``python -m costbench.harness.measure.worker JOB.json RESULT.json``. The parent owns the
timeout and the run file; this process only writes RESULT.json (atomically) when it finishes.
What the case needs and the cache lacks is built first by ``worker --build`` in a grandchild, so the
measured process never holds a builder's memory.
Anything it prints goes to stderr, which the parent keeps the tail of when a case fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from costbench.backends.base import Backend, BackendOptions, GenerativeSession, Session, TimingConvention
from costbench.backends.registry import get_backend
from costbench.core.artifacts import Artifact, ArtifactCache, artifact_summary, content_key, write_json_atomic
from costbench.core.metrics import (CPU_CONTENTION, DECODE_WEIGHT_BYTES, DEVICE_LATENCY, MEMORY_BANDWIDTH, THROUGHPUT,
                                    TPOT, TPOT_BOUND_RATIO, TPOT_MEMORY_BOUND, Series, catalogue)
from costbench.core.stats import summarize
from costbench.harness.machine import contention, gpu
from costbench.harness.machine.bandwidth import Bandwidth, read_bandwidth_in_child, tpot_floor_ms
from costbench.harness.build.accuracy import compare, greedy_prefix_agreement
from costbench.harness.build.compress.base import RecipeNotApplicable
from costbench.harness.build.perplexity import (cached_fp32_nll, method_details, nll_position_logits, nll_prefixes,
                                                perplexity, reference_nll)
from costbench.harness.build.compress.registry import get_recipe
from costbench.harness.suite.case import Case
from costbench.harness.build.reference import cached_continuations, cached_reference, reference_outputs
from costbench.harness.measure.scenarios.registry import make_scenario, scenario_class
from costbench.harness.measure.stages import StageMarker, stage_file
from costbench.harness.suite.schema import ModelSpec
from costbench.harness.build.zoo.base import ModelBundle, SampleSet
from costbench.harness.build.zoo.registry import load_bundle


def collect_outputs(session: Session, data: SampleSet, batch_size: int) -> np.ndarray:
    """The first output of the model for every sample of ``data``, run at ``batch_size``."""
    parts = []
    for batch, real in data.batches(batch_size):
        out = session.run(batch)[0]
        session.synchronize()
        parts.append(np.asarray(out, dtype=np.float64)[:real])
    return np.concatenate(parts, axis=0)


def _metric(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    """A result row; its metric must be in the catalogue (KeyError names it), so no row carries an unknown name."""
    catalogue().metric(name)
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


def _percentile_rows(series: Series, ms: np.ndarray, common: dict[str, Any], keep_samples: bool) -> list[dict[str, Any]]:
    s = summarize(ms)
    return [
        _metric(series.p50, s.p50, "ms", ci_low=s.p50_ci_low, ci_high=s.p50_ci_high,
                samples=ms.tolist() if keep_samples else None, **common),
        _metric(series.stat("p90"), s.p90, "ms", **common),
        _metric(series.p99, s.p99, "ms", ci_low=s.p99_ci_low, ci_high=s.p99_ci_high, **common),
        _metric(series.stat("mean"), s.mean, "ms", **common),
        _metric(series.stat("cv"), s.cv, "ratio", **common),
    ]


def _timing_metrics(result, timing: dict[str, str]) -> list[dict[str, Any]]:
    """Rows for a scenario result: percentiles of each latency series, throughput, and scenario scalars."""
    common = {"valid": result.valid, "details": {"timing": timing, "notes": result.notes, **result.details}}
    cat = catalogue()
    reports = cat.for_scenario(result.kind)
    primary = cat.series[reports.primary]
    rows = _percentile_rows(primary, np.asarray(result.samples_ns, dtype=np.float64) / 1e6,
                            {**common, "details": {**common["details"], "series": reports.meaning or primary.description}},
                            True)
    for name, values in result.series_ns.items():
        if values:
            series = cat.series[name]
            details = {**common["details"], "series": series.description}
            if series == DEVICE_LATENCY:
                details["timing"] = {**timing, "clock": "CUDA events (device)"}
            rows += _percentile_rows(series, np.asarray(values, dtype=np.float64) / 1e6,
                                     {**common, "details": details}, True)
    throughput = result.batch_size * result.queries / (result.wall_ns / 1e9)
    rows += [
        _metric(THROUGHPUT, throughput, "samples/s", **common),
        _metric("queries", result.queries, "count", **common),
        _metric("duration", result.wall_ns / 1e9, "s", **common),
    ]
    rows += [_metric(name, value, unit, **common) for name, (value, unit) in result.scalars.items()]
    return rows


@dataclass
class CaseInputs:
    """What a case measures, loaded from the cache."""

    bundle: ModelBundle
    artifact: Artifact
    reference: np.ndarray | None  # fp32 outputs on the evaluation data; None when accuracy is off
    built: dict[str, Any]  # the build process's report when this case built something, else empty
    continuations: np.ndarray | None = None  # a causal LM's fp32 greedy continuations (with the reference)
    fp32_nll: np.ndarray | None = None  # fp32's NLL of each scored token of the perplexity text (with the reference)


@dataclass
class MemoryBaseline:
    """The RSS high-water mark of setup, read just before it was reset for the session."""

    setup_hwm_kb: int | None
    rss_reset: bool  # False where the kernel cannot reset it: peak_rss then covers the whole process


@dataclass
class SessionResult:
    """What measuring through one session gave: its rows, its ``info()`` and its timing convention."""

    metrics: list[dict[str, Any]]
    info: dict[str, Any]
    timing: TimingConvention


STAGE = StageMarker()  # set to this process's stage file in main()


def execute(case: Case, cache_dir: Path) -> dict[str, Any]:
    """Measure one case; returns {'metrics': [...], 'info': {...}}. Raises on failure.

    In measuring order: load the inputs (building what the cache lacks in another process), take the
    GPU's start state, measure the memory bandwidth (token-generating cases on a CPU, in a child process),
    reset the RSS high-water mark, load the session and measure on it (it is closed however that ends),
    take the GPU's end state, read peak memory.
    """
    t0 = time.perf_counter()
    STAGE.enter("build")
    inputs = load_inputs(case, cache_dir)
    metrics = artifact_metrics(inputs.artifact, inputs.built)
    setup_s = time.perf_counter() - t0
    with gpu_monitor(case.device) as gpu_state:
        gpu_start = gpu_state()
        STAGE.enter("prepare")
        backend = get_backend(case.backend_name)
        options = backend.parse_options(case.backend_options)
        floor = decode_floor(case, inputs.artifact)  # before the baseline: its probe's memory is never ours
        baseline = mark_memory_baseline()
        session, load_row = load_session(backend, options, inputs.artifact, case)
        STAGE.enter("measure")
        measured = measure_session(session, case, inputs)
        gpu_end = gpu_state()
    measured.metrics += floor_metrics(floor, measured.metrics)
    metrics += [load_row, *measured.metrics, *gpu_metrics(gpu_start, gpu_end), *memory_metrics(baseline)]
    return {"metrics": metrics, "info": case_info(inputs, measured, gpu_start, gpu_end, setup_s)}


def load_inputs(case: Case, cache_dir: Path) -> CaseInputs:
    """The model bundle, its artifact and (accuracy on) the fp32 reference; what the cache lacks is built first."""
    built: dict[str, Any] = {}
    # Whatever this case needs and the cache lacks (a trained zoo model, the artifact, the fp32
    # reference) is built in a separate process, so the memory of this one (peak RSS) is the same
    # whether the cache was cold or warm: no trainer's, quantizer's or exporter's heap stays
    # resident here. The stamp says a build for these inputs succeeded before; the lookups below
    # catch what it cannot see (a changed source model).
    if not _stamp_holds(case, cache_dir):
        built = _build_in_child(case, cache_dir)
    bundle = load_model(case, cache_dir)
    recipe = get_recipe(case.recipe)
    config = recipe.parse_config(case.recipe_options)
    cache = ArtifactCache(cache_dir)

    def from_cache() -> tuple[Artifact | None, np.ndarray | None, bool]:
        art = recipe.cached_artifact(bundle, config, case.artifact_format, cache)
        # Accuracy does not vary by process: only a case's first process loads the reference and measures it.
        ref = cached_reference(bundle, cache_dir) if case.accuracy_here else None
        # a perplexity text added after the reference was cached still needs fp32's NLL on it
        ppl_missing = (case.accuracy_here and bundle.perplexity_text is not None
                       and cached_fp32_nll(bundle, cache_dir) is None)
        return art, ref, art is not None and (ref is not None or not case.accuracy_here) and not ppl_missing

    artifact, reference, complete = from_cache()
    if not complete:
        built = _build_in_child(case, cache_dir)
        artifact, reference, complete = from_cache()
        if not complete:
            raise RuntimeError(f"the build process finished but {case.recipe!r} or the fp32 reference is not in "
                               f"the cache {cache_dir}")
    continuations = cached_continuations(bundle, cache_dir) if reference is not None else None
    fp32_nll = cached_fp32_nll(bundle, cache_dir) if reference is not None else None
    return CaseInputs(bundle, artifact, reference, built, continuations, fp32_nll)


def load_model(case: Case, cache_dir: Path) -> ModelBundle:
    """The case's model bundle; raises ValueError when its ONNX graph fixes a batch size other than the case's."""
    bundle = load_bundle(ModelSpec.model_validate(case.model_spec), cache_dir)
    fixed = bundle.details.get("fixed_batch")
    if fixed and fixed != case.batch_size:
        raise ValueError(f"model {case.model!r} has a fixed batch size of {fixed} in its ONNX graph; this case asks "
                         f"for batch {case.batch_size} (set batch_sizes = [{fixed}] for it, or export it with a "
                         "dynamic batch dimension)")
    return bundle


def artifact_metrics(artifact: Artifact, built: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifact's size, and its build time when this case built it (the artifact is then marked not cached);
    ``backend_build_time`` when the build process built the backend's own cache for this case (an engine, a
    compiler cache), which is then not in ``load_time``."""
    rows = [_metric("model_size", artifact.size_bytes, "bytes")]
    if built.get("build_time_s") is not None:
        artifact.build_time_s, artifact.cached = built["build_time_s"], False
        rows.append(_metric("build_time", artifact.build_time_s, "s"))
    backend_built = built.get("backend_build") or {}
    if backend_built.get("build_time_s") is not None and not backend_built.get("cached"):
        rows.append(_metric("backend_build_time", backend_built["build_time_s"], "s",
                            details={k: v for k, v in backend_built.items() if k != "build_time_s"}))
    return rows


@contextlib.contextmanager
def gpu_monitor(device: str) -> Iterator[Callable[[], dict[str, Any]]]:
    """A function that snapshots the GPUs (NVML) at a case's start and end; NVML is shut down however it ends.

    A CPU case snapshots nothing: ``{"gpus": [], "reason": "CPU case"}``.
    """
    if device == "cpu":
        yield lambda: {"gpus": [], "reason": "CPU case"}
        return
    nvml, why = gpu._nvml()  # initialised once for both snapshots, so it can be shut down once
    try:
        yield (lambda: gpu.snapshot(nvml)) if nvml is not None else (lambda: {"gpus": [], "reason": why})
    finally:
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception as exc:  # the case's result does not depend on it
                print(f"NVML shutdown failed: {exc!r}", file=sys.stderr)


def mark_memory_baseline() -> MemoryBaseline:
    """Read the RSS high-water mark of setup, then reset it, so ``peak_rss`` covers only what follows."""
    setup_hwm_kb = _read_status_kb("VmHWM")  # read before the reset: it resets ru_maxrss too
    return MemoryBaseline(setup_hwm_kb, _reset_peak_rss())


def load_session(backend: Backend, options: BackendOptions, artifact: Artifact, case: Case) -> tuple[Session, dict]:
    """The prepared session and its ``load_time`` row (what the backend's build process built is not in it)."""
    t_load = time.perf_counter()
    max_batch = int(case.scenario_spec.get("max_batch", 1))
    if max_batch > 1:  # a dynamic batcher runs batches of 1..max_batch queries on this session
        session = backend.prepare_batched(artifact, options, case.batch_size, max_batch, case.device)
    else:
        session = backend.prepare(artifact, options, case.batch_size, case.device)
    scope = ("prepare, reusing what the build process built (backend_build_time)"
             if backend.builds_for(options, case.device) else "prepare")
    if max_batch > 1:
        scope += f", for every batch of 1..{max_batch} queries"
    return session, _metric("load_time", (time.perf_counter() - t_load) * 1e3, "ms", details={"scope": scope})


# Process k of a case draws its arrivals (and a generation server's lengths) from seed + k * this: every process
# replicates the arrivals' randomness as well as the process's own state, and the seeds a search walks
# (seed, seed + 1, ...) never meet another process's.
PROCESS_SEED_STRIDE = 1_000_003


def process_spec(spec: dict[str, Any], process: int | None) -> dict[str, Any]:
    """The scenario settings process ``process`` of a case runs: a seeded scenario's seed moved by the process."""
    if not process or "seed" not in spec:
        return spec
    return {**spec, "seed": int(spec["seed"]) + PROCESS_SEED_STRIDE * process}


def measure_session(session: Session, case: Case, inputs: CaseInputs) -> SessionResult:
    """First inference, accuracy and the scenario on ``session``, which this closes however they end."""
    with _closing(session):
        metrics = [first_inference(session, inputs.bundle.evaluation, case.batch_size)]
        metrics += accuracy_metrics(session, inputs.bundle, inputs.reference, case.batch_size)
        metrics += generation_parity(session, inputs.bundle, inputs.continuations, case.batch_size)
        metrics += perplexity_metrics(session, inputs.bundle, inputs.fp32_nll)
        scenario = make_scenario(process_spec(case.scenario_spec, case.process))
        before = contention.read()
        result = scenario.run(session, inputs.bundle.evaluation, case.batch_size)
        taken = contention.between(before, contention.read())
        metrics += _timing_metrics(result, session.timing.as_dict())
        if taken is not None:  # what else used the CPU while the scenario measured: the runner re-measures it
            metrics.append(_metric(CPU_CONTENTION, taken.share, "ratio", details=taken.details()))
        info = session.info()
        metrics += device_memory_metrics(session)
    return SessionResult(metrics, info, session.timing)


@contextlib.contextmanager
def _closing(session: Session) -> Iterator[Session]:
    """Close ``session`` when the block ends; a close that fails after the block failed does not hide its error."""
    try:
        yield session
    except BaseException:
        try:
            session.close()
        except Exception as exc:
            print(f"closing the session after the failure below failed too: {exc!r}", file=sys.stderr)
        raise
    session.close()


def first_inference(session: Session, data: SampleSet, batch_size: int) -> dict[str, Any]:
    """The ``first_inference`` row: one batch, run and synchronised, on a freshly loaded session."""
    first = data.batch(batch_size)
    t_first = time.perf_counter_ns()
    session.run(first)
    session.synchronize()
    return _metric("first_inference", (time.perf_counter_ns() - t_first) / 1e6, "ms")


def accuracy_metrics(session: Session, bundle: ModelBundle, reference: np.ndarray | None,
                     batch_size: int) -> list[dict[str, Any]]:
    """Parity with the fp32 reference and, where labelled, task accuracy over the evaluation data (no rows
    without a reference). A row's interval goes in ci_low/ci_high; its kind, sample count and the rest in details."""
    if reference is None:
        return []
    outputs = collect_outputs(session, bundle.evaluation, batch_size)
    rows = []
    for m in compare(outputs, reference, bundle.evaluation.labels, bundle.task):
        interval = {} if m.ci_low is None else {"ci_low": m.ci_low, "ci_high": m.ci_high}
        rows.append(_metric(m.name, m.value, m.unit, **interval, details={"description": m.description, **m.details}))
    return rows


def generation_parity(session: Session, bundle: ModelBundle, continuations: np.ndarray | None,
                      batch_size: int) -> list[dict[str, Any]]:
    """Greedy-continuation agreement with fp32 on the evaluation prompts, for a generative session with the fp32
    continuations at hand (no row otherwise)."""
    if continuations is None or not isinstance(session, GenerativeSession):
        return []
    parts = []
    for feed, real in bundle.evaluation.batches(batch_size):
        parts.append(session.generate(feed["input_ids"], continuations.shape[1], lambda: None)[:real])
    m = greedy_prefix_agreement(np.concatenate(parts, axis=0), continuations)
    return [_metric(m.name, m.value, m.unit, details={"description": m.description, **m.details})]


def perplexity_metrics(session: Session, bundle: ModelBundle, fp32_nll: np.ndarray | None) -> list[dict[str, Any]]:
    """The variant's perplexity on the user's text, fp32's beside it and the difference, for a generative session
    with fp32's NLL at hand (no rows otherwise: no text, random weights, accuracy off)."""
    text = bundle.perplexity_text
    if fp32_nll is None or text is None or not isinstance(session, GenerativeSession):
        return []
    # a session that overrides position_logits scores a window per pass; the others one prefix per token
    if type(session).position_logits is not GenerativeSession.position_logits:
        nll, method = nll_position_logits(session.position_logits, text), "position_logits"
    else:
        nll, method = nll_prefixes(lambda ids: session.run({"input_ids": ids})[0], text), "prefixes"
    ppl, ref = perplexity(nll), perplexity(fp32_nll)
    details = {"kind": "perplexity", **method_details(text, method), "fp32": ref, "difference": ppl - ref,
               "relative_difference": ppl / ref - 1.0, "fp32_method": "torch_fp32",
               "mean_nll": float(np.mean(nll)), "fp32_mean_nll": float(np.mean(fp32_nll))}
    what = f"perplexity on the user's text ({text.scored} tokens, window {text.window})"
    return [_metric("perplexity", ppl, "ppl", details={"description": what, **details}),
            _metric("perplexity_fp32", ref, "ppl", details={"description": f"fp32's {what}", "kind": "perplexity",
                                                            **method_details(text, "torch_fp32")}),
            _metric("perplexity_delta", ppl - ref, "ppl",
                    details={"description": f"variant minus fp32: {what}", "kind": "perplexity", "fp32": ref,
                             "variant": ppl, "method": method})]


def decode_floor(case: Case, artifact: Artifact) -> tuple[float, Bandwidth] | None:
    """(weight bytes a decoding step reads, the machine's read bandwidth) for a token-generating scenario on a CPU
    whose artifact says how many bytes a step reads; None otherwise (a GPU's floor is its own HBM's)."""
    step = artifact.provenance.get("decode_weight_bytes")
    if not step or case.device != "cpu" or not scenario_class(case.scenario_spec["kind"]).needs_generative:
        return None
    return float(step), read_bandwidth_in_child(case.backend_options.get("threads"))


def floor_metrics(floor: tuple[float, Bandwidth] | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memory-bound floor under TPOT and how far the measured TPOT p50 is above it."""
    if floor is None:
        return []
    step, bandwidth = floor
    bound = tpot_floor_ms(step, bandwidth.best_gbs)
    out = [_metric(MEMORY_BANDWIDTH, bandwidth.best_gbs, "GB/s", details=bandwidth.details()),
           _metric(DECODE_WEIGHT_BYTES, step, "bytes"),
           _metric(TPOT_MEMORY_BOUND, bound, "ms", details={"formula": "decode_weight_bytes / memory_bandwidth"})]
    tpot = next((r for r in rows if r["metric"] == TPOT.p50), None)
    if tpot is not None:
        out.append(_metric(TPOT_BOUND_RATIO, tpot["value"] / bound, "ratio"))
    return out


def device_memory_metrics(session: Session) -> list[dict[str, Any]]:
    """The session's peak device memory, where its device reports one."""
    device_peak = session.peak_device_memory()
    return [] if device_peak is None else [_metric("peak_device_memory", device_peak / 2**20, "MiB")]


def gpu_metrics(start: dict[str, Any], end: dict[str, Any]) -> list[dict[str, Any]]:
    """Whether a GPU slowed down (thermal, power) at either end of the case; no row without GPUs."""
    slowdowns = gpu.throttled(start, end)
    if not start["gpus"]:
        return []
    return [_metric("gpu_throttled", float(bool(slowdowns)), "bool", details={"slowdowns": slowdowns})]


def memory_metrics(baseline: MemoryBaseline) -> list[dict[str, Any]]:
    """Peak RSS since the baseline (``peak_rss``) and of the whole process (``process_peak_rss``)."""
    rows = []
    hwm_kb = _read_status_kb("VmHWM")
    if hwm_kb is not None:
        scope = ("load+inference (high-water mark reset once the model, artifact and reference were in memory)"
                 if baseline.rss_reset else "whole measuring process")
        rows.append(_metric("peak_rss", hwm_kb / 1024, "MiB", details={"scope": scope}))
    process_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, baseline.setup_hwm_kb or 0, hwm_kb or 0)
    rows.append(_metric("process_peak_rss", process_kb / 1024, "MiB",
                        details={"scope": "whole measuring process: imports, model, reference, load and "
                                          "inference; builds run in a separate process"}))
    return rows


def case_info(inputs: CaseInputs, measured: SessionResult, gpu_start: dict[str, Any], gpu_end: dict[str, Any],
              setup_s: float) -> dict[str, Any]:
    """The case's ``info``: artifact, provenance, model, session and timing convention, GPU state, setup time, data."""
    return {
        "artifact": artifact_summary(inputs.artifact),
        "provenance": inputs.artifact.provenance,
        "model_details": inputs.bundle.details,
        "session": measured.info,
        "timing": measured.timing.as_dict(),
        "gpu": {"start": gpu_start, "end": gpu_end},
        "setup_s": setup_s,
        "evaluation_samples": len(inputs.bundle.evaluation),
        "evaluation_data": inputs.bundle.evaluation.description,
        "cpus_allowed": sorted(os.sched_getaffinity(0)),  # where the process could run (pin_cpus narrows it)
    }


def build(case: Case, cache_dir: Path) -> dict[str, Any]:
    """What a case needs from the cache, built (artifact, and the fp32 reference when accuracy is on)."""
    bundle = load_bundle(ModelSpec.model_validate(case.model_spec), cache_dir)
    recipe = get_recipe(case.recipe)
    artifact = recipe.artifact(bundle, recipe.parse_config(case.recipe_options), case.artifact_format,
                               ArtifactCache(cache_dir))
    if case.measure_accuracy:
        reference_outputs(bundle, cache_dir)
        reference_nll(bundle, cache_dir)
    backend_built = build_backend_cache(case, artifact, cache_dir)
    stamp = _build_stamp(case, cache_dir)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(artifact.key)
    return {"build_time_s": artifact.build_time_s, "key": artifact.key, "backend_build": backend_built}


def build_backend_cache(case: Case, artifact: Artifact, cache_dir: Path) -> dict[str, Any] | None:
    """The backend's :meth:`~Backend.build_cache` for this case, timed; None when it builds nothing here."""
    backend = get_backend(case.backend_name)
    options = backend.parse_options(case.backend_options)
    if not backend.builds_for(options, case.device):
        return None
    t0 = time.perf_counter()
    facts = backend.build_cache(artifact, options, case.batch_size, case.device, cache_dir)
    if facts is None:
        return None
    return {"backend": backend.name, **facts, "build_time_s": time.perf_counter() - t0}


def _build_stamp(case: Case, cache_dir: Path) -> Path:
    """A file that exists once a build for exactly these inputs has succeeded in this cache; for a backend that
    builds its own cache (:meth:`Backend.builds_for`) the inputs include its options, batch size and device."""
    material: dict[str, Any] = {"model": case.model_spec, "recipe": case.recipe, "options": case.recipe_options,
                                "format": case.artifact_format, "reference": case.measure_accuracy}
    backend = get_backend(case.backend_name)
    if backend.builds_for(backend.parse_options(case.backend_options), case.device):
        material["backend"] = {"name": case.backend_name, "options": case.backend_options,
                               "batch_size": case.batch_size, "device": case.device}
    return cache_dir / "built" / content_key(material)


def _stamp_holds(case: Case, cache_dir: Path) -> bool:
    """The build stamp exists and the artifact it names is still in the cache (it may have been pruned)."""
    stamp = _build_stamp(case, cache_dir)
    try:
        key = stamp.read_text().strip()
    except OSError:
        return False
    return ArtifactCache(cache_dir).contains(key)


def _build_in_child(case: Case, cache_dir: Path) -> dict[str, Any]:
    """Run :func:`build` in a child process (same process group: the case's timeout covers it)."""
    with tempfile.TemporaryDirectory(prefix="costbench-build-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"case": case.to_dict(), "cache_dir": str(cache_dir)}))
        proc = subprocess.run([sys.executable, "-m", "costbench.harness.measure.worker", "--build", str(job), str(result)],
                              stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        if not result.exists():
            raise RuntimeError(f"the build process for {case.recipe!r} exited with {proc.returncode} and no result")
        payload = json.loads(result.read_text())
    if payload["status"] == "skipped":
        raise RecipeNotApplicable(payload["reason"])
    if payload["status"] != "ok":
        raise RuntimeError(f"build failed: {payload['reason']}")
    return payload


_USAGE = """usage: python -m costbench.harness.measure.worker [--build] JOB.json RESULT.json

Measure the case in JOB.json (written by the runner) and write RESULT.json atomically; with --build,
build what the case needs into the cache instead. Run by costbench's executors, one case a process."""


def main(argv: list[str]) -> int:
    step = execute
    if argv and argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if argv and argv[0] == "--build":
        step, argv = build, argv[1:]
    if len(argv) != 2:
        print(_USAGE, file=sys.stderr)
        return 2
    job_path, result_path = Path(argv[0]), Path(argv[1])
    STAGE.path = stage_file(result_path)
    job = json.loads(job_path.read_text())
    case = Case.from_dict(job["case"])
    # Keep stdout for nothing: libraries that print go to stderr, which the parent tails on failure.
    sys.stdout = sys.stderr
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
