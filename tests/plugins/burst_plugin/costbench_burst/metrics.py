"""The burst scenario's entries in costbench's metric catalogue: its series, a new scalar, what it leads with."""

from costbench.core.metrics import Metric, ScenarioMetrics, Series

BURST_LATENCY = Series("burst_latency", "time from a burst's arrival to the end of one of its queries")
BURSTS = Metric("bursts", "count", "count", None, "bursts of queries issued")
METRICS = [BURST_LATENCY, BURSTS, ScenarioMetrics("burst", BURST_LATENCY.name, BURST_LATENCY.p99)]
