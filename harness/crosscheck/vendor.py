"""Cross-checks against the vendors' own benchmark tools: the same artifact, threads, precision, hint and shape.

For every case of a run (or of a suite, measured afresh) whose backend has a vendor tool here, the tool
is run on the artifact the case measured, with the settings costbench compiled it with:

- OpenVINO: ``benchmark_app`` (it ships with the openvino wheel). ``-hint`` is the case's hint, ``-api sync``
  for single_stream and ``-api async -nireq <costbench's concurrency>`` for offline, ``-infer_precision``
  the case's inference precision (``f32`` unless it asked otherwise), ``-shape`` every input at the case's
  batch (static, as costbench reshapes it, so no ``-data_shape`` is needed). benchmark_app refuses
  ``-nthreads``/``-nstreams`` together with a hint ("fine tune options ... set -hint none"), so threads and
  streams the case set go in ``-load_config`` as INFERENCE_NUM_THREADS/NUM_STREAMS, which is exactly what
  costbench passes to ``compile_model``. The compiled model's actual properties, which both sides log, are
  compared, and any that differ are reported beside the pair.
- TensorRT: ``trtexec`` when it is installed (``--loadEngine`` on the engine costbench built, else ``--onnx``
  with the case's precision flags), ``--shapes`` at the case's batch, data transfers included (costbench's
  boundary is host numpy in, host numpy out), no CUDA graph (costbench launches each query), per-query times
  from ``--exportTimes``.

benchmark_app times ``InferRequest.infer()`` inside the runtime (``request.latency``) on input tensors
filled once before the loop; costbench times ``session.run + synchronize`` from Python, with inputs rotated
through 8 batches and outputs copied to numpy. :func:`openvino_breakdown` measures each of those steps on one
compiled model, interleaved, so the difference can be attributed.
"""

from __future__ import annotations

import abc
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from costbench.core.metrics import OFFLINE, SINGLE_STREAM, THROUGHPUT, catalogue
from costbench.core.stats import percentile
from costbench.harness.suite.case import scenario_kind_of
from costbench.harness.suite.skips import can_never_run

AGREE_WITHIN = 0.05  # the goal: within 5% of the vendor's tool
DEFAULT_TIME_S = 12.0  # benchmark_app -t 12: a median that repeats within 1% on an idle machine (FACTS.md)
CROSSCHECKED_KINDS = (SINGLE_STREAM, OFFLINE)  # the scenario kinds a vendor tool reproduces


# --- What is compared -------------------------------------------------------------------------------------

@dataclass
class Target:
    """One measured case to cross-check: what costbench measured and on which artifact, with which settings."""

    model: str
    variant: str
    backend: str
    backend_name: str
    device: str
    scenario: str  # the suite's label
    batch_size: int
    backend_options: dict[str, Any]
    artifact: dict[str, Any]  # artifact_summary(): format, path, key, inputs, outputs
    session: dict[str, Any]  # the session's info(): the compiled model's actual properties
    p50_ms: float | None  # costbench's median of the scenario's primary series (per query; per batch offline)
    ci_ms: tuple[float | None, float | None] = (None, None)
    throughput: float | None = None  # samples/s
    concurrency: int | None = None  # offline: requests in flight
    source: str = ""  # "run RUN_ID" or "measured now"
    case: dict[str, Any] | None = None  # the Case as plain data (for a fresh measurement)
    kind: str = SINGLE_STREAM  # the scenario's registered kind

    @property
    def label(self) -> str:
        return f"{self.model} / {self.variant} / {self.backend} / {self.scenario} / b{self.batch_size}"


@dataclass
class VendorResult:
    """What the vendor's tool reported, parsed from its own report (and its log, where that is finer)."""

    median_ms: float
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    throughput: float | None = None  # samples/s
    iterations: int | None = None
    median_source: str = ""  # where median_ms was read, with its resolution
    properties: dict[str, str] = field(default_factory=dict)  # the compiled model's properties, as logged
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """One case and the vendor tool's measurement of the same artifact."""

    target: Target
    tool: str
    status: str  # ok | skipped | failed
    reason: str = ""
    command: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    vendor: VendorResult | None = None
    mismatches: list[str] = field(default_factory=list)  # settings the two sides compiled differently
    notes: list[str] = field(default_factory=list)
    repeats: list[dict[str, float]] = field(default_factory=list)  # (costbench, vendor) medians per repeat

    @property
    def ratio(self) -> float | None:
        """costbench's time over the vendor's (> 1: costbench measures slower). Offline: vendor's throughput over
        costbench's, the same direction."""
        t, v = self.target, self.vendor
        if v is None:
            return None
        if t.kind == OFFLINE and t.throughput and v.throughput:
            return v.throughput / t.throughput
        if t.p50_ms and v.median_ms:
            return t.p50_ms / v.median_ms
        return None

    @property
    def verdict(self) -> str:
        r = self.ratio
        if r is None:
            return self.status
        return "agrees" if abs(r - 1) <= AGREE_WITHIN else ("costbench slower" if r > 1 else "costbench faster")

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {
            "model": t.model, "variant": t.variant, "backend": t.backend, "device": t.device,
            "scenario": t.scenario, "batch_size": t.batch_size, "source": t.source,
            "costbench": {"p50_ms": t.p50_ms, "ci_ms": list(t.ci_ms), "throughput": t.throughput,
                          "concurrency": t.concurrency},
            "tool": self.tool, "status": self.status, "reason": self.reason,
            "vendor": asdict(self.vendor) if self.vendor else None,
            "ratio": self.ratio, "verdict": self.verdict, "agree_within": AGREE_WITHIN,
            "command": self.command, "settings": self.settings, "mismatches": self.mismatches,
            "notes": self.notes, "repeats": self.repeats,
            "artifact": {k: t.artifact.get(k) for k in ("format", "path", "key")},
        }


