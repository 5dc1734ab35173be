"""The embedded store: a results folder's run files copied into DuckDB (``DIR/costbench.duckdb``).

Run files are the source of truth; ``sync`` re-ingests any run file that changed since it was last read,
and deleting the store file simply rebuilds it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from costbench.harness.results.base import CASE_COLUMNS, RUN_COLUMNS, ResultStore, as_frame
from costbench.harness.results.runfile import (
    RESULT_TYPES, RUNS_DIR, SCHEMA_VERSION, RunFile, case_rows_of, frame_of, rows_of, run_files, run_row_of,
)

STORE_FILE = "costbench.duckdb"


@dataclass
class Store(ResultStore):
    """The DuckDB copy of a results folder's run files."""

    results_dir: Path

    @classmethod
    def open(cls, source: str | Path) -> "Store":
        return cls(Path(source))

    @property
    def name(self) -> str:
        return str(self.results_dir)

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
                    header, records = rf.read()
                    rows = rows_of(rf, header, records)
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
                case_rows = case_rows_of(header["run_id"], records)
                if case_rows:  # DuckDB's executemany rejects an empty list
                    con.executemany("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?)", case_rows)
                run = run_row_of(header)
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run["run_id"], str(rf.path), st.st_size, st.st_mtime_ns, run["created"], run["commit"],
                     run["harness_version"], run["env_id"], run["suite"], run["env"], len(case_rows),
                     run["suite_source"], run["argv"]],
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


    # --- ResultStore: what reports read ---------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        if not run_files(self.results_dir):
            return pd.DataFrame(columns=RUN_COLUMNS)
        self.sync()
        return self.query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY created, run_id")

    def results(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        if not run_files(self.results_dir) or (run_ids is not None and not run_ids):
            return as_frame(frame_of([]))
        self.sync()
        where, params = ("", []) if run_ids is None else (f"WHERE run_id IN ({', '.join('?' * len(run_ids))})",
                                                          list(run_ids))
        return as_frame(self.query(f"SELECT * FROM results {where} ORDER BY created, run_id, seq, metric", params))

    def cases(self, run_ids: Sequence[str]) -> pd.DataFrame:
        if not run_files(self.results_dir) or not run_ids:
            return pd.DataFrame(columns=CASE_COLUMNS)
        return self.query(f"SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE run_id IN "
                          f"({', '.join('?' * len(run_ids))})", list(run_ids))
