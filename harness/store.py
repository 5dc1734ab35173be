"""Run files (the source of truth) and the DuckDB store built from them.

A run file is JSON lines under ``DIR/runs/RUN_ID.jsonl``: one ``run`` header, then one
``case`` line per finished case, appended and fsync'd as each case ends, so a crash loses at
most the case in flight. The store ``DIR/costbench.duckdb`` is a queryable copy: ``sync``
re-ingests any run file that changed since it was last read, and deleting the store file
simply rebuilds it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

STORE_FILE = "costbench.duckdb"
SCHEMA_VERSION = 4  # bump when any table's columns change: older stores are then rebuilt from the run files
RUNS_DIR = "runs"
RESULT_COLUMNS = [
    "run_id", "env_id", "case_id", "model", "variant", "backend", "device", "scenario", "batch_size",
    "metric", "value", "unit", "status", "reason", "ci_low", "ci_high", "valid", "samples", "details",
    "recipe", "created", "commit", "seq",
]
RESULT_TYPES = {c: "VARCHAR" for c in RESULT_COLUMNS} | {
    "batch_size": "BIGINT", "value": "DOUBLE", "ci_low": "DOUBLE", "ci_high": "DOUBLE", "valid": "BOOLEAN",
    "samples": "DOUBLE[]", "seq": "INTEGER",
}


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


def run_files(results_dir: Path) -> list[RunFile]:
    return [RunFile(p) for p in sorted((results_dir / RUNS_DIR).glob("*.jsonl"))]


def rows_of(run: RunFile) -> list[dict[str, Any]]:
    """Long-form result rows of one run file: one per case and metric (one status row for skipped/failed)."""
    header = run.header()
    base = {"run_id": header["run_id"], "env_id": header["env_id"], "created": header.get("created"),
            "commit": header.get("commit")}
    rows = []
    for seq, rec in enumerate(run.cases()):
        c = rec["case"]
        ident = {k: c[k] for k in ("case_id", "model", "variant", "backend", "device", "scenario", "batch_size",
                                   "recipe")}
        common = {**base, **ident, "status": rec["status"], "reason": rec.get("reason", ""), "seq": seq}
        metrics = rec.get("metrics") or [{"metric": "case", "value": None, "unit": ""}]
        for m in metrics:
            rows.append({
                **common, "metric": m["metric"], "value": m.get("value"), "unit": m.get("unit", ""),
                "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), "valid": m.get("valid"),
                "samples": m.get("samples"), "details": json.dumps(m["details"]) if m.get("details") else None,
            })
    return rows


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


@dataclass
class Store:
    """The DuckDB copy of a results folder's run files."""

    results_dir: Path

    @property
    def path(self) -> Path:
        return self.results_dir / STORE_FILE

    def _connect(self, attempts: int = 600):
        import duckdb

        # DuckDB lets one process write a database file at a time; a concurrent run syncing the
        # same store holds it for a moment, so wait rather than fail.
        for i in range(attempts):
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException:
                if i == attempts - 1:
                    raise
                time.sleep(0.1)

    def sync(self) -> int:
        """Ingest run files that are new or changed since the last sync; returns how many were ingested."""
        files = run_files(self.results_dir)
        if not files:
            return 0
        con = self._connect()
        try:
            con.execute("CREATE TABLE IF NOT EXISTS meta (schema_version INTEGER)")
            found = con.execute("SELECT max(schema_version) FROM meta").fetchone()[0]
            if found != SCHEMA_VERSION:
                con.execute("DROP TABLE IF EXISTS results")
                con.execute("DROP TABLE IF EXISTS runs")
                con.execute("DROP TABLE IF EXISTS cases")
                con.execute("DELETE FROM meta")
                con.execute("INSERT INTO meta VALUES (?)", [SCHEMA_VERSION])
            con.execute("CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, file VARCHAR, "
                        "file_size BIGINT, file_mtime_ns BIGINT, created VARCHAR, commit VARCHAR, "
                        "harness_version VARCHAR, env_id VARCHAR, suite VARCHAR, env JSON, cases_done INTEGER, "
                        "suite_source VARCHAR, argv JSON)")
            # Per-case provenance (artifact, recipe, session, timing) that reports and dashboards show.
            con.execute("CREATE TABLE IF NOT EXISTS cases (run_id VARCHAR, seq INTEGER, case_id VARCHAR, "
                        "status VARCHAR, elapsed_s DOUBLE, finished VARCHAR, spec JSON, info JSON)")
            # Explicit types: inferring them from the first DataFrame fails when a column is all NULL
            # (a run file that so far holds only its header, or only skipped cases).
            con.execute(f"CREATE TABLE IF NOT EXISTS results ({', '.join(f'{c} {t}' for c, t in RESULT_TYPES.items())})")
            seen = {r[0]: (r[1], r[2]) for r in con.execute("SELECT file, file_size, file_mtime_ns FROM runs").fetchall()}
            ingested = 0
            for rf in files:
                st = rf.path.stat()
                if seen.get(str(rf.path)) == (st.st_size, st.st_mtime_ns):
                    continue
                try:
                    header = rf.header()
                    rows = rows_of(rf)
                except (ValueError, KeyError) as exc:
                    warnings.warn(f"{rf.path}: not a costbench run file ({exc}); skipped")
                    continue
                df = frame_of(rows)
                con.execute("BEGIN TRANSACTION")
                con.execute("DELETE FROM results WHERE run_id = ?", [header["run_id"]])
                con.register("incoming", df)
                con.execute(f"INSERT INTO results SELECT {', '.join(f'CAST({c} AS {t})' for c, t in RESULT_TYPES.items())} "
                            "FROM incoming")
                con.unregister("incoming")
                con.execute("DELETE FROM runs WHERE run_id = ?", [header["run_id"]])
                con.execute("DELETE FROM cases WHERE run_id = ?", [header["run_id"]])
                case_rows = [[header["run_id"], seq, rec["case"].get("case_id"), rec.get("status"), rec.get("elapsed_s"),
                              rec.get("finished"), json.dumps(rec["case"], default=str),
                              json.dumps(rec.get("info") or {}, default=str)] for seq, rec in enumerate(rf.cases())]
                if case_rows:  # DuckDB's executemany rejects an empty list
                    con.executemany("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?)", case_rows)
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [header["run_id"], str(rf.path), st.st_size, st.st_mtime_ns, header.get("created"),
                     header.get("commit"), header.get("harness_version"), header["env_id"],
                     (header.get("suite") or {}).get("name"), json.dumps(header.get("env")),
                     len(case_rows), (header.get("suite") or {}).get("source"), json.dumps(header.get("argv"))],
                )
                con.execute("COMMIT")
                ingested += 1
            return ingested
        finally:
            con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        con = self._connect()
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()

    def history(self, metric: str, env_id: str, exclude_run: str | None = None, **case: Any) -> list[float]:
        """Values of ``metric`` for one case identity (model, variant, backend, ...) on ``env_id``, from ok runs."""
        self.sync()
        where = ["metric = ?", "env_id = ?", "status = 'ok'"] + [f"{k} = ?" for k in case]
        params: list[Any] = [metric, env_id, *case.values()]
        if exclude_run:
            where.append("run_id != ?")
            params.append(exclude_run)
        import duckdb

        try:
            df = self.query(f"SELECT value FROM results WHERE {' AND '.join(where)}", params)
        except duckdb.CatalogException:  # no results table yet: no history
            return []
        return [float(v) for v in df["value"].dropna()]

    def rebuild(self) -> int:
        """Drop the store and ingest every run file again."""
        for suffix in ("", ".wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                p.unlink()
        return self.sync()


def load_results(results_dir: str | Path = "results", run_id: str | None = None) -> pd.DataFrame:
    """All results under ``results_dir`` (or one run) as a long-form DataFrame, one row per case and metric."""
    results_dir = Path(results_dir)
    store = Store(results_dir)
    if not run_files(results_dir):
        return frame_of([])
    store.sync()
    where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    df = store.query(f"SELECT * FROM results {where} ORDER BY created, run_id, seq, metric", params)
    df["batch_size"] = df["batch_size"].astype("Int64")
    return df[RESULT_COLUMNS]


def list_runs(results_dir: str | Path = "results") -> pd.DataFrame:
    """One row per run: id, time, commit, environment, suite, cases recorded."""
    store = Store(Path(results_dir))
    if not run_files(Path(results_dir)):
        return pd.DataFrame(columns=["run_id", "created", "commit", "env_id", "suite", "cases_done"])
    store.sync()
    return store.query("SELECT run_id, created, commit, env_id, suite, cases_done FROM runs ORDER BY created")