# --- Vendor tools ----------------------------------------------------------------------------------------

class VendorTool(abc.ABC):
    """A vendor's benchmark tool for one costbench backend; registered by that backend's name."""

    backend: ClassVar[str]
    name: ClassVar[str]

    @abc.abstractmethod
    def probe(self) -> str | None:
        """None when the tool can run here, else why not (and how to get it)."""

    @abc.abstractmethod
    def command(self, target: Target, workdir: Path, time_s: float) -> tuple[list[str], dict[str, Any]]:
        """(argv, the settings it encodes) to measure ``target``'s artifact like costbench did."""

    @abc.abstractmethod
    def parse(self, workdir: Path, log: str) -> VendorResult:
        """The tool's result from its report in ``workdir`` (and its ``log``)."""

    def compare_settings(self, target: Target, result: VendorResult) -> list[str]:
        """Settings both sides report and compiled differently; none by default."""
        return []


def _shape_text(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in dims) + "]"


def _batched(spec: dict[str, Any], batch: int) -> list[int]:
    return [batch, *spec["shape"]]


_PRECISION_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16",
                    "f16": "f16"}


def _norm_precision(value: Any) -> str:
    text = str(value)
    m = re.search(r"'(\w+)'", text)  # benchmark_app logs "<Type: 'float32'>"
    return _PRECISION_NAMES.get(m.group(1) if m else text, text)


