"""Cross-check of generative cases against optimum-benchmark's PyTorch backend: TTFT vs prefill, TPOT vs decode.

For every ``generate`` case of the ``transformers`` backend (a run's, or a suite's measured afresh),
optimum-benchmark (``optimum_benchmark``, the Hugging Face tool) measures the same model folder with the same
settings, and each tool's numbers are set side by side with what each one includes.

What is passed to it (:func:`ob_settings`): the case's folder (the artifact folder, whose weights are the
bundle's own), ``device = cpu``, ``torch_dtype`` the case's dtype, ``cache_implementation = static`` when the
case used the static cache (none: Transformers' dynamic one), ``torch_compile`` on the forward with
``fullgraph`` when the case compiled, batch size and prompt length as ``input_shapes``, and greedy generation
with ``max_new_tokens = min_new_tokens = output_tokens``. Threads: optimum-benchmark 0.6.0's PyTorch backend
calls ``torch.set_num_threads`` for ``inter_op_num_threads`` (and ``set_num_interop_threads`` for
``intra_op_num_threads``: the two names are swapped in ``backends/pytorch/backend.py``), so the case's
threads go in ``inter_op_num_threads``; the child process reports ``torch.get_num_threads()`` after the run
and a difference is listed as a mismatch. It measures ``iterations`` = the case's ``min_count`` requests and at
least ``--time`` seconds, after its own warm-up (two full ``generate`` calls, then ``warmup_runs`` = the case's
``warmup_count`` of two tokens).

It runs in a fresh process of ours (``python -m costbench.harness.crosscheck.optimum_benchmark SPEC OUT``)
with optimum-benchmark's inline launcher, offline (``HF_HUB_OFFLINE=1``: the folder is local, nothing is
downloaded). Its own process launcher is not used: the parent polls the child in a busy loop
(``launchers/process/launcher.py``: ``while isolated_process.is_alive() and not parent_connection.poll():
pass``), which takes a whole core from the measurement on a small machine.

What each number includes (the PyTorch backend is one of optimum-benchmark's per-token backends, so it times
one ``generate`` call per request with a logits processor, ``trackers/latency.py``:
``PerTokenLatencySessionTrackerLogitsProcessor``):

- optimum-benchmark **prefill** = ``generate()`` called -> the first call of its logits processor (the
  prefill forward's logits, before the token is chosen). costbench **TTFT** = request start -> the first token
  on the host (the same, plus choosing the token and the streamer's call; and the ids handed in as numpy).
- optimum-benchmark **decode** = the first logits-processor call -> ``generate()`` returns: the n - 1 later
  steps plus what ``generate`` does after the last one; per token, ``decode / (n - 1)``. costbench **TPOT** =
  (last stamp - first stamp) / (n - 1): the n - 1 step gaps only. The tail is measured per request
  (decode minus the sum of that request's own step gaps) and reported.
- optimum-benchmark **per_token**: the gaps between consecutive logits-processor calls. In 0.6.0 the list
  is built wrongly: the event list is never cleared between requests, and each request appends every gap of
  the session so far, so it repeats earlier gaps and holds the gap from one request's last step to the next
  request's first (that request's prefill). Its p50 and mean are reported as it gives them, and beside them
  the gaps of each request rebuilt from the last request's block (which holds every step of the session once,
  in order), so the same quantity as costbench's inter-token gaps can be compared.

The two tools run one after the other in different processes, so their numbers also differ by whatever
the machine did in between and by the process's own state (thread placement, memory layout): ``--repeat``
alternates them and keeps the median of each side.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from costbench.core.metrics import GENERATE, INTER_TOKEN, REQUEST_LATENCY, TPOT, TTFT
from costbench.harness.crosscheck.vendor import (AGREE_WITHIN, DEFAULT_TIME_S, Target, _metric_row, _never_runs,
                                                 _never_runs_reason, _tail_text, all_ok, alternate_runs,
                                                 elsewhere_note, first_failed_or_last, measure_outcome, median_of,
                                                 target_from_record)
from costbench.harness.suite.case import scenario_kind_of

TOOL = "optimum-benchmark"
DISTRIBUTION = "optimum-benchmark"
TESTED_VERSION = "0.6.0"
BACKEND = "transformers"  # the costbench backend whose cases optimum-benchmark's PyTorch backend reproduces
KINDS = (GENERATE,)  # one request at a time: optimum-benchmark's inference scenario does the same
INSTALL_HINT = "pip install -c constraints/cpu.txt 'costbench[crosscheck]' (optimum-benchmark==0.6.0)"
QUANTIZED_WEIGHTS = "torchao-weights.pt"  # the weight-only recipes' state dict (costbench.core.artifacts)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def probe() -> str | None:
    """None when optimum-benchmark can run here, else why not and how to install it."""
    try:
        import optimum_benchmark  # noqa: F401
    except ImportError as exc:
        return f"optimum-benchmark is not installed ({exc}): {INSTALL_HINT}"
    return None


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


# --- What is compared -------------------------------------------------------------------------------------

@dataclass
class GenerativeTarget:
    """One measured generate case: costbench's TTFT and TPOT, and what optimum-benchmark needs to repeat it."""

    target: Target  # the case, its artifact and options (``p50_ms`` is TPOT p50, the scenario's headline)
    ttft_ms: float | None
    tpot_ms: float | None
    ttft_ci_ms: tuple[float | None, float | None] = (None, None)
    tpot_ci_ms: tuple[float | None, float | None] = (None, None)
    inter_token_ms: float | None = None  # p50 of every gap of every request
    request_latency_ms: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    warmup_count: int = 1
    min_count: int = 5
    cpu_contention: float | None = None  # % of the machine's CPU others took while costbench measured

    @property
    def label(self) -> str:
        return self.target.label

    @property
    def folder(self) -> Path | None:
        """The model folder the case loaded (the artifact's folder: config, weights, tokenizer)."""
        path = self.target.artifact.get("path")
        return Path(path).parent if path else None


