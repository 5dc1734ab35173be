"""The metric catalogue: entries are well formed, directions are right, and names are spelled only there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from costbench.core import metrics as m

ROOT = Path(__file__).resolve().parents[2]
CODE = ["costbench", "harness", "backends", "kernels", "scripts", "benchmarks"]


def _primary_names() -> set[str]:
    cat = m.catalogue()
    names = set()
    for scenario in cat.scenarios.values():
        series = cat.series[scenario.primary]
        names |= {series.stat(s) for s in m.Series.STATS + m.Series.PROCESS_STATS}
    return names


def test_every_scenario_names_a_known_series_and_headline():
    cat = m.catalogue()
    assert {m.SINGLE_STREAM, m.OFFLINE, m.SERVER} <= set(cat.scenarios)
    for scenario in cat.scenarios.values():
        assert scenario.primary in cat.series
        assert cat.metric(scenario.headline).kind in ("latency", "throughput", "capacity")


def test_directions():
    cat = m.catalogue()
    for name in (m.THROUGHPUT, m.CAPACITY_QPS, m.TASK_ACCURACY, m.TOP1_AGREEMENT, m.COSINE_MIN):
        assert cat.higher_is_better(name), name
    for name in (m.LATENCY.p50, m.BATCH_LATENCY.p99, m.PEAK_RSS, m.MODEL_SIZE, "kl_divergence_mean",
                 m.LATENCY.process_spread):
        assert not cat.higher_is_better(name), name


def test_unknown_metrics_and_conflicts_are_refused():
    cat = m.catalogue()
    with pytest.raises(KeyError, match="not in the metric catalogue"):
        cat.metric("latency_p51")
    with pytest.raises(KeyError, match="no entry in the metric catalogue"):
        cat.for_scenario("no-such-scenario")
    with pytest.raises(ValueError, match="already in the metric catalogue"):
        cat.add(m.Metric(m.THROUGHPUT, "ms", "latency", "lower", "a different throughput"), origin="test")
    with pytest.raises(ValueError, match="kind"):
        m.Metric("x", "ms", "speed", "lower", "")


def test_a_plugin_entry_joins_the_catalogue(monkeypatch):
    monkeypatch.setenv(m.METRICS_GROUP.extra_env, "extra=costbench.core.metrics:LATENCY")  # a known entry: no clash
    m.catalogue.cache_clear()
    try:
        assert m.catalogue().series["latency"] == m.LATENCY
    finally:
        m.catalogue.cache_clear()


def test_the_worker_refuses_a_row_of_an_unknown_metric():
    from costbench.harness.measure.worker import _metric

    assert _metric(m.LATENCY.p50, 1.0, "ms")["metric"] == "latency_p50"
    with pytest.raises(KeyError, match="latency_p42"):
        _metric("latency_p42", 1.0, "ms")


def test_primary_metric_names_are_spelled_only_in_the_catalogue():
    names = _primary_names()
    assert "latency_p50" in names and "batch_latency_p50" in names
    found = []
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "costbench" / "core" / "metrics.py" or "build" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "metric names spelled outside costbench/core/metrics.py:\n" + "\n".join(found)