class BenchmarkApp(VendorTool):
    """OpenVINO's ``benchmark_app`` (``openvino.tools.benchmark``), run as its own process."""

    backend = "openvino"
    name = "benchmark_app"
    # The compiled-model properties costbench records (session info) and benchmark_app logs at step 8.
    COMPARED = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS")

    def executable(self) -> list[str]:
        exe = Path(sys.executable).with_name("benchmark_app")
        if exe.exists():
            return [str(exe)]
        found = shutil.which("benchmark_app")
        return [found] if found else [sys.executable, "-m", "openvino.tools.benchmark.main"]

    def probe(self) -> str | None:
        try:
            import openvino.tools.benchmark.main  # noqa: F401
        except ImportError as exc:
            return f"benchmark_app is not available ({exc}): pip install openvino (it ships the tool)"
        return None

    def _shapes(self, target: Target) -> str:
        inputs = target.artifact.get("inputs") or []
        if len(inputs) == 1:  # one input: no name needed, whatever the model calls it
            return _shape_text(_batched(inputs[0], target.batch_size))
        names = self._input_names(Path(target.artifact["path"]), [i["name"] for i in inputs])
        return ",".join(f"{n}{_shape_text(_batched(i, target.batch_size))}" for n, i in zip(names, inputs))

    @staticmethod
    def _input_names(path: Path, declared: list[str]) -> list[str]:
        """The model's name for each declared input: by tensor name, else by position (as the backend binds)."""
        import openvino as ov

        ports = list(ov.Core().read_model(str(path)).inputs)
        out = []
        for i, name in enumerate(declared):
            by_name = [p for p in ports if name in p.get_names()]
            out.append(name if by_name else ports[i].get_any_name())
        return out

    def command(self, target: Target, workdir: Path, time_s: float) -> tuple[list[str], dict[str, Any]]:
        opts = target.backend_options
        hint = opts.get("hint", "latency")
        precision = opts.get("inference_precision", "f32")
        api = "sync" if target.kind == SINGLE_STREAM else "async"
        argv = [*self.executable(), "-m", str(target.artifact["path"]), "-d", "CPU", "-hint", hint, "-api", api]
        settings: dict[str, Any] = {"hint": hint, "api": api}
        if api == "async" and target.concurrency:
            argv += ["-nireq", str(target.concurrency)]
            settings["nireq"] = target.concurrency
        if precision != "plugin-default":
            argv += ["-infer_precision", precision]
        settings["infer_precision"] = precision
        shape = self._shapes(target)
        argv += ["-shape", shape]
        settings["shape"] = shape
        config = {}
        if opts.get("threads") is not None:
            config["INFERENCE_NUM_THREADS"] = str(opts["threads"])
        if opts.get("num_streams") is not None:
            config["NUM_STREAMS"] = str(opts["num_streams"])
        if config:
            cfg = workdir / "ov_config.json"
            cfg.write_text(json.dumps({"CPU": config}))
            argv += ["-load_config", str(cfg)]
            settings["load_config"] = config
        seconds = max(1, math.ceil(time_s))  # benchmark_app's -t takes whole seconds
        argv += ["-t", str(seconds), "-report_type", "no_counters", "-report_folder", str(workdir), "-json_stats"]
        settings["time_s"] = seconds
        return argv, settings

    def parse(self, workdir: Path, log: str) -> VendorResult:
        report_path = workdir / "benchmark_report.json"
        if not report_path.exists():
            raise RuntimeError(f"benchmark_app wrote no report ({report_path}); its log ends: {_tail_text(log)}")
        report = json.loads(report_path.read_text())
        res = report.get("execution_results", {})
        if "error" in res:
            raise RuntimeError(f"benchmark_app: {res['error']}")
        median = float(res["latency (ms)"])  # the report rounds to 0.01 ms
        source = "benchmark_report.json 'latency (ms)' (0.01 ms resolution)"
        finer = re.search(r"Median:\s+([0-9.]+) (us|ms)", log)
        if finer and finer.group(2) == "us":  # under 1 ms on average the log prints µs to 0.01 µs
            median = float(finer.group(1)) / 1000.0
            source = "benchmark_app log 'Median' (0.01 µs resolution; the report rounds to 0.01 ms)"
        return VendorResult(
            median_ms=median, mean_ms=_f(res.get("avg latency")), min_ms=_f(res.get("min latency")),
            max_ms=_f(res.get("max latency")), throughput=_f(res.get("throughput")),
            iterations=int(res["total number of iterations"]) if "total number of iterations" in res else None,
            median_source=source, properties=parse_benchmark_app_properties(log), report=report)

    def compare_settings(self, target: Target, result: VendorResult) -> list[str]:
        out = []
        for key in self.COMPARED:
            ours, theirs = target.session.get(key), result.properties.get(key)
            if ours is None or theirs is None:
                continue
            if key == "INFERENCE_PRECISION_HINT":
                ours, theirs = _norm_precision(ours), _norm_precision(theirs)
            if str(ours) != str(theirs):
                out.append(f"{key}: costbench {ours}, benchmark_app {theirs}")
        return out


def parse_benchmark_app_properties(log: str) -> dict[str, str]:
    """The compiled model's properties benchmark_app logs under 'Model:' at step 8 ('  KEY: VALUE' lines)."""
    props: dict[str, str] = {}
    inside = False
    for line in log.splitlines():
        if "Step 8/" in line:
            inside = True
            continue
        if inside and "Step 9/" in line:
            break
        m = re.match(r"\[ INFO \]\s{3}([A-Z0-9_]+): (.*)$", line)
        if inside and m:
            props[m.group(1)] = m.group(2).strip()
    return props


TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")


