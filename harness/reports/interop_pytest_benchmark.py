"""pytest-benchmark JSON in and out.

Import turns a ``--benchmark-json`` / ``--benchmark-autosave`` file into a costbench run file (the
store's source of truth), one case per benchmark; export writes a costbench run's latency series as
a file ``pytest-benchmark compare`` reads. Times are seconds there and milliseconds here.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import statistics
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from costbench.core.metrics import BATCH_LATENCY, LATENCY, SINGLE_STREAM, THROUGHPUT
from costbench.harness.machine.env import env_id_of
from costbench.harness.reports.data import Selection, samples_of
from costbench.core.stats import bootstrap_ci, percentile
from costbench.harness.results.store import RUNS_DIR, RunFile

BACKEND = "pytest-benchmark"
EXPORT_METRICS = (LATENCY.p50, BATCH_LATENCY.p50)  # the rows that carry raw samples


class InteropError(ValueError):
    """A file that is not what the command expects."""


def _created(value: Any) -> str:
    if not value:
        return datetime.now(timezone.utc).isoformat(timespec="seconds")
    dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # pytest-benchmark writes UTC, without an offset in older versions
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds")


def _env(machine: dict[str, Any]) -> dict[str, Any]:
    cpu = machine.get("cpu") or {}
    key = {"cpu_model": cpu.get("brand_raw") or machine.get("processor") or "unknown CPU",
           "machine": machine.get("machine"), "logical_cores": cpu.get("count"), "gpus": [],
           "python": machine.get("python_version"), "implementation": machine.get("python_implementation"),
           "system": machine.get("system"), "release": machine.get("release"), "source": BACKEND}
    return {"env_id": env_id_of(key), "key": key, "recorded": machine}


def _metric(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"metric": name, "value": float(value), "unit": unit, **extra}


def _case_record(run_id: str, bench: dict[str, Any], commit: str | None) -> dict[str, Any]:
    stats = bench.get("stats") or {}
    fullname = str(bench.get("fullname") or bench.get("name"))
    module = fullname.split("::")[0]
    case = {"case_id": "pb-" + hashlib.sha256(fullname.encode()).hexdigest()[:10],
            "model": str(bench.get("group") or module), "variant": str(bench.get("name") or fullname),
            "backend": BACKEND, "device": "cpu", "scenario": SINGLE_STREAM, "batch_size": 1, "recipe": "",
            "backend_name": BACKEND, "scenario_spec": {"kind": SINGLE_STREAM}}
    details = {"timing": {"clock": (bench.get("options") or {}).get("timer", "unknown"),
                          "boundary": "pytest-benchmark: one round's time / iterations"}, "source": BACKEND}
    data = stats.get("data")
    metrics = []
    if data:
        ms = np.asarray(data, dtype=float) * 1e3
        lo50, hi50 = bootstrap_ci(ms, 50)
        lo99, hi99 = bootstrap_ci(ms, 99)
        metrics += [_metric(LATENCY.p50, percentile(ms, 50), "ms", ci_low=lo50, ci_high=hi50, valid=True,
                            samples=ms.tolist(), details=details),
                    _metric(LATENCY.p99, percentile(ms, 99), "ms", ci_low=lo99, ci_high=hi99, valid=True,
                            details=details)]
    elif "median" in stats:
        # Without raw data only pytest-benchmark's own (interpolated) median exists; say so.
        metrics.append(_metric(LATENCY.p50, stats["median"] * 1e3, "ms", valid=True,
                               details={**details, "note": "pytest-benchmark median (interpolated); no raw data: "
                                                          "run pytest with --benchmark-save-data to import samples"}))
    if "mean" in stats:
        metrics.append(_metric(LATENCY.stat("mean"), stats["mean"] * 1e3, "ms", details=details))
        if stats["mean"] and "stddev" in stats:
            metrics.append(_metric(LATENCY.stat("cv"), stats["stddev"] / stats["mean"], "ratio", details=details))
    if stats.get("ops"):
        metrics.append(_metric(THROUGHPUT, stats["ops"], "samples/s", details=details))
    if "rounds" in stats:
        metrics.append(_metric("queries", stats["rounds"], "count", details=details))
    at = f"git checkout {str(commit).removesuffix('-dirty')[:12]} && " if commit else ""
    info = {"pytest_benchmark": {k: bench.get(k) for k in ("fullname", "group", "name", "params", "param",
                                                          "extra_info", "options")}
                                | {"stats": {k: v for k, v in stats.items() if k != "data"}},
            "reproduce": f"{at}pytest {shlex.quote(fullname)} --benchmark-only"}
    return {"type": "case", "run_id": run_id, "case": case, "status": "ok" if metrics else "failed",
            "reason": "" if metrics else "no statistics in the pytest-benchmark record", "elapsed_s": stats.get("total"),
            "metrics": metrics, "info": info}


def import_file(path: Path, results_dir: Path) -> str:
    """Write a pytest-benchmark JSON file as a costbench run file under ``results_dir``; returns the run id."""
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InteropError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InteropError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list; write one with "
                           "pytest --benchmark-json=FILE)")
    created = _created(data.get("datetime"))
    run_id = datetime.fromisoformat(created).strftime("%Y%m%d-%H%M%S-pb") + hashlib.sha256(raw).hexdigest()[:4]
    existing = Path(results_dir) / RUNS_DIR / f"{run_id}.jsonl"
    if existing.exists():
        raise InteropError(f"{path}: already imported as run {run_id} ({existing})")
    ci = data.get("commit_info") or {}
    commit = (str(ci["id"]) + ("-dirty" if ci.get("dirty") else "")) if ci.get("id") else None
    env = _env(data.get("machine_info") or {})
    header = {"run_id": run_id, "created": created, "commit": commit,
              "harness_version": f"pytest-benchmark {data.get('version', '?')}", "env_id": env["env_id"], "env": env,
              "suite": {"name": BACKEND, "source": str(path)}, "planned_cases": len(data["benchmarks"]),
              "argv": ["costbench", "pytest-benchmark", "import", str(path)], "imported_from": str(path)}
    rf = RunFile.create(Path(results_dir), header)
    for bench in data["benchmarks"]:
        rf.append(_case_record(run_id, bench, commit))
    return run_id


# --- Export ----------------------------------------------------------------------------------------

def pytest_benchmark_stats(data: list[float]) -> dict[str, Any]:
    """The statistics pytest-benchmark computes for a list of per-round times (its own formulas)."""
    n = len(data)
    s = sorted(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if n > 1 else 0
    if n == 1:
        q1 = q3 = s[0]
    elif n % 2:
        k, r = n // 4, n % 4
        q1 = 0.25 * s[k - 1] + 0.75 * s[k] if r == 1 else 0.75 * s[k] + 0.25 * s[k + 1]
        q3 = 0.75 * s[3 * k] + 0.25 * s[3 * k + 1] if r == 1 else 0.25 * s[3 * k + 1] + 0.75 * s[3 * k + 2]
    else:
        q1, q3 = statistics.median(s[: n // 2]), statistics.median(s[n // 2:])
    iqr = q3 - q1
    if n == 1:
        ld, hd = data[0], data[0]
    else:
        ld = s[bisect_left(s, q1 - 1.5 * iqr)]
        # The highest datum at or below the upper fence (pytest-benchmark < 5.3.1 returned the first
        # datum above it instead; 5.3.1 fixed that, and so do we).
        hd = s[bisect_right(s, q3 + 1.5 * iqr) - 1]
    std_out = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    iqr_out = sum(1 for v in data if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr)
    total = sum(data)
    return {"min": s[0], "max": s[-1], "mean": mean, "stddev": stddev, "rounds": n, "median": statistics.median(data),
            "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out, "stddev_outliers": std_out,
            "outliers": f"{std_out};{iqr_out}", "ld15iqr": ld, "hd15iqr": hd, "ops": n / total if total else 0,
            "total": total}


def export_run(sel: Selection, run_id: str, include_data: bool = True) -> dict[str, Any]:
    """A run's sampled latency series as a pytest-benchmark JSON document."""
    run = sel.run(run_id)
    env = run.get("env") or {}
    key, rec = env.get("key") or {}, env.get("recorded") or {}
    df = sel.results
    rows = df[(df["run_id"] == run_id) & (df["status"] == "ok") & df["metric"].isin(EXPORT_METRICS)
              & df["samples"].map(lambda s: samples_of(s) is not None)]
    benchmarks = []
    for r in rows.to_dict("records"):
        data_s = [float(x) / 1e3 for x in samples_of(r["samples"])]
        name = f"{r['variant']}-{r['backend']}-{r['device']}-{r['scenario']}-b{int(r['batch_size'])}"
        stats = pytest_benchmark_stats(data_s)
        if include_data:
            stats["data"] = data_s
        stats["iterations"] = 1
        benchmarks.append({
            "group": r["model"], "name": name, "fullname": f"costbench::{r['model']}::{name}",
            "params": {"variant": r["variant"], "backend": r["backend"], "device": r["device"],
                       "scenario": r["scenario"], "batch_size": int(r["batch_size"])},
            "param": name,
            "extra_info": {"source": "costbench", "run_id": run_id, "env_id": r["env_id"], "case_id": r["case_id"],
                           "metric": r["metric"], "costbench_value_ms": r["value"],
                           "note": "one round = one query (single_stream) or one batch (offline), in seconds"},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(data_s), "max_time": None,
                        "min_time": None, "warmup": True},
            "stats": stats,
        })
    commit = run.get("commit")
    return {
        "machine_info": {"node": rec.get("hostname"), "processor": key.get("cpu_model"), "machine": key.get("machine"),
                         "python_implementation": "CPython", "python_version": key.get("python"),
                         "system": (rec.get("os") or "").split("-")[0] or None, "release": rec.get("os"),
                         "cpu": {"brand_raw": key.get("cpu_model"), "count": key.get("logical_cores"),
                                 "arch": key.get("machine")},
                         "costbench_env_id": run.get("env_id")},
        "commit_info": {"id": str(commit).removesuffix("-dirty") if commit else None,
                        "dirty": bool(commit and str(commit).endswith("-dirty")), "project": "costbench",
                        "branch": None, "time": None},
        "benchmarks": benchmarks,
        "datetime": run.get("created"),
        "version": "5.1.0",
    }
