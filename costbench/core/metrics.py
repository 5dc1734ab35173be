"""The metric catalogue: every metric's name, unit, kind and which way is better, in one place.

A result row names its metric by a string; this module is the one place those strings are spelled.
Three kinds of entry:

- :class:`Metric`: one scalar (``throughput``, ``model_size``, ``top1_agreement``...).
- :class:`Series`: a per-query timing series. The worker reports each as ``<series>_p50``, ``_p90``,
  ``_p99``, ``_mean`` and ``_cv`` (:data:`Series.STATS`); a case measured in several processes adds
  ``<series>_process_share`` and ``_process_spread``. ``LATENCY.p50`` spells ``"latency_p50"``.
- :class:`ScenarioMetrics`: which series a scenario kind reports as its primary one, and which metric
  a report leads with for it (single-stream: latency; offline: throughput; server: capacity).

Reports, ``compare``, the run table and the dashboard read direction, unit and headline from here.
A plugin package adds entries through the ``costbench.metrics`` entry-point group (or
``COSTBENCH_EXTRA_METRICS`` during development): each target names a module attribute holding an
entry or a list of entries (``name = "package.module:METRICS"``). Imports nothing of ours but
:mod:`.plugins`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Iterable, Literal, Union

from costbench.core.plugins import PluginGroup

METRICS_GROUP = PluginGroup("costbench.metrics", "COSTBENCH_EXTRA_METRICS", "metric set")

KINDS = ("latency", "throughput", "capacity", "time", "accuracy", "parity", "perplexity", "size", "memory", "count",
         "flag", "setting", "spread", "energy", "cost")
Better = Literal["lower", "higher", None]


@dataclass(frozen=True)
class Metric:
    """One metric a result row may carry."""

    name: str
    unit: str
    kind: str  # one of KINDS
    better: Better  # "lower", "higher", or None where neither is (a setting, a count)
    description: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.better not in ("lower", "higher", None):
            raise ValueError(f"metric {self.name!r}: better must be 'lower', 'higher' or None, got {self.better!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"


@dataclass(frozen=True)
class Series:
    """A per-query timing series in milliseconds, reported through its percentiles, mean and cv."""

    name: str
    description: str  # what one sample is
    kind: str = "latency"

    STATS = ("p50", "p90", "p99", "mean", "cv")
    PROCESS_STATS = ("process_share", "process_spread")  # added across processes (costbench.harness.results.replicates)

    @property
    def p50(self) -> str:
        return f"{self.name}_p50"

    @property
    def p99(self) -> str:
        return f"{self.name}_p99"

    @property
    def process_share(self) -> str:
        return f"{self.name}_process_share"

    @property
    def process_spread(self) -> str:
        return f"{self.name}_process_spread"

    def stat(self, stat: str) -> str:
        if stat not in self.STATS + self.PROCESS_STATS:
            raise KeyError(f"series {self.name!r} has no statistic {stat!r}; it has {', '.join(self.STATS)}")
        return f"{self.name}_{stat}"

    def metrics(self) -> list[Metric]:
        """The metrics this series is reported as."""
        out = [Metric(self.stat(s), "ms", self.kind, "lower", f"{s} of: {self.description}") for s in self.STATS[:4]]
        out.append(Metric(self.stat("cv"), "ratio", "spread", "lower", f"coefficient of variation of: {self.description}"))
        out.append(Metric(self.process_share, "ratio", "spread", "lower",
                          f"share of the variance of {self.name} between processes (not within one)"))
        out.append(Metric(self.process_spread, "ratio", "spread", "lower",
                          f"standard deviation of the log per-process medians of {self.name}"))
        return out


@dataclass(frozen=True)
class ScenarioMetrics:
    """What a scenario kind reports: its primary series and the metric a report leads with."""

    scenario: str  # the scenario's kind, as registered in costbench.scenarios
    primary: str  # name of the Series its samples form
    headline: str  # metric name a report leads with for this scenario
    meaning: str = ""  # what one primary sample is, where it differs from the series' own description


Entry = Union[Metric, Series, ScenarioMetrics]


# The built-in scenario kinds (harness/measure/scenarios/), for reports that treat them apart.
SINGLE_STREAM, OFFLINE, SERVER = "single_stream", "offline", "server"
GENERATE, GENERATE_OFFLINE = "generate", "generate_offline"  # generative models, token by token
GENERATE_SERVER = "generate_server"  # generation requests at a rate, one slot, an SLO on TTFT and TPOT

LATENCY = Series("latency", "service time of one query")
BATCH_LATENCY = Series("batch_latency", "service time of one batch (per worker thread)")
DEVICE_LATENCY = Series("device_latency", "device time of one query (device clock)")
QUEUE_WAIT = Series("queue_wait", "time from scheduled arrival to start of service")
SCHEDULER_LATENESS = Series("scheduler_lateness",
                            "start of service minus the earliest moment it could start (scheduler error)")
SERVICE_TIME = Series("service_time",
                      "service time of one batch of queries (one query without dynamic batching), start to end")
# Generative scenarios: one sample per request (a batch of prompts generated together in generate_offline).
TTFT = Series("ttft", "time to first token: request start to the first generated token (the prefill, whose logits "
                      "give it)")
TPOT = Series("tpot", "time per output token after the first: (end - first token) / (output tokens - 1)")
INTER_TOKEN = Series("inter_token", "time between two consecutive generated tokens (every gap of every request)")
REQUEST_LATENCY = Series("request_latency", "request start to the end of generation (every token on the host)")

THROUGHPUT = "throughput"
CAPACITY_QPS = "capacity_qps"
MODEL_SIZE = "model_size"
PEAK_RSS = "peak_rss"
UNSTABLE = "unstable"
PRECISION_TARGET = "precision_target"
CPU_CONTENTION = "cpu_contention"
CONTENDED_PROCESSES = "contended_processes"
TASK_ACCURACY = "task_accuracy"
TASK_ACCURACY_DELTA = "task_accuracy_delta"
TOP1_AGREEMENT = "top1_agreement"
TOP1_AGREEMENT_CONFIDENT = "top1_agreement_confident"
COSINE_MIN = "cosine_similarity_min"
COSINE_MEAN = "cosine_similarity_mean"
SLO_LATENCY = "slo_latency"
TARGET_QPS = "target_qps"
LOAD_TIME = "load_time"
FIRST_INFERENCE = "first_inference"
POWER = "power_w"
OUTPUT_TOKEN_THROUGHPUT = "output_token_throughput"
GREEDY_PREFIX_AGREEMENT = "greedy_prefix_agreement"
MEMORY_BANDWIDTH = "memory_bandwidth"
DECODE_WEIGHT_BYTES = "decode_weight_bytes"
TPOT_MEMORY_BOUND = "tpot_memory_bound"
TPOT_BOUND_RATIO = "tpot_bound_ratio"
PERPLEXITY = "perplexity"
PERPLEXITY_FP32 = "perplexity_fp32"
PERPLEXITY_DELTA = "perplexity_delta"

_SCALARS = [
    Metric(THROUGHPUT, "samples/s", "throughput", "higher", "samples per second over the scenario's wall time"),
    Metric("queries", "count", "count", None, "queries measured"),
    Metric("duration", "s", "time", None, "wall time of the measurement"),
    Metric("concurrency", "count", "setting", None, "queries in flight at once"),
    Metric(MODEL_SIZE, "bytes", "size", "lower", "the artifact's bytes on disk"),
    Metric("build_time", "s", "time", "lower", "time to build the artifact (recipe)"),
    Metric("backend_build_time", "s", "time", "lower", "time the backend spent compiling for this machine"),
    Metric(LOAD_TIME, "ms", "time", "lower", "time to load the artifact into a session"),
    Metric(FIRST_INFERENCE, "ms", "time", "lower", "the first query after loading"),
    Metric(PEAK_RSS, "MiB", "memory", "lower", "peak resident memory of load and inference"),
    Metric("process_peak_rss", "MiB", "memory", "lower", "peak resident memory of the whole measuring process"),
    Metric("peak_device_memory", "MiB", "memory", "lower", "peak device memory of the session"),
    Metric("gpu_throttled", "bool", "flag", "lower", "a GPU slowed down (thermal, power) during the case"),
    Metric(POWER, "W", "energy", "lower", "GPU board power"),
    Metric(UNSTABLE, "bool", "flag", "lower", "the case's processes disagreed far beyond its history"),
    Metric(CPU_CONTENTION, "ratio", "flag", "lower",
           "share of the machine's CPU that other processes and the hypervisor took while the process measured"),
    Metric(CONTENDED_PROCESSES, "count", "count", "lower",
           "processes of the case measured under contention, left out of its result and measured again"),
    Metric(PRECISION_TARGET, "ratio", "setting", None,
           "relative half-width of the 95% interval across processes the run asked of the case's headline"),
    # server scenario
    Metric(TARGET_QPS, "queries/s", "setting", None, "arrival rate asked for"),
    Metric("achieved_qps", "queries/s", "throughput", "higher", "arrival rate achieved"),
    Metric(SLO_LATENCY, "ms", "latency", "lower", "the SLO percentile of latency from arrival"),
    Metric("slo_latency_ci_low", "ms", "latency", "lower", "lower end of the SLO percentile's interval"),
    Metric("slo_latency_ci_high", "ms", "latency", "lower", "upper end of the SLO percentile's interval"),
    Metric("slo_met", "bool", "flag", "higher", "the SLO percentile met the SLO"),
    Metric("max_qps_within_slo", "queries/s", "capacity", "higher",
           "highest rate tried whose SLO percentile interval lies within the SLO (shown to meet)"),
    Metric(CAPACITY_QPS, "queries/s", "capacity", "higher",
           "estimated capacity: where the SLO percentile crosses the SLO, interpolated between the rates tried"),
    Metric("capacity_ci_low", "queries/s", "capacity", "higher", "lower end of the capacity's interval"),
    Metric("capacity_ci_high", "queries/s", "capacity", "higher", "upper end of the capacity's interval"),
    Metric("capacity_model_qps", "queries/s", "capacity", "higher",
           "capacity the queue model gives from the probed service times alone (the search's starting point)"),
    Metric("generator_ceiling_qps", "queries/s", "capacity", "higher",
           "queries/s the load generator and batcher move with a session that does nothing (the harness's ceiling)"),
    Metric("mean_batch_size", "queries", "setting", None, "queries per dynamic batch, on average"),
    Metric("slo_ratio", "ratio", "latency", "lower",
           "generate_server: the SLO percentile of each request's max(TTFT / TTFT SLO, TPOT / TPOT SLO); <= 1 meets"),
    Metric("capacity_output_tokens", "tokens/s", "capacity", "higher",
           "generate_server: the capacity estimate times the mean output length"),
    # generative scenarios
    Metric(OUTPUT_TOKEN_THROUGHPUT, "tokens/s", "throughput", "higher",
           "generated tokens per second over the scenario's wall time (every sequence of a batch counted)"),
    Metric("input_token_throughput", "tokens/s", "throughput", "higher",
           "prompt tokens per second over the scenario's wall time"),
    Metric("prompt_tokens", "tokens", "setting", None, "prompt length of each request"),
    Metric("output_tokens", "tokens", "setting", None, "tokens generated per request (end-of-sequence ignored)"),
    Metric(MEMORY_BANDWIDTH, "GB/s", "throughput", "higher",
           "memory read bandwidth measured just before the scenario (best pass over a buffer past the caches)"),
    Metric(DECODE_WEIGHT_BYTES, "bytes", "size", "lower",
           "weight bytes one decoding step reads (every weight but the embedding table)"),
    Metric(TPOT_MEMORY_BOUND, "ms", "time", None,
           "floor under the time per output token: decode weight bytes / measured memory bandwidth"),
    Metric(TPOT_BOUND_RATIO, "ratio", "time", "lower",
           "measured TPOT p50 over its memory-bound floor (1.0 would read the weights at full bandwidth)"),
    # accuracy and parity (costbench.harness.build.accuracy)
    Metric(TASK_ACCURACY, "ratio", "accuracy", "higher", "share of labelled samples right"),
    Metric(TASK_ACCURACY_DELTA, "ratio", "accuracy", "higher", "task accuracy minus fp32's, paired"),
    Metric("accuracy_retained", "ratio", "accuracy", "higher", "the variant's accuracy over fp32's"),
    Metric(TOP1_AGREEMENT, "ratio", "parity", "higher", "share of samples whose top-1 matches fp32's"),
    Metric(TOP1_AGREEMENT_CONFIDENT, "ratio", "parity", "higher", "top-1 agreement where fp32 is confident"),
    Metric("top5_retention", "ratio", "parity", "higher", "share of fp32's top-5 kept"),
    Metric("neighbour_top5_overlap", "ratio", "parity", "higher", "overlap of each embedding's 5 nearest neighbours"),
    Metric(COSINE_MEAN, "ratio", "parity", "higher", "mean cosine similarity to fp32's outputs"),
    Metric(COSINE_MIN, "ratio", "parity", "higher", "lowest cosine similarity to fp32's outputs"),
    Metric("max_abs_error", "abs", "parity", "lower", "largest absolute difference to fp32's outputs"),
    Metric("kl_divergence_mean", "nats", "parity", "lower", "mean KL divergence from fp32's output distribution"),
    Metric(GREEDY_PREFIX_AGREEMENT, "ratio", "parity", "higher",
           "share of fp32's greedy continuation reproduced before the first differing token, averaged over prompts"),
    # perplexity on the user's own text, for a causal LM with real weights (costbench.harness.build.perplexity)
    Metric(PERPLEXITY, "ppl", "perplexity", "lower",
           "exp(mean negative log-likelihood of each next token) of the user's text (model key perplexity_text)"),
    Metric(PERPLEXITY_FP32, "ppl", "perplexity", None, "fp32's perplexity on the same tokens (PyTorch eager)"),
    Metric(PERPLEXITY_DELTA, "ppl", "perplexity", "lower", "the variant's perplexity minus fp32's on the same tokens"),
]

_SCENARIOS = [
    ScenarioMetrics(SINGLE_STREAM, LATENCY.name, LATENCY.p50),
    ScenarioMetrics(OFFLINE, BATCH_LATENCY.name, THROUGHPUT),
    ScenarioMetrics(SERVER, LATENCY.name, CAPACITY_QPS, meaning="arrival to completion, queueing included"),
    ScenarioMetrics(GENERATE, TPOT.name, TPOT.p50, meaning="one request's mean time per output token after the first"),
    ScenarioMetrics(GENERATE_SERVER, TTFT.name, CAPACITY_QPS,
                    meaning="arrival to the first token on the host, queueing included"),
    ScenarioMetrics(GENERATE_OFFLINE, REQUEST_LATENCY.name, OUTPUT_TOKEN_THROUGHPUT,
                    meaning="one batch of prompts generated together, start to its last token"),
]

BUILTIN: list[Entry] = [LATENCY, BATCH_LATENCY, DEVICE_LATENCY, QUEUE_WAIT, SCHEDULER_LATENESS, SERVICE_TIME,
                        TTFT, TPOT, INTER_TOKEN, REQUEST_LATENCY, *_SCALARS, *_SCENARIOS]


@dataclass
class Catalogue:
    """Every known metric, series and scenario's metrics, built-in and from plugins."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    scenarios: dict[str, ScenarioMetrics] = field(default_factory=dict)

    def add(self, entry: Entry, origin: str = "costbench") -> None:
        if isinstance(entry, Series):
            self._once(self.series, entry.name, entry, origin)
            for m in entry.metrics():
                self._once(self.metrics, m.name, m, origin)
        elif isinstance(entry, Metric):
            self._once(self.metrics, entry.name, entry, origin)
        elif isinstance(entry, ScenarioMetrics):
            self._once(self.scenarios, entry.scenario, entry, origin)
        else:
            raise TypeError(f"{origin}: {entry!r} is not a Metric, Series or ScenarioMetrics")

    @staticmethod
    def _once(table: dict, name: str, entry: Entry, origin: str) -> None:
        if name in table and table[name] != entry:
            raise ValueError(f"{origin}: {name!r} is already in the metric catalogue as {table[name]!r}")
        table[name] = entry

    def metric(self, name: str) -> Metric:
        """The catalogue entry of metric ``name``; KeyError names the unknown metric."""
        try:
            return self.metrics[name]
        except KeyError:
            raise KeyError(f"metric {name!r} is not in the metric catalogue (costbench.core.metrics; a plugin adds "
                           f"one through the {METRICS_GROUP.group!r} entry-point group)") from None

    def knows(self, name: str) -> bool:
        return name in self.metrics

    def higher_is_better(self, name: str) -> bool:
        """Whether a larger value of ``name`` is better; unknown metrics count as lower-is-better (timings)."""
        m = self.metrics.get(name)
        return m is not None and m.higher_is_better

    def for_scenario(self, kind: str) -> ScenarioMetrics:
        """The primary series and headline of scenario ``kind``; KeyError names the kind."""
        try:
            return self.scenarios[kind]
        except KeyError:
            raise KeyError(f"scenario kind {kind!r} has no entry in the metric catalogue: its package must register "
                           f"a ScenarioMetrics (costbench.core.metrics) naming its primary series") from None

    def primary_series(self, kind: str) -> Series:
        return self.series[self.for_scenario(kind).primary]

    def of_kind(self, *kinds: str) -> list[str]:
        """Names of the metrics of the given kinds."""
        return [n for n, m in self.metrics.items() if m.kind in kinds]


def _load_target(target: str) -> Iterable[Entry]:
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return [obj] if isinstance(obj, (Metric, Series, ScenarioMetrics)) else list(obj)


@functools.lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The catalogue: the built-in entries plus every plugin's (loaded once per process)."""
    cat = Catalogue()
    for entry in BUILTIN:
        cat.add(entry)
    for name, target in sorted(METRICS_GROUP.targets().items()):
        for entry in _load_target(target):
            cat.add(entry, origin=f"{METRICS_GROUP.group} {name} ({target})")
    return cat