class Trtexec(VendorTool):
    """NVIDIA's ``trtexec``, on the engine costbench built (or its ONNX, with the same precision flags)."""

    backend = "tensorrt"
    name = "trtexec"

    def executable(self) -> str | None:
        return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)

    def probe(self) -> str | None:
        if self.executable() is None:
            return ("trtexec is not installed (not on PATH, nor in " + ", ".join(TRTEXEC_PATHS) +
                    "): it comes with TensorRT's tar/deb packages (the pip wheels do not ship it)")
        return None

    @staticmethod
    def engine_path(target: Target) -> Path | None:
        """The engine costbench loaded for this case: <cache>/artifacts/<engine_key>/model.engine, if still there."""
        key = target.session.get("engine_key")
        opts_dir = target.backend_options.get("engine_cache_dir")
        if not key or not target.artifact.get("path"):
            return None
        root = Path(opts_dir).expanduser() / "artifacts" if opts_dir else Path(target.artifact["path"]).parent.parent
        path = root / key / "model.engine"
        return path if path.exists() else None

    def command(self, target: Target, workdir: Path, time_s: float) -> tuple[list[str], dict[str, Any]]:
        inputs = target.artifact.get("inputs") or []
        shapes = ",".join(f"{i['name']}:{'x'.join(str(d) for d in _batched(i, target.batch_size))}" for i in inputs)
        argv = [self.executable() or "trtexec"]
        settings: dict[str, Any] = {}
        engine = self.engine_path(target)
        if engine is not None:
            argv.append(f"--loadEngine={engine}")
            settings["engine"] = str(engine)
        else:
            argv.append(f"--onnx={target.artifact['path']}")
            opts = target.backend_options
            flags = []
            if opts.get("typing", "strong") == "strong":
                flags.append("--stronglyTyped")
            else:
                if opts.get("fp16"):
                    flags.append("--fp16")
                if target.session.get("qdq_nodes") or "int8" in target.variant:
                    flags.append("--int8")
            argv += flags
            settings["precision_flags"] = flags
        argv.append(f"--shapes={shapes}")  # the engine's profile is fixed at the case's batch: the same shapes
        settings["shapes"] = shapes
        device = target.device.partition(":")[2] or "0"
        times = workdir / "times.json"
        argv += [f"--device={device}", f"--duration={time_s:g}", "--iterations=100", "--warmUp=500",
                 "--percentile=50,99", f"--exportTimes={times}"]
        settings.update(device=device, duration_s=time_s, data_transfers=True, cuda_graph=False)
        return argv, settings

    def parse(self, workdir: Path, log: str) -> VendorResult:
        times = workdir / "times.json"
        if not times.exists():
            raise RuntimeError(f"trtexec wrote no --exportTimes file; its log ends: {_tail_text(log)}")
        rows = json.loads(times.read_text())
        latency = sorted(float(r["latencyMs"]) for r in rows)
        if not latency:
            raise RuntimeError("trtexec's --exportTimes file has no iterations")
        throughput = re.search(r"Throughput: ([0-9.]+) qps", log)
        return VendorResult(median_ms=percentile(latency, 50), mean_ms=float(np.mean(latency)), min_ms=latency[0],
                            max_ms=latency[-1], throughput=float(throughput.group(1)) if throughput else None,
                            iterations=len(latency),
                            median_source="--exportTimes latencyMs (H2D + compute + D2H), nearest-rank median")


TOOLS: dict[str, type[VendorTool]] = {t.backend: t for t in (BenchmarkApp, Trtexec)}