def generative_target(spec: dict[str, Any], info: dict[str, Any], metrics: list[dict[str, Any]],
                      source: str) -> GenerativeTarget:
    """A GenerativeTarget from one case record (its spec, info and metric rows, as the run file holds them)."""
    t = target_from_record(spec, info, metrics, source)
    scenario = spec.get("scenario_spec") or {}

    def value(name: str) -> float | None:
        row = _metric_row(metrics, name)
        return _f(row["value"]) if row else None

    def ci(name: str) -> tuple[float | None, float | None]:
        row = _metric_row(metrics, name)
        return (_f(row.get("ci_low")), _f(row.get("ci_high"))) if row else (None, None)

    return GenerativeTarget(
        target=t, ttft_ms=value(TTFT.p50), tpot_ms=value(TPOT.p50), ttft_ci_ms=ci(TTFT.p50),
        tpot_ci_ms=ci(TPOT.p50), inter_token_ms=value(INTER_TOKEN.p50), request_latency_ms=value(REQUEST_LATENCY.p50),
        prompt_tokens=int(scenario.get("prompt_tokens", 128)), output_tokens=int(scenario.get("output_tokens", 64)),
        warmup_count=int(scenario.get("warmup_count", 1)), min_count=int(scenario.get("min_count", 5)),
        cpu_contention=value("cpu_contention"))


@dataclass
class ObResult:
    """What optimum-benchmark reported (seconds converted to ms), and the per-request gaps rebuilt from it."""

    prefill_ms: float  # p50 of prefill latency
    decode_ms: float  # p50 of decode latency: n - 1 steps and the end of generate
    decode_per_token_ms: float  # decode_ms / (n - 1)
    generate_ms: float | None
    per_token_reported_p50_ms: float | None  # as optimum-benchmark reports it (see the module's docstring)
    per_token_reported_mean_ms: float | None
    per_token_reported_count: int
    step_gap_p50_ms: float | None  # every in-request gap, rebuilt: the same quantity as costbench's inter-token
    request_mean_gap_p50_ms: float | None  # p50 over requests of each request's mean gap: costbench's TPOT, theirs
    decode_tail_p50_ms: float | None  # p50 over requests of decode - the sum of that request's gaps
    cross_request_gap_p50_ms: float | None  # the gaps per_token wrongly holds: a request's last step -> next prefill
    requests: int
    version: str = ""
    threads: int | None = None  # torch.get_num_threads() in optimum-benchmark's process after the run
    interop_threads: int | None = None
    cpu_contention: float | None = None  # share of the machine's CPU others took over its whole run (load included)
    report: dict[str, Any] = field(default_factory=dict)


def per_request_gaps(per_token_s: Sequence[float], requests: int, new_tokens: int) -> list[list[float]]:
    """Each request's n - 1 step gaps (seconds), rebuilt from optimum-benchmark 0.6.0's ``per_token`` values.

    Its tracker keeps one list of logits-processor stamps for the whole session and, after request k, appends
    all gaps of that list (k·n - 1 of them). So the last ``requests·n - 1`` values are every consecutive gap
    of the session once: n - 1 inside request 1, the gap to request 2's first step, and so on.
    """
    n, k = new_tokens, requests
    expected = sum(j * n - 1 for j in range(1, k + 1))
    if len(per_token_s) != expected:
        raise ValueError(f"optimum-benchmark's per_token latency has {len(per_token_s)} values; {k} requests of "
                         f"{n} tokens give {expected} with its tracker (0.6.0): the tool's layout has changed")
    last = list(per_token_s[-(k * n - 1):])
    return [last[j * n: j * n + n - 1] for j in range(k)]


def cross_request_gaps(per_token_s: Sequence[float], requests: int, new_tokens: int) -> list[float]:
    """The k - 1 gaps ``per_token`` holds between one request's last step and the next one's first (seconds)."""
    n, k = new_tokens, requests
    last = list(per_token_s[-(k * n - 1):])
    return [last[j * n + n - 1] for j in range(k - 1)]


def parse_report(out: dict[str, Any], new_tokens: int) -> ObResult:
    """An :class:`ObResult` from what the child process wrote: optimum-benchmark's report and the threads seen."""
    report = out["report"]
    try:
        prefill = report["prefill"]["latency"]
        decode = report["decode"]["latency"]
        per_token = report["per_token"]["latency"]
    except (KeyError, TypeError):
        raise ValueError("optimum-benchmark's report lacks prefill, decode or per_token latency (it reports them "
                         f"for its per-token backends, PyTorch among them); it has {sorted(report)}") from None
    generate = (report.get("generate") or {}).get("latency") or {}
    k = int(decode["count"])
    ms = lambda s: None if s is None else float(s) * 1e3  # noqa: E731
    gaps = per_request_gaps(per_token["values"], k, new_tokens)
    tails = [d - sum(g) for d, g in zip(decode["values"], gaps)]
    cross = cross_request_gaps(per_token["values"], k, new_tokens)
    return ObResult(
        prefill_ms=ms(prefill["p50"]), decode_ms=ms(decode["p50"]),
        decode_per_token_ms=ms(decode["p50"]) / (new_tokens - 1), generate_ms=ms(generate.get("p50")),
        per_token_reported_p50_ms=ms(per_token["p50"]), per_token_reported_mean_ms=ms(per_token["mean"]),
        per_token_reported_count=int(per_token["count"]),
        step_gap_p50_ms=ms(float(np.median([x for g in gaps for x in g]))),
        request_mean_gap_p50_ms=ms(float(np.median([np.mean(g) for g in gaps]))),
        decode_tail_p50_ms=ms(float(np.median(tails))),
        cross_request_gap_p50_ms=ms(float(np.median(cross))) if cross else None,
        requests=k, version=str(out.get("version", "")), threads=out.get("threads"),
        interop_threads=out.get("interop_threads"), cpu_contention=out.get("cpu_contention"), report=report)


