"""Run files, the source of truth, and the result rows every store holds (DuckDB here, PostgreSQL for a team).

A run file is JSON lines under ``DIR/runs/RUN_ID.jsonl``: one ``run`` header, then one ``case``
line per finished case, appended and fsync'd as each case ends, so a crash loses at most the
case in flight. The rows built here from a run file are what both stores hold, so both serve the
same ``load_results`` frame.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from costbench.harness.results.replicates import merged_records
from costbench.harness.suite.case import scenario_kind_of

SCHEMA_VERSION = 5  # bump when any table's columns change: older stores are then rebuilt from the run files
RUNS_DIR = "runs"
RESULT_COLUMNS = [
    "run_id", "env_id", "case_id", "model", "variant", "backend", "device", "scenario", "scenario_kind", "batch_size",
    "metric", "value", "unit", "status", "reason", "ci_low", "ci_high", "valid", "samples", "details",
    "recipe", "created", "commit", "seq",
]
RESULT_TYPES = {c: "VARCHAR" for c in RESULT_COLUMNS} | {
    "batch_size": "BIGINT", "value": "DOUBLE", "ci_low": "DOUBLE", "ci_high": "DOUBLE", "valid": "BOOLEAN",
    "samples": "DOUBLE[]", "seq": "INTEGER",
}
# The dtypes of the load_results frame, whichever store served it.
FRAME_DTYPES = {c: "str" for c in RESULT_COLUMNS} | {
    "batch_size": "Int64", "value": "float64", "ci_low": "float64", "ci_high": "float64", "valid": "boolean",
    "samples": "object", "seq": "int32",
}

# A password inside a PostgreSQL URL (user:PASSWORD@host) or its query (?password=...).
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"((?:[?&]|\s|^)password=)([^&\s]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any password in a database URL or ``password=`` option replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))


class RunFile:
    """Append-only JSON-lines file of one run."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, results_dir: Path, header: dict[str, Any]) -> "RunFile":
        runs = results_dir / RUNS_DIR
        runs.mkdir(parents=True, exist_ok=True)
        path = runs / f"{header['run_id']}.jsonl"
        if path.exists():
            raise FileExistsError(f"run file {path} already exists")
        rf = cls(path)
        rf.append({"type": "run", **header})
        return rf

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and force it to disk before returning."""
        line = json.dumps(record, default=str, allow_nan=True) + "\n"
        # O_APPEND makes each write land at the end even if another writer holds the file open.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def repair_tail(self) -> bool:
        """Cut a torn last line (a writer killed mid-record) so the next append starts a clean line."""
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return False
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())
        return True

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record; a torn last line (the writer was killed mid-write) is skipped."""
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if i < len(lines) - 2:  # only the final line may legitimately be torn
                    warnings.warn(f"{self.path}:{i + 1}: unreadable record skipped")

    def header(self) -> dict[str, Any]:
        for rec in self.records():
            if rec.get("type") == "run":
                return rec
        raise ValueError(f"{self.path}: no run header")

    def cases(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("type") == "case"]

    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(header, case records) from one read of the file."""
        header, cases = None, []
        for rec in self.records():
            if rec.get("type") == "run" and header is None:
                header = rec
            elif rec.get("type") == "case":
                cases.append(rec)
        if header is None:
            raise ValueError(f"{self.path}: no run header")
        return header, cases


def run_files(results_dir: Path) -> list[RunFile]:
    return [RunFile(p) for p in sorted((results_dir / RUNS_DIR).glob("*.jsonl"))]


def rows_of(run: RunFile, header: dict[str, Any] | None = None,
            cases: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Long-form result rows of one run file: one per case and metric (one status row for skipped/failed).

    A case measured in several processes gives one row per metric, over all its processes (:mod:`.replicates`).

    ``header`` and ``cases`` are ``run.read()`` when the caller already has them.
    """
    if header is None or cases is None:
        header, cases = run.read()
    cases = merged_records(cases)  # one record per case, its processes merged
    base = {"run_id": header["run_id"], "env_id": header["env_id"], "created": header.get("created"),
            "commit": header.get("commit")}
    rows = []
    for seq, rec in enumerate(cases):
        c = rec["case"]
        ident = {k: c[k] for k in ("case_id", "model", "variant", "backend", "device", "scenario", "batch_size",
                                   "recipe")}
        ident["scenario_kind"] = scenario_kind_of(c)
        # A fleet run measures on several machines: each case record carries its node's env_id.
        common = {**base, "env_id": rec.get("env_id") or base["env_id"], **ident, "status": rec["status"],
                  "reason": rec.get("reason", ""), "seq": seq}
        metrics = rec.get("metrics") or [{"metric": "case", "value": None, "unit": ""}]
        for m in metrics:
            rows.append({
                **common, "metric": m["metric"], "value": m.get("value"), "unit": m.get("unit", ""),
                "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), "valid": m.get("valid"),
                "samples": m.get("samples"), "details": json.dumps(m["details"]) if m.get("details") else None,
            })
    return rows


def case_rows_of(run_id: str, cases: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows of the ``cases`` table (per-case provenance): run_id, seq, case_id, status, elapsed_s, finished, spec, info.

    ``cases``: the run file's case records; a case's processes become one row (:func:`merged_records`).
    """
    cases = merged_records(cases)
    return [[run_id, seq, rec["case"].get("case_id"), rec.get("status"), rec.get("elapsed_s"), rec.get("finished"),
             json.dumps(rec["case"], default=str), json.dumps(rec.get("info") or {}, default=str)]
            for seq, rec in enumerate(cases)]


def run_row_of(header: dict[str, Any]) -> dict[str, Any]:
    """The ``runs`` table's columns that come from a run header; the argv is stored without passwords."""
    suite = header.get("suite") or {}
    argv = header.get("argv")
    if isinstance(argv, list):
        argv = [redact(str(a)) for a in argv]
    return {"run_id": header["run_id"], "created": header.get("created"), "commit": header.get("commit"),
            "harness_version": header.get("harness_version"), "env_id": header["env_id"], "suite": suite.get("name"),
            "env": json.dumps(run_env(header)), "suite_source": suite.get("source"), "argv": json.dumps(argv)}


def run_env(header: dict[str, Any]) -> dict[str, Any] | None:
    """The driver's fingerprint, with, for a fleet run, each machine class's under ``machines`` (env_id -> fingerprint).

    Reports find the machine a case ran on from its row's env_id (:func:`env_of`).
    """
    env = header.get("env")
    classes = ((header.get("executor") or {}).get("machines")) or {}
    if not classes or env is None:
        return env
    return {**env, "machines": {env_id: c.get("fingerprint") for env_id, c in classes.items()}}


def env_of(run_env: dict[str, Any] | None, env_id: str) -> dict[str, Any] | None:
    """The fingerprint of machine ``env_id`` within a run's stored env (the driver's own, or a fleet class's)."""
    if run_env is None or run_env.get("env_id") == env_id:
        return run_env
    return (run_env.get("machines") or {}).get(env_id) or run_env


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df