def _f(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _tail_text(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(nothing)"


# --- Targets from a run, or from a suite ---------------------------------------------------------------

def _metric_row(metrics: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((m for m in metrics if m.get("metric") == name), None)


def target_from_record(spec: dict[str, Any], info: dict[str, Any], metrics: list[dict[str, Any]],
                       source: str) -> Target:
    """A Target from one case record (its spec, info and metric rows, as the run file holds them)."""
    kind = scenario_kind_of(spec)
    primary = _metric_row(metrics, catalogue().primary_series(kind).p50)
    tput = _metric_row(metrics, THROUGHPUT)
    conc = _metric_row(metrics, "concurrency")
    return Target(
        model=spec["model"], variant=spec["variant"], backend=spec["backend"],
        backend_name=spec.get("backend_name") or spec["backend"], device=spec.get("device", "cpu"),
        scenario=spec["scenario"], batch_size=int(spec["batch_size"]),
        backend_options=dict(spec.get("backend_options") or {}), artifact=dict(info.get("artifact") or {}),
        session=dict(info.get("session") or {}),
        p50_ms=_f(primary["value"]) if primary else None,
        ci_ms=(_f(primary.get("ci_low")), _f(primary.get("ci_high"))) if primary else (None, None),
        throughput=_f(tput["value"]) if tput else None,
        concurrency=int(conc["value"]) if conc and conc.get("value") is not None else None,
        source=source, case=spec, kind=kind)


def targets_from_selection(sel: Any, run_ids: Sequence[str]) -> tuple[list[Target], list[Pair]]:
    """Targets for every case of ``run_ids`` a vendor tool covers; and Pairs (skipped) for those not measured.

    ``sel`` is a :class:`costbench.harness.reports.data.Selection` (``load_selection``).
    """
    targets, skipped = [], []
    for run_id in run_ids:
        cases = sel.cases[sel.cases.run_id == run_id]
        rows = sel.results[sel.results.run_id == run_id]
        for case in cases.itertuples(index=False):
            spec = case.spec or {}
            backend_name = spec.get("backend_name") or spec.get("backend")
            if backend_name not in TOOLS or scenario_kind_of(spec) not in CROSSCHECKED_KINDS:
                continue
            mine = rows[rows.case_id == case.case_id]
            metrics = [{"metric": r.metric, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
                       for r in mine.itertuples(index=False)]
            t = target_from_record(spec, case.info or {}, metrics, f"run {run_id}")
            if case.status != "ok":
                if spec.get("artifact_format") is None and _never_runs_reason(spec.get("reason") or ""):
                    continue
                skipped.append(Pair(t, TOOLS[backend_name].name, "skipped",
                                    f"the case was {case.status} in run {run_id}: nothing to compare"))
            else:
                targets.append(t)
    return targets, skipped


def _never_runs(case: Any) -> bool:
    """A combination that can never run (the variant's format is not one the backend loads, or the recipe does not
    apply): not a result, so not a row; a case skipped for a reason the user can fix (a missing package) is."""
    return case.artifact_format is None and _never_runs_reason(case.reason)


def _never_runs_reason(reason: str) -> bool:
    return can_never_run(reason)


def cases_from_suite(path: Path, only: list[dict[str, str]] | None = None) -> tuple[list[Any], list[Any], int]:
    """(planned cases a vendor tool covers, those the plan skipped for a fixable reason, how many combinations can
    never run) of a suite file."""
    from costbench.harness.execute.plan import PLANNED, make_plan
    from costbench.harness.execute.load import load_suite

    cases = [c for c in make_plan(load_suite(path), only)
             if c.backend_name in TOOLS and c.scenario_kind in CROSSCHECKED_KINDS]
    never = [c for c in cases if c.status != PLANNED and _never_runs(c)]
    return ([c for c in cases if c.status == PLANNED],
            [c for c in cases if c.status != PLANNED and c not in never], len(never))


def measure_case(case_dict: dict[str, Any], cache_dir: Path, workdir: Path) -> tuple[Target | None, str]:
    """Measure one case afresh through the runner, as ``costbench run`` would: a one-case suite made from the
    case's own specs, its ``processes`` fresh processes, a run file under ``workdir`` and the rows merged
    across processes. What the cache lacks is built by ``worker --build``.

    Accuracy is off: only the timing is compared. Returns (target, '') or (None, why it did not measure).
    """
    outcome, why = measure_outcome(case_dict, cache_dir, workdir)
    if outcome is None:
        return None, why
    # The runner's outcome holds the case's processes merged: one row per metric over all of them.
    return target_from_record(outcome.case.to_dict(), outcome.info, outcome.metrics, "measured now"), ""


def measure_outcome(case_dict: dict[str, Any], cache_dir: Path, workdir: Path) -> tuple[Any | None, str]:
    """:func:`measure_case`'s measurement: (the runner's outcome, processes merged, '') or (None, why not)."""
    from costbench.harness.execute.executor import LocalExecutor
    from costbench.harness.execute.load import SuiteError, parse_suite
    from costbench.harness.execute.runner import run_plan

    try:
        suite = parse_suite(one_case_suite(case_dict), workdir / "crosscheck.toml")
    except (KeyError, SuiteError) as exc:  # a hand-made or older run file whose case record lacks fields
        return None, f"the run's case record cannot be measured again ({exc})"
    with LocalExecutor() as executor:
        summary = run_plan(suite, executor.plan(suite), workdir / "results", cache_dir=cache_dir, executor=executor)
    (outcome,) = summary.outcomes
    if outcome.status != "ok":
        return None, f"costbench's measurement {outcome.status}: {outcome.reason}"
    return outcome, ""


def one_case_suite(case: dict[str, Any]) -> dict[str, Any]:
    """The suite (as data) that plans exactly ``case``: its model, recipe, backend, scenario and batch size."""
    backend = {"name": case["backend_name"], "device": case["device"], **(case.get("backend_options") or {})}
    if case["backend"] != case["backend_name"]:
        backend["label"] = case["backend"]
    return {
        "name": f"crosscheck-{case['model']}",
        "models": [case["model_spec"]],
        "variants": [{"name": case["variant"], "recipe": case["recipe"], **(case.get("recipe_options") or {})}],
        "backends": [backend],
        "scenarios": [{**case["scenario_spec"], "name": case["scenario"]}],
        "batch_sizes": [case["batch_size"]],
        "timeout_s": case["timeout_s"],
        "accuracy": False,
        "processes": case.get("processes", 1),
    }


# --- Running the tools ------------------------------------------------------------------------------------

Runner = Callable[[list[str], Path], tuple[int, str]]


def _run_process(argv: list[str], workdir: Path, timeout_s: float = 600.0) -> tuple[int, str]:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout_s, cwd=workdir)
    (workdir / "tool.log").write_text(proc.stdout)
    return proc.returncode, proc.stdout


def missing_artifact(target: Target) -> str | None:
    """Why the artifact of ``target`` cannot be used here, or None."""
    path = target.artifact.get("path")
    if not path:
        return "the case records no artifact path (info.artifact.path)"
    if not Path(path).exists():
        return (f"its artifact {path} is not on this machine (another machine's cache, or pruned since): "
                "pass --fresh to rebuild it and measure costbench again here, or cross-check the suite file")
    return None


def crosscheck_target(target: Target, tool: VendorTool, workdir: Path, time_s: float = DEFAULT_TIME_S,
                      run: Runner | None = None) -> Pair:
    """Run ``tool`` once on ``target``'s artifact; a Pair with the result, or skipped/failed with the reason."""
    why = tool.probe()
    if why:
        return Pair(target, tool.name, "skipped", why)
    why = missing_artifact(target)
    if why:
        return Pair(target, tool.name, "skipped", why)
    workdir.mkdir(parents=True, exist_ok=True)
    argv, settings = tool.command(target, workdir, time_s)
    rc, log = (run or _run_process)(argv, workdir)
    pair = Pair(target, tool.name, "ok", command=argv, settings=settings)
    if rc != 0:
        pair.status, pair.reason = "failed", f"{tool.name} exited with {rc}: {_tail_text(log)}"
        return pair
    try:
        pair.vendor = tool.parse(workdir, log)
    except (RuntimeError, KeyError, ValueError) as exc:
        pair.status, pair.reason = "failed", str(exc)
        return pair
    pair.mismatches = tool.compare_settings(target, pair.vendor)
    return pair


def crosscheck(targets: Sequence[Target], workdir: Path, time_s: float = DEFAULT_TIME_S, fresh: bool = False,
               repeat: int = 1, cache_dir: Path | None = None, here_env_id: str | None = None,
               run_env_ids: dict[str, str] | None = None, on_start: Callable[[Target], None] | None = None,
               run: Runner | None = None) -> list[Pair]:
    """Each target against its vendor tool. ``fresh``: measure costbench again here before each tool run;
    ``repeat`` > 1 alternates (costbench, tool) that many times and keeps the median of each side."""
    from costbench.core.artifacts import default_cache_dir

    cache_dir = cache_dir or default_cache_dir()
    pairs = []
    for n, target in enumerate(targets):
        if on_start:
            on_start(target)
        tool = TOOLS[target.backend_name]()
        why = tool.probe()
        if why:  # before measuring costbench afresh: without the tool there is nothing to pair it with
            pairs.append(Pair(target, tool.name, "skipped", why))
            continue
        remeasure = ((lambda sub, case=target.case: measure_case(case, cache_dir, sub))
                     if fresh and target.case is not None else None)
        runs = alternate_runs(target, repeat, lambda k, n=n: workdir / f"{n:03d}-{k}", remeasure,
                              lambda t, sub, tool=tool: crosscheck_target(t, tool, sub, time_s, run),
                              lambda why, tool=tool: Pair(target, tool.name, "failed", why))
        pair = _combine(runs)
        note = elsewhere_note(target.source, here_env_id, run_env_ids, fresh, "costbench's number is",
                              "the vendor tool")
        if note:
            pair.notes.append(note)
        pairs.append(pair)
    return pairs


def alternate_runs(target: Any, repeat: int, subdir: Callable[[int], Path],
                   remeasure: Callable[[Path], tuple[Any, str]] | None, run_tool: Callable[[Any, Path], Any],
                   failed: Callable[[str], Any]) -> list[Any]:
    """(costbench, tool) ``repeat`` times, alternated, each repeat in its own ``subdir(k)``: ``remeasure`` (with
    ``--fresh``) measures costbench again first, ``run_tool`` runs the tool on what costbench measured. Stops at
    the first repeat that is not ok (a failed re-measurement becomes ``failed(why)``)."""
    runs: list[Any] = []
    for k in range(max(1, repeat)):
        sub = subdir(k)
        sub.mkdir(parents=True, exist_ok=True)
        measured = target
        if remeasure is not None:
            measured, why = remeasure(sub)
            if measured is None:
                runs.append(failed(why))
                break
        runs.append(run_tool(measured, sub))
        if runs[-1].status != "ok":
            break
    return runs


def all_ok(runs: list[Any]) -> list[Any] | None:
    """The repeats to combine: all of them when there are several and every one is ok, else None (the caller
    keeps the single run, or the first that failed, as it is)."""
    ok = [p for p in runs if p.status == "ok"]
    return ok if len(runs) > 1 and ok and len(ok) == len(runs) else None


def first_failed_or_last(runs: list[Any]) -> Any:
    return next((p for p in runs if p.status != "ok"), runs[-1])


def median_of(xs: Sequence[float | None]) -> float | None:
    """The median of the values that are there; None when none is."""
    present = [x for x in xs if x is not None]
    return float(np.median(present)) if present else None


def elsewhere_note(source: str, here_env_id: str | None, run_env_ids: dict[str, str] | None, fresh: bool,
                   ours: str, theirs: str) -> str | None:
    """Why a pair compares two machines: costbench's numbers came from a stored run measured elsewhere."""
    env = (run_env_ids or {}).get(source.removeprefix("run "))
    if here_env_id and env and env != here_env_id and not fresh:
        return (f"{ours} from {source} on machine {env}; {theirs} ran here ({here_env_id}): pass --fresh to "
                "measure both here")
    return None


def _combine(runs: list[Pair]) -> Pair:
    """One Pair from repeats: the median of costbench's and of the vendor's medians (and throughputs)."""
    ok = all_ok(runs)
    if ok is None:
        return first_failed_or_last(runs)
    first = ok[0]
    t = first.target
    med = median_of
    target = Target(**{**asdict(t), "p50_ms": med([p.target.p50_ms for p in ok]),
                       "throughput": med([p.target.throughput for p in ok]), "ci_ms": (None, None),
                       "source": t.source})
    vendor = VendorResult(**{**asdict(first.vendor), "median_ms": med([p.vendor.median_ms for p in ok]),
                             "throughput": med([p.vendor.throughput for p in ok]),
                             "median_source": first.vendor.median_source + f"; median of {len(ok)} runs"})
    return Pair(target, first.tool, "ok", command=first.command, settings=first.settings, vendor=vendor,
                mismatches=sorted({m for p in ok for m in p.mismatches}),
                repeats=[{"costbench_ms": p.target.p50_ms, "vendor_ms": p.vendor.median_ms,
                          "costbench_throughput": p.target.throughput, "vendor_throughput": p.vendor.throughput}
                         for p in ok])


# --- Output -----------------------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if v < 1 else f"{v:.3f}"


def table_rows(pairs: Sequence[Pair]) -> list[dict[str, str]]:
    """One display row per pair (the rich table and the Markdown share them)."""
    rows = []
    for p in pairs:
        t, v = p.target, p.vendor
        offline = t.kind == OFFLINE
        settings = " ".join(f"{k}={v_}" for k, v_ in p.settings.items() if k not in ("time_s",)) if p.settings else ""
        rows.append({
            "case": f"{t.model} / {t.variant}",
            "scenario": f"{t.scenario} b{t.batch_size}",
            "costbench": (f"{t.throughput:.1f}/s" if offline and t.throughput else _ms(t.p50_ms) + " ms"),
            "vendor": ("-" if v is None else f"{v.throughput:.1f}/s" if offline and v.throughput
                       else _ms(v.median_ms) + " ms"),
            "ratio": "-" if p.ratio is None else f"{p.ratio:.3f}",
            "verdict": p.verdict if p.status == "ok" else f"{p.status}: {p.reason}",
            "tool": p.tool,
            "settings": settings + ("; differs: " + "; ".join(p.mismatches) if p.mismatches else ""),
        })
    return rows


COLUMNS = ("case", "scenario", "costbench", "vendor", "ratio", "verdict", "tool", "settings")


def to_markdown(pairs: Sequence[Pair], header: dict[str, Any],
                breakdowns: dict[str, dict[str, Any]] | None = None) -> str:
    """A Markdown page: what was compared, on which machine, with which command, the table, and any breakdowns."""
    lines = ["# costbench vs the vendors' own tools", ""]
    for k, v in header.items():
        lines.append(f"- {k}: {v}")
    lines += ["", "ratio = costbench median / tool median (offline: tool throughput / costbench throughput); "
              f"'agrees' within {AGREE_WITHIN:.0%}.", "",
              "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table_rows(pairs):
        lines.append("| " + " | ".join(r[c].replace("|", "\\|") for c in COLUMNS) + " |")
    notes = [f"- {p.target.label}: {n}" for p in pairs for n in p.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    for label, bd in (breakdowns or {}).items():
        lines += ["", f"Where the time goes, {label} ({bd['rounds']} interleaved rounds x {bd['per_round']} calls "
                  "per step; medians):", "",
                  "| step | host ms | over a | runtime `request.latency` ms | what |", "|---|---|---|---|---|"]
        for name, st in bd["steps"].items():
            lines.append(f"| {name} | {st['host_median_ms']:.4f} | {st['over_a_ms'] * 1000:+.1f} µs "
                         f"({st['over_a_pct']:+.1f}%) | {st['runtime_latency_median_ms']:.4f} | {st['what']} |")
    cmds = [f"- {p.target.label}: `{shlex.join(p.command)}`" for p in pairs if p.command]
    if cmds:
        lines += ["", "Commands:", *cmds]
    return "\n".join(lines) + "\n"


# --- Where the difference goes (OpenVINO) ----------------------------------------------------------------

BREAKDOWN_STEPS = {
    "a_fixed_tensor": "request.infer() on input tensors set once (what benchmark_app times)",
    "b_same_array": "request.infer({i: the same array}, share_inputs=True): passing an input each call",
    "c_rotated": "request.infer({i: one of 8 arrays}, share_inputs=True): inputs rotated as costbench does",
    "d_rotated_outputs": "c, then outputs copied to numpy (np.array(copy=True)) as Session.run returns them",
    "e_session_run": "costbench's timed region: Session.run(inputs) + Session.synchronize()",
}


def _synthetic_batches(inputs: list[dict[str, Any]], batch: int, count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        feed = {}
        for spec in inputs:
            shape, dtype = _batched(spec, batch), np.dtype(spec.get("dtype", "float32"))
            feed[spec["name"]] = (rng.integers(0, 100, size=shape).astype(dtype) if dtype.kind in "iu"
                                  else rng.standard_normal(shape).astype(dtype))
        out.append(feed)
    return out


def openvino_breakdown(target: Target, rounds: int = 30, per_round: int = 50,
                       batches: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Time each step between benchmark_app's region and costbench's on ONE compiled model, interleaved.

    The session is prepared by costbench's OpenVINO backend with the case's options (the same compile
    config); step a uses a second InferRequest of that compiled model with its own input tensors filled
    once (as benchmark_app does), steps b-d drive the session's InferRequest directly, e its ``run``. Each round runs every step
    ``per_round`` times (after one untimed call), in an order that rotates between rounds, so drift and
    noise fall on all steps alike. Per step: the median host time (perf_counter_ns around the call) and the
    median of the runtime's own ``request.latency`` (what benchmark_app reports). Inputs are 8 synthetic
    batches of the artifact's shapes and dtypes (timing of these dense models does not depend on values).
    """
    from costbench.backends.openvino_backend import OpenVinoBackend
    from costbench.core.artifacts import Artifact, InputSpec

    art = target.artifact
    artifact = Artifact(format=art["format"], path=Path(art["path"]), key=art.get("key", ""),
                        inputs=[InputSpec(i["name"], tuple(i["shape"]), i.get("dtype", "float32"))
                                for i in art["inputs"]], outputs=list(art.get("outputs") or []))
    backend = OpenVinoBackend()
    session = backend.prepare(artifact, backend.parse_options(target.backend_options), target.batch_size, "cpu")
    try:
        batches = batches or _synthetic_batches(art["inputs"], target.batch_size, 8)
        # Steps a-d use the session's own request: the same buffers and compiled model as step e.
        request, plan, indices = session._request, session._plan, session._indices  # noqa: SLF001
        n_out = len(session._compiled.outputs)  # noqa: SLF001
        from costbench.backends.base import ordered_inputs

        feeds = [dict(zip(indices, ordered_inputs(b, plan))) for b in batches]
        # Step a as benchmark_app does it: its own request on the compiled model, whose own input tensors are
        # filled once; the runtime then reads the same buffers on every call.
        fixed_request = session._compiled.create_infer_request()  # noqa: SLF001
        for idx, array in feeds[0].items():
            fixed_request.get_input_tensor(idx).data[:] = array

        def a(i: int) -> None:
            fixed_request.infer()

        def b(i: int) -> None:
            request.infer(feeds[0], share_inputs=True, share_outputs=True)

        def c(i: int) -> None:
            request.infer(feeds[i % len(feeds)], share_inputs=True, share_outputs=True)

        def d(i: int) -> None:
            res = request.infer(feeds[i % len(feeds)], share_inputs=True, share_outputs=True)
            [np.array(res[k], copy=True) for k in range(n_out)]

        def e(i: int) -> None:
            session.run(batches[i % len(batches)])
            session.synchronize()

        steps = {"a_fixed_tensor": a, "b_same_array": b, "c_rotated": c, "d_rotated_outputs": d,
                 "e_session_run": e}
        host = {k: [] for k in steps}
        plugin = {k: [] for k in steps}
        names = list(steps)
        clock = time.perf_counter_ns
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                fn = steps[name]
                req = fixed_request if name == "a_fixed_tensor" else request
                fn(0)  # untimed: the first call after switching steps rebinds tensors
                for i in range(per_round):
                    t0 = clock()
                    fn(i)
                    host[name].append(clock() - t0)
                    plugin[name].append(req.latency)
        out: dict[str, Any] = {"rounds": rounds, "per_round": per_round, "steps": {}}
        base = float(np.median(host["a_fixed_tensor"])) / 1e6
        for name in names:
            h = float(np.median(host[name])) / 1e6
            out["steps"][name] = {"what": BREAKDOWN_STEPS[name], "host_median_ms": h,
                                  "runtime_latency_median_ms": float(np.median(plugin[name])),
                                  "over_a_ms": h - base, "over_a_pct": 100 * (h / base - 1) if base else None,
                                  "samples": len(host[name])}
        return out
    finally:
        session.close()