@dataclass
class GenerativePair:
    """One generate case and optimum-benchmark's measurement of the same folder with the same settings."""

    gt: GenerativeTarget
    status: str  # ok | skipped | failed
    reason: str = ""
    command: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    ob: ObResult | None = None
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repeats: list[dict[str, float | None]] = field(default_factory=list)
    interleaved: dict[str, Any] | None = None  # :func:`interleaved_breakdown`: both timings on one loaded model
    tool: str = TOOL

    @property
    def ttft_ratio(self) -> float | None:
        """costbench TTFT p50 / optimum-benchmark prefill p50 (> 1: costbench's number is larger)."""
        return _ratio(self.gt.ttft_ms, self.ob.prefill_ms if self.ob else None)

    @property
    def tpot_ratio(self) -> float | None:
        """costbench TPOT p50 / optimum-benchmark decode p50 / (n - 1)."""
        return _ratio(self.gt.tpot_ms, self.ob.decode_per_token_ms if self.ob else None)

    @property
    def step_ratio(self) -> float | None:
        """costbench TPOT p50 / optimum-benchmark's own step gaps, each request's mean, p50 over requests: the
        same quantity on both sides (so what remains is the two runs, not the two definitions)."""
        return _ratio(self.gt.tpot_ms, self.ob.request_mean_gap_p50_ms if self.ob else None)

    def verdict_of(self, ratio: float | None) -> str:
        if ratio is None:
            return self.status
        return "agrees" if abs(ratio - 1) <= AGREE_WITHIN else ("costbench slower" if ratio > 1 else "costbench faster")

    @property
    def verdict(self) -> str:
        """'agrees' when TTFT and TPOT both agree within AGREE_WITHIN; else what disagrees."""
        if self.status != "ok":
            return self.status
        parts = {"TTFT": self.verdict_of(self.ttft_ratio), "TPOT": self.verdict_of(self.tpot_ratio)}
        if all(v == "agrees" for v in parts.values()):
            return "agrees"
        return "; ".join(f"{k}: {v}" for k, v in parts.items())

    def breakdown(self) -> list[dict[str, Any]]:
        """Each compared quantity: what each tool's number includes, both values, and their ratio."""
        ob, gt = self.ob, self.gt
        if ob is None:
            return []
        n = gt.output_tokens
        tail_share = ob.decode_tail_p50_ms / (n - 1) if ob.decode_tail_p50_ms is not None else None
        return [
            {"quantity": "time to first token",
             "costbench": "TTFT p50: request start (numpy ids in) -> first token chosen and on the host (streamer)",
             "costbench_ms": gt.ttft_ms,
             "optimum_benchmark": "prefill p50: generate() called -> first logits-processor call (before the token is "
                                  "chosen)",
             "optimum_benchmark_ms": ob.prefill_ms, "ratio": self.ttft_ratio},
            {"quantity": "time per output token",
             "costbench": "TPOT p50: (last stamp - first stamp) / (n - 1): the n - 1 step gaps",
             "costbench_ms": gt.tpot_ms,
             "optimum_benchmark": f"decode p50 / (n - 1) = {_fmt(ob.decode_ms)} ms / {n - 1}: first logits-processor "
                                  "call -> generate() returns (the n - 1 steps and the end of generate)",
             "optimum_benchmark_ms": ob.decode_per_token_ms, "ratio": self.tpot_ratio},
            {"quantity": "end of generate, per token",
             "costbench": "not in TPOT",
             "costbench_ms": None,
             "optimum_benchmark": f"decode minus the request's own step gaps, p50 over requests "
                                  f"({_fmt(ob.decode_tail_p50_ms)} ms), / (n - 1)",
             "optimum_benchmark_ms": tail_share, "ratio": None},
            {"quantity": "step gaps, each request's mean (the same definition on both sides)",
             "costbench": "TPOT p50", "costbench_ms": gt.tpot_ms,
             "optimum_benchmark": "its logits-processor stamps, rebuilt per request from per_token: each request's "
                                  "mean gap, p50 over requests",
             "optimum_benchmark_ms": ob.request_mean_gap_p50_ms, "ratio": self.step_ratio},
            {"quantity": "one step gap, p50 over every gap",
             "costbench": "inter_token p50", "costbench_ms": gt.inter_token_ms,
             "optimum_benchmark": "the rebuilt in-request gaps, p50", "optimum_benchmark_ms": ob.step_gap_p50_ms,
             "ratio": _ratio(gt.inter_token_ms, ob.step_gap_p50_ms)},
            {"quantity": "per_token as optimum-benchmark reports it",
             "costbench": "-", "costbench_ms": None,
             "optimum_benchmark": f"p50 of {ob.per_token_reported_count} values "
                                  f"(mean {_fmt(ob.per_token_reported_mean_ms)}"
                                  f" ms) for {ob.requests} requests x {n - 1} gaps: earlier gaps repeated, and "
                                  f"{ob.requests - 1} gaps from a request's last step to the next one's first "
                                  f"(p50 {_fmt(ob.cross_request_gap_p50_ms)} ms) counted in",
             "optimum_benchmark_ms": ob.per_token_reported_p50_ms,
             "ratio": _ratio(gt.inter_token_ms, ob.per_token_reported_p50_ms)},
            {"quantity": "request",
             "costbench": "request latency p50: request start -> generate returns, ids on the host",
             "costbench_ms": gt.request_latency_ms,
             "optimum_benchmark": "generate latency p50: generate() called -> returns",
             "optimum_benchmark_ms": ob.generate_ms, "ratio": _ratio(gt.request_latency_ms, ob.generate_ms)},
        ]

    def to_dict(self) -> dict[str, Any]:
        gt, t = self.gt, self.gt.target
        ob = None
        if self.ob is not None:
            ob = {k: v for k, v in asdict(self.ob).items() if k != "report"}
            ob["report"] = {k: v for k, v in self.ob.report.items() if k in ("prefill", "decode", "per_token",
                                                                             "generate", "first_generate")}
        return {
            "model": t.model, "variant": t.variant, "backend": t.backend, "device": t.device, "scenario": t.scenario,
            "batch_size": t.batch_size, "source": t.source, "tool": self.tool, "status": self.status,
            "reason": self.reason,
            "costbench": {"ttft_p50_ms": gt.ttft_ms, "ttft_ci_ms": list(gt.ttft_ci_ms), "tpot_p50_ms": gt.tpot_ms,
                          "tpot_ci_ms": list(gt.tpot_ci_ms), "inter_token_p50_ms": gt.inter_token_ms,
                          "request_latency_p50_ms": gt.request_latency_ms, "cpu_contention": gt.cpu_contention},
            "optimum_benchmark": ob,
            "ratios": {"ttft_over_prefill": self.ttft_ratio, "tpot_over_decode_per_token": self.tpot_ratio,
                       "tpot_over_step_gaps": self.step_ratio},
            "verdict": self.verdict, "agree_within": AGREE_WITHIN, "breakdown": self.breakdown(),
            "command": self.command, "settings": self.settings, "mismatches": self.mismatches, "notes": self.notes,
            "repeats": self.repeats, "interleaved": self.interleaved, "folder": str(gt.folder) if gt.folder else None,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _f(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


# --- Targets from a run, or from a suite ---------------------------------------------------------------

def covers(backend_name: str | None, kind: str) -> bool:
    """Whether a case of this backend and scenario kind is cross-checked against optimum-benchmark."""
    return backend_name == BACKEND and kind in KINDS


def targets_from_selection(sel: Any, run_ids: Sequence[str]) -> tuple[list[GenerativeTarget], list[GenerativePair]]:
    """GenerativeTargets for every transformers ``generate`` case of ``run_ids``; skipped pairs for those not
    measured (``sel``: a :class:`costbench.harness.reports.data.Selection`)."""
    targets, skipped = [], []
    for run_id in run_ids:
        cases = sel.cases[sel.cases.run_id == run_id]
        rows = sel.results[sel.results.run_id == run_id]
        for case in cases.itertuples(index=False):
            spec = case.spec or {}
            if not covers(spec.get("backend_name") or spec.get("backend"), scenario_kind_of(spec)):
                continue
            mine = rows[rows.case_id == case.case_id]
            metrics = [{"metric": r.metric, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
                       for r in mine.itertuples(index=False)]
            gt = generative_target(spec, case.info or {}, metrics, f"run {run_id}")
            if case.status != "ok":
                if spec.get("artifact_format") is None and _never_runs_reason(spec.get("reason") or ""):
                    continue
                skipped.append(GenerativePair(gt, "skipped", f"the case was {case.status} in run {run_id}: nothing "
                                                             "to compare"))
            else:
                targets.append(gt)
    return targets, skipped


def cases_from_suite(path: Path, only: list[dict[str, str]] | None = None) -> tuple[list[Any], list[Any], int]:
    """(planned transformers generate cases, those the plan skipped for a fixable reason, how many combinations
    can never run) of a suite file."""
    from costbench.harness.execute.load import load_suite
    from costbench.harness.execute.plan import PLANNED, make_plan

    cases = [c for c in make_plan(load_suite(path), only) if covers(c.backend_name, c.scenario_kind)]
    never = [c for c in cases if c.status != PLANNED and _never_runs(c)]
    return ([c for c in cases if c.status == PLANNED],
            [c for c in cases if c.status != PLANNED and c not in never], len(never))


def measure_case(case_dict: dict[str, Any], cache_dir: Path, workdir: Path) -> tuple[GenerativeTarget | None, str]:
    """costbench's measurement of one case afresh, through the runner (see :func:`vendor.measure_case`)."""
    outcome, why = measure_outcome(case_dict, cache_dir, workdir)
    if outcome is None:
        return None, why
    return generative_target(outcome.case.to_dict(), outcome.info, outcome.metrics, "measured now"), ""


# --- optimum-benchmark's settings and its process --------------------------------------------------------

def unusable(gt: GenerativeTarget) -> str | None:
    """Why optimum-benchmark cannot measure this case's folder, or None."""
    folder = gt.folder
    if folder is None:
        return "the case records no artifact path (info.artifact.path)"
    if not folder.is_dir():
        return (f"its model folder {folder} is not on this machine (another machine's cache, or pruned since): "
                "pass --fresh to rebuild it and measure costbench again here, or cross-check the suite file")
    if (folder / QUANTIZED_WEIGHTS).exists():
        return (f"the artifact is weight-only quantized by costbench's torchao recipe ({QUANTIZED_WEIGHTS}, a "
                "torch.save of torchao tensors); optimum-benchmark's PyTorch backend loads a folder with "
                "from_pretrained, which does not read that file: only fp32/bf16/fp16 folders are cross-checked")
    if gt.target.device != "cpu":
        return f"device {gt.target.device}: this cross-check runs optimum-benchmark on the CPU only"
    if gt.output_tokens < 2:
        return "output_tokens < 2: no decode to compare"
    return None


def ob_settings(gt: GenerativeTarget, time_s: float) -> dict[str, Any]:
    """optimum-benchmark's backend and scenario settings for ``gt`` (plain data, for the child process)."""
    opts = gt.target.backend_options
    folder = gt.folder
    config = json.loads((folder / "config.json").read_text())
    backend: dict[str, Any] = {
        "model": str(folder), "device": "cpu", "library": "transformers", "task": "text-generation",
        "model_type": config.get("model_type"), "no_weights": False, "torch_dtype": opts.get("dtype", "float32"),
        "cache_implementation": "static" if opts.get("cache", "static") == "static" else None,
    }
    if opts.get("threads") is not None:
        backend["inter_op_num_threads"] = int(opts["threads"])  # torch.set_num_threads in 0.6.0 (names swapped)
    if opts.get("compile"):
        backend.update(torch_compile=True, torch_compile_target="forward", torch_compile_config={"fullgraph": True})
    n = gt.output_tokens
    scenario = {
        "input_shapes": {"batch_size": gt.target.batch_size, "sequence_length": gt.prompt_tokens},
        "generate_kwargs": {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": 1},
        "iterations": gt.min_count, "duration": max(0, math.ceil(time_s)), "warmup_runs": gt.warmup_count,
        "latency": True, "memory": False, "energy": False,
    }
    return {"backend": backend, "scenario": scenario, "threads": opts.get("threads"), "new_tokens": n}


Runner = Callable[[list[str], Path, dict[str, str]], tuple[int, str]]


def _run_process(argv: list[str], workdir: Path, env: dict[str, str], timeout_s: float = 1800.0) -> tuple[int, str]:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s, cwd=workdir, env=env)
    (workdir / "tool.log").write_text(proc.stdout)
    return proc.returncode, proc.stdout


def crosscheck_target(gt: GenerativeTarget, workdir: Path, time_s: float = DEFAULT_TIME_S,
                      run: Runner | None = None) -> GenerativePair:
    """Run optimum-benchmark once on ``gt``'s folder; a pair with both tools' numbers, or skipped/failed with why."""
    why = probe() or unusable(gt)
    if why:
        return GenerativePair(gt, "skipped", why)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = ob_settings(gt, time_s)
    spec, out = workdir / "optimum_benchmark_spec.json", workdir / "optimum_benchmark_report.json"
    spec.write_text(json.dumps(settings, indent=2))
    argv = [sys.executable, "-m", "costbench.harness.crosscheck.optimum_benchmark", str(spec), str(out)]
    env = {**os.environ, **OFFLINE_ENV}
    rc, log = (run or _run_process)(argv, workdir, env)
    pair = GenerativePair(gt, "ok", command=argv, settings=settings)
    if rc != 0:
        pair.status, pair.reason = "failed", f"optimum-benchmark exited with {rc}: {_tail_text(log)}"
        return pair
    if not out.exists():
        pair.status = "failed"
        pair.reason = f"optimum-benchmark wrote no report ({out}); its log ends: {_tail_text(log)}"
        return pair
    try:
        pair.ob = parse_report(json.loads(out.read_text()), gt.output_tokens)
    except (KeyError, ValueError, TypeError) as exc:
        pair.status, pair.reason = "failed", str(exc)
        return pair
    threads = gt.target.backend_options.get("threads")
    if threads is not None and pair.ob.threads != threads:
        pair.mismatches.append(f"threads: costbench {threads}, optimum-benchmark's process {pair.ob.threads}")
    session = gt.target.session
    if session.get("threads") is not None and threads is None and session["threads"] != pair.ob.threads:
        pair.mismatches.append(f"threads: costbench {session['threads']}, optimum-benchmark's process "
                               f"{pair.ob.threads}")
    if pair.ob.version and pair.ob.version != TESTED_VERSION:
        pair.notes.append(f"optimum-benchmark {pair.ob.version}: this cross-check reads the layout of "
                          f"{TESTED_VERSION}'s report")
    return pair


def crosscheck(targets: Sequence[GenerativeTarget], workdir: Path, time_s: float = DEFAULT_TIME_S, fresh: bool = False,
               repeat: int = 1, cache_dir: Path | None = None, here_env_id: str | None = None,
               run_env_ids: dict[str, str] | None = None,
               on_start: Callable[[GenerativeTarget], None] | None = None,
               breakdown_rounds: int | None = None) -> list[GenerativePair]:
    """Each target against optimum-benchmark. ``fresh``: measure costbench again here before each tool run;
    ``repeat`` > 1 alternates (costbench, optimum-benchmark) that many times and keeps the median of each side;
    ``breakdown_rounds``: then time both on one loaded model, interleaved (:func:`interleaved_breakdown`)."""
    from costbench.core.artifacts import default_cache_dir

    cache_dir = cache_dir or default_cache_dir()
    pairs = []
    why_not = probe()
    for n, target in enumerate(targets):
        if on_start:
            on_start(target)
        if why_not:  # before measuring costbench afresh: without the tool there is nothing to pair it with
            pairs.append(GenerativePair(target, "skipped", why_not))
            continue
        remeasure = ((lambda sub, case=target.target.case: measure_case(case, cache_dir, sub))
                     if fresh and target.target.case is not None else None)
        runs = alternate_runs(target, repeat, lambda k, n=n: workdir / f"ob-{n:03d}-{k}", remeasure,
                              lambda gt, sub: crosscheck_target(gt, sub, time_s),
                              lambda why, target=target: GenerativePair(target, "failed", why))
        pair = combine(runs)
        if breakdown_rounds and pair.status == "ok":
            try:
                pair.interleaved = interleaved_breakdown(pair.gt, workdir / f"ob-{n:03d}-interleaved", breakdown_rounds)
            except RuntimeError as exc:
                pair.notes.append(f"the interleaved breakdown failed: {exc}")
        note = elsewhere_note(target.target.source, here_env_id, run_env_ids, fresh, "costbench's numbers are",
                              "optimum-benchmark")
        if note:
            pair.notes.append(note)
        pairs.append(pair)
    return pairs


def combine(runs: list[GenerativePair]) -> GenerativePair:
    """One pair from repeats: the median of each side's numbers over the repeats, each repeat kept."""
    ok = all_ok(runs)
    if ok is None:
        return first_failed_or_last(runs)
    first = ok[0]
    med = median_of

    gts = [p.gt for p in ok]
    gt = GenerativeTarget(**{**{f: getattr(first.gt, f) for f in first.gt.__dataclass_fields__},
                             "ttft_ms": med([g.ttft_ms for g in gts]), "tpot_ms": med([g.tpot_ms for g in gts]),
                             "inter_token_ms": med([g.inter_token_ms for g in gts]),
                             "request_latency_ms": med([g.request_latency_ms for g in gts]),
                             "cpu_contention": med([g.cpu_contention for g in gts]),
                             "ttft_ci_ms": (None, None), "tpot_ci_ms": (None, None)})
    obs = [p.ob for p in ok]
    numeric = [f for f in ObResult.__dataclass_fields__ if f not in ("report", "version", "threads", "interop_threads",
                                                                     "per_token_reported_count", "requests")]
    # cpu_contention is numeric too: its median over the repeats, like costbench's
    ob = ObResult(**{**{f: getattr(obs[0], f) for f in ObResult.__dataclass_fields__},
                     **{f: med([getattr(o, f) for o in obs]) for f in numeric}})
    repeats = [{"costbench_ttft_ms": p.gt.ttft_ms, "costbench_tpot_ms": p.gt.tpot_ms,
                "ob_prefill_ms": p.ob.prefill_ms, "ob_decode_per_token_ms": p.ob.decode_per_token_ms,
                "ob_request_mean_gap_ms": p.ob.request_mean_gap_p50_ms, "ttft_ratio": p.ttft_ratio,
                "tpot_ratio": p.tpot_ratio, "costbench_cpu_contention": p.gt.cpu_contention,
                "ob_cpu_contention": p.ob.cpu_contention} for p in ok]
    return GenerativePair(gt, "ok", command=first.command, settings=first.settings, ob=ob,
                          interleaved=first.interleaved,
                          mismatches=sorted({m for p in ok for m in p.mismatches}),
                          notes=sorted({m for p in ok for m in p.notes}), repeats=repeats)


# --- Output -----------------------------------------------------------------------------------------------

COLUMNS = ("case", "scenario", "costbench TTFT", "ob prefill", "ratio TTFT", "costbench TPOT", "ob decode/token",
           "ratio TPOT", "verdict", "settings")


def table_rows(pairs: Sequence[GenerativePair]) -> list[dict[str, str]]:
    """One display row per pair (the rich table and the Markdown share them)."""
    rows = []
    for p in pairs:
        t, gt, ob = p.gt.target, p.gt, p.ob
        s = p.settings.get("backend", {}) if p.settings else {}
        settings = (f"threads={p.settings.get('threads')} cache={s.get('cache_implementation') or 'dynamic'} "
                    f"dtype={s.get('torch_dtype')} prompt={gt.prompt_tokens} new={gt.output_tokens} "
                    f"requests={ob.requests if ob else '-'}") if p.settings else ""
        rows.append({
            "case": f"{t.model} / {t.variant}", "scenario": f"{t.scenario} b{t.batch_size}",
            "costbench TTFT": _ms(gt.ttft_ms), "ob prefill": _ms(ob.prefill_ms if ob else None),
            "ratio TTFT": _r(p.ttft_ratio), "costbench TPOT": _ms(gt.tpot_ms),
            "ob decode/token": _ms(ob.decode_per_token_ms if ob else None), "ratio TPOT": _r(p.tpot_ratio),
            "verdict": p.verdict if p.status == "ok" else f"{p.status}: {p.reason}",
            "settings": settings + ("; differs: " + "; ".join(p.mismatches) if p.mismatches else ""),
        })
    return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def to_markdown(pairs: Sequence[GenerativePair]) -> str:
    """The pairs and each one's breakdown as Markdown (a section of the crosscheck page)."""
    lines = ["## costbench vs optimum-benchmark (generate)", "",
             "ratio = costbench / optimum-benchmark: TTFT p50 / prefill p50, TPOT p50 / (decode p50 / (n - 1)); "
             f"'agrees' within {AGREE_WITHIN:.0%}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table_rows(pairs):
        lines.append("| " + " | ".join(r[c].replace("|", "\\|") for c in COLUMNS) + " |")
    for p in pairs:
        for note in p.notes:
            lines.append(f"\nNote: {p.gt.label}: {note}")
        rows = p.breakdown()
        if not rows:
            continue
        lines += ["", f"What each number includes, {p.gt.label}:", "",
                  "| quantity | costbench | ms | optimum-benchmark | ms | ratio |", "|---|---|---|---|---|---|"]
        for b in rows:
            lines.append(f"| {b['quantity']} | {b['costbench']} | {_fmt(b['costbench_ms'])} | "
                         f"{b['optimum_benchmark']} | {_fmt(b['optimum_benchmark_ms'])} | {_r(b['ratio'])} |")
        if p.repeats:
            lines += ["", "Repeats (costbench, then optimum-benchmark, alternated; ms; 'others' = the share of the "
                      "machine's CPU other processes took, costbench over its measured requests, optimum-benchmark "
                      "over its whole run):", "",
                      "| # | costbench TTFT | ob prefill | costbench TPOT | ob decode/token | ob step gaps | "
                      "ratio TTFT | ratio TPOT | others, costbench | others, ob |", "|---" * 10 + "|"]
            for i, r in enumerate(p.repeats):
                lines.append(f"| {i + 1} | {_fmt(r['costbench_ttft_ms'])} | {_fmt(r['ob_prefill_ms'])} | "
                             f"{_fmt(r['costbench_tpot_ms'])} | {_fmt(r['ob_decode_per_token_ms'])} | "
                             f"{_fmt(r['ob_request_mean_gap_ms'])} | {_r(r['ttft_ratio'])} | {_r(r['tpot_ratio'])} | "
                             f"{_pct(r.get('costbench_cpu_contention'))} | {_pct(r.get('ob_cpu_contention'))} |")
    for p in pairs:
        if p.interleaved:
            lines += ["", *interleaved_markdown(p.gt.label, p.interleaved)]
    cmds = [f"- {p.gt.label}: `{shlex.join(p.command)}` with `{p.command[-2]}`:\n\n```json\n"
            f"{json.dumps(p.settings, indent=2)}\n```" for p in pairs if p.command]
    if cmds:
        lines += ["", "optimum-benchmark's runs (offline: HF_HUB_OFFLINE=1):", "", *cmds]
    return "\n".join(lines) + "\n"


# --- Both timings on one loaded model, interleaved --------------------------------------------------------

INTERLEAVED_ROWS = (
    ("ttft_ms", "prefill_ms", "time to first token: costbench TTFT vs optimum-benchmark prefill"),
    ("tpot_ms", "decode_per_token_ms", "time per output token: costbench TPOT vs optimum-benchmark decode / (n - 1)"),
    ("tpot_ms", "mean_gap_ms", "step gaps, the request's mean: costbench TPOT vs optimum-benchmark's own stamps"),
    ("request_ms", "generate_ms", "request: costbench request latency vs optimum-benchmark generate"),
)


def interleaved_breakdown(gt: GenerativeTarget, workdir: Path, rounds: int = 10,
                          run: Runner | None = None) -> dict[str, Any]:
    """Both tools' timing of the same request on ONE model loaded by optimum-benchmark's PyTorch backend, in one
    process, alternated request by request (the order swapped every round): costbench's stamped
    ``TransformersSession.generate`` and optimum-benchmark's ``generate`` with its per-token logits processor,
    on the same prompt (optimum-benchmark's generated ids). Load, thread placement and memory layout fall on
    both alike, so what remains between the medians is what each tool's region includes."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec, out = workdir / "interleaved_spec.json", workdir / "interleaved.json"
    spec.write_text(json.dumps({**ob_settings(gt, 0), "interleave_rounds": rounds}, indent=2))
    argv = [sys.executable, "-m", "costbench.harness.crosscheck.optimum_benchmark", str(spec), str(out)]
    rc, log = (run or _run_process)(argv, workdir, {**os.environ, **OFFLINE_ENV})
    if rc != 0 or not out.exists():
        raise RuntimeError(f"the interleaved breakdown exited with {rc}: {_tail_text(log)}")
    data = json.loads(out.read_text())
    cb, o = data["costbench"], data["optimum_benchmark"]
    rows = []
    for ours, theirs, what in INTERLEAVED_ROWS:
        a, b = float(np.median(cb[ours])), float(np.median(o[theirs]))
        rows.append({"what": what, "costbench_ms": a, "optimum_benchmark_ms": b, "difference_ms": a - b,
                     "ratio": _ratio(a, b)})
    return {"rounds": rounds, "requests_per_side": len(cb["ttft_ms"]), "threads": data.get("threads"),
            "cpu_contention": data.get("cpu_contention"), "rows": rows, "samples": data}


def interleaved_markdown(label: str, bd: dict[str, Any]) -> list[str]:
    lines = [f"Both tools on one loaded model, {label} ({bd['rounds']} rounds, one request per tool each, order "
             f"swapped every round; medians; others took {_pct(bd.get('cpu_contention'))} of the CPU meanwhile):", "",
             "| compared | costbench ms | optimum-benchmark ms | difference ms | ratio |", "|---|---|---|---|---|"]
    for r in bd["rows"]:
        lines.append(f"| {r['what']} | {_fmt(r['costbench_ms'])} | {_fmt(r['optimum_benchmark_ms'])} | "
                     f"{r['difference_ms']:+.3f} | {_r(r['ratio'])} |")
    return lines


def _interleave(settings: dict[str, Any], rounds: int) -> dict[str, Any]:
    """The child side of :func:`interleaved_breakdown`."""
    _alias_special_tokens_mixin()
    import time

    import torch
    from optimum_benchmark.backends.pytorch.backend import PyTorchBackend
    from optimum_benchmark.backends.pytorch.config import PyTorchConfig
    from optimum_benchmark.generators.input_generator import InputGenerator
    from optimum_benchmark.scenarios.inference.scenario import TEXT_GENERATION_DEFAULT_KWARGS
    from optimum_benchmark.trackers.latency import PerTokenLatencySessionTrackerLogitsProcessor
    from transformers import LogitsProcessorList

    from costbench.backends.transformers_backend import TransformersOptions, TransformersSession
    from costbench.harness.machine import contention

    backend = PyTorchBackend(PyTorchConfig(**settings["backend"]))
    backend.load()
    scenario = settings["scenario"]
    inputs = backend.prepare_inputs(InputGenerator(task=backend.config.task, model_shapes=backend.model_shapes,
                                                   model_type=backend.config.model_type,
                                                   input_shapes=scenario["input_shapes"])())
    tracker = PerTokenLatencySessionTrackerLogitsProcessor(device="cpu", backend="pytorch")
    kwargs = {**TEXT_GENERATION_DEFAULT_KWARGS, **scenario["generate_kwargs"],
              "logits_processor": LogitsProcessorList([tracker])}
    n = int(settings["new_tokens"])
    cache = "static" if settings["backend"].get("cache_implementation") == "static" else "dynamic"
    session = TransformersSession(backend.pretrained_model, "cpu",
                                  TransformersOptions(threads=settings.get("threads"), cache=cache), None)
    prompt = inputs["input_ids"].cpu().numpy()
    clock = time.perf_counter_ns
    cb: dict[str, list[float]] = {"ttft_ms": [], "tpot_ms": [], "request_ms": []}
    theirs: dict[str, list[float]] = {"prefill_ms": [], "decode_per_token_ms": [], "mean_gap_ms": [],
                                      "generate_ms": []}

    def ours(record: bool) -> None:
        stamps: list[int] = []
        t0 = clock()
        session.generate(prompt, n, lambda: stamps.append(clock()))
        end = clock()
        if record:
            cb["ttft_ms"].append((stamps[0] - t0) / 1e6)
            cb["tpot_ms"].append((stamps[-1] - stamps[0]) / (n - 1) / 1e6)
            cb["request_ms"].append((end - t0) / 1e6)

    def tool(record: bool) -> None:
        with tracker.session():
            with tracker.track():
                backend.generate(inputs, kwargs)
            if record:
                theirs["prefill_ms"].append(tracker.get_prefill_latency().values[0] * 1e3)
                decode = tracker.get_decode_latency().values[0]
                theirs["decode_per_token_ms"].append(decode / (n - 1) * 1e3)
                theirs["mean_gap_ms"].append(float(np.mean(tracker.get_per_token_latency().values)) * 1e3)
                theirs["generate_ms"].append(tracker.get_generate_latency().values[0] * 1e3)

    for _ in range(2):  # warm-up, untimed: both paths, as each tool warms up its own
        ours(False)
        tool(False)
    before = contention.read()
    for r in range(rounds):
        for step in ((ours, tool) if r % 2 == 0 else (tool, ours)):
            step(True)
    taken = contention.between(before, contention.read())
    return {"costbench": cb, "optimum_benchmark": theirs, "threads": torch.get_num_threads(),
            "cpu_contention": taken.share if taken else None}


# --- The child process: optimum-benchmark itself -------------------------------------------------------

def _alias_special_tokens_mixin() -> None:
    """optimum-benchmark 0.6.0 imports ``transformers.SpecialTokensMixin``, which Transformers 5 folded into
    ``PreTrainedTokenizerBase`` (optimum-benchmark's own fix, huggingface/optimum-benchmark#338, aliases it the
    same way). The name is only used in a type annotation there. ``transformers.trainer`` is imported first
    because importing it replaces the lazy ``transformers`` module in ``sys.modules``."""
    import transformers
    import transformers.trainer  # noqa: F401

    module = sys.modules["transformers"]
    if "SpecialTokensMixin" not in vars(module):
        module.SpecialTokensMixin = transformers.PreTrainedTokenizerBase


def run_optimum_benchmark(settings: dict[str, Any]) -> dict[str, Any]:
    """optimum-benchmark's inference scenario on its PyTorch backend, inline in this process; its report as a dict."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    _alias_special_tokens_mixin()
    import optimum_benchmark.backends.pytorch.backend  # noqa: F401 (after the alias)
    import torch
    from optimum_benchmark import Benchmark, BenchmarkConfig, InferenceConfig, InlineConfig, PyTorchConfig

    from costbench.harness.machine import contention

    config = BenchmarkConfig(name="costbench-crosscheck", launcher=InlineConfig(),
                             scenario=InferenceConfig(**settings["scenario"]),
                             backend=PyTorchConfig(**settings["backend"]), log_report=False)
    before = contention.read()
    report = Benchmark.launch(config)
    taken = contention.between(before, contention.read())
    return {"report": report.to_dict(), "version": installed_version(), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cpu_contention": taken.share if taken else None}


def main(argv: list[str] | None = None) -> int:
    """``python -m costbench.harness.crosscheck.optimum_benchmark SPEC.json OUT.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m costbench.harness.crosscheck.optimum_benchmark SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec, out = Path(args[0]), Path(args[1])
    settings = json.loads(spec.read_text())
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if "interleave_rounds" in settings:
        result = _interleave(settings, int(settings["interleave_rounds"]))
    else:
        result = run_optimum_benchmark(settings)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=float))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
