"""A team's shared store on PostgreSQL (psycopg 3): runs pushed from many machines, read like the DuckDB store.

The tables mirror the DuckDB store's (``runs``, ``cases``, ``results`` with ``RESULT_COLUMNS``) in
the schema ``costbench`` of the database the URL names, and serve the same ``load_results`` frame.
Run files stay the source of truth on the machine that wrote them; pushing one is:

- **idempotent**: a run's cases are keyed by (run_id, seq) and its rows by (run_id, seq, pos);
  a push adds only the cases past what the store holds of that run (and any row already there is
  skipped, ``ON CONFLICT DO NOTHING``), so pushing twice changes nothing;
- **atomic**: one run is one transaction (rows, cases and the run's ``cases_done``/``complete``
  together), so a reader never sees part of a push, and a push that dies leaves nothing;
- **safe with many writers**: pushes of one run are serialised by a transaction-scoped advisory
  lock on its id; different runs proceed side by side.

Credentials come from the URL, the ``PG*`` variables or ``~/.pgpass`` (libpq reads them). They are
never written into results: the URL kept and shown is :func:`redact`'ed, and so is each run's argv.
"""

from __future__ import annotations

import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from costbench.harness.results.replicates import group_records, is_complete
from costbench.harness.results.runfile import (
    RESULT_COLUMNS, RESULT_TYPES, SCHEMA_VERSION, RunFile, case_rows_of, redact, rows_of, run_files, run_row_of,
)
from costbench.harness.results.base import CASE_COLUMNS, RUN_COLUMNS, ResultStore, StoreError, as_frame

SCHEMA = "costbench"
PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "DOUBLE": "double precision", "BOOLEAN": "boolean",
            "DOUBLE[]": "double precision[]", "INTEGER": "integer"}
RESULT_PG_COLUMNS = RESULT_COLUMNS + ["pos"]  # pos: the row's place within its case, so no row ever collides
CASE_PG_COLUMNS = ["run_id", "seq", "case_id", "status", "elapsed_s", "finished", "spec", "info"]
COLUMN_TYPES = {"results": [RESULT_TYPES[c] for c in RESULT_COLUMNS] + ["INTEGER"],
                "cases": ["VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR", "VARCHAR", "VARCHAR"]}
# JSON goes in text columns: run files may hold NaN, which PostgreSQL's json types reject.
DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (schema_version integer NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
        run_id text PRIMARY KEY, created text, commit text, harness_version text, env_id text, suite text,
        env text, cases_done integer NOT NULL, suite_source text, argv text,
        planned_cases integer, complete boolean NOT NULL, pushed_at timestamptz NOT NULL DEFAULT now())""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.cases (
        run_id text NOT NULL, seq integer NOT NULL, case_id text, status text, elapsed_s double precision,
        finished text, spec text, info text, PRIMARY KEY (run_id, seq))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.results (
        {', '.join(f'"{c}" {PG_TYPES[t]}' for c, t in RESULT_TYPES.items())}, pos integer NOT NULL,
        PRIMARY KEY (run_id, seq, pos))""",
]
_SCHEMA_LOCK = 0x636F7374  # advisory lock key: creating the tables, one writer at a time


@dataclass
class PushResult:
    """What one run's push did."""

    run_id: str
    cases: int  # cases in the run file
    cases_added: int
    rows_added: int
    complete: bool  # every planned case is in the store


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; a reason copied from a crashed child's stderr might.
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


# COPY's binary format, written by hand: formatting and parsing 2.9 million samples as decimal text (or
# psycopg adapting them one by one) is what a 100,000-row push would otherwise spend most of its time on.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_FLOAT8_OID = 701
_ELEMENT = np.dtype([("n", ">i4"), ("v", ">f8")])  # one float8[] element: its length (8), its value


def _float(v: Any) -> bytes:
    return _NULL if v is None else b"\x00\x00\x00\x08" + struct.pack(">d", float(v))


def _int4(v: Any) -> bytes:
    return _NULL if v is None else b"\x00\x00\x00\x04" + struct.pack(">i", int(v))


def _int8(v: Any) -> bytes:
    return _NULL if v is None else b"\x00\x00\x00\x08" + struct.pack(">q", int(v))


def _bool(v: Any) -> bytes:
    return _NULL if v is None else (b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00")


def _floats(v: Any) -> bytes:
    """A float8[] in one numpy call (the values came from a run file's JSON: numbers, or null)."""
    if v is None:
        return _NULL
    if not v:
        payload = struct.pack(">iii", 0, 0, _FLOAT8_OID)
    elif None in v:  # a null element (costbench never writes one): element by element
        body = b"".join(_NULL if x is None else struct.pack(">id", 8, float(x)) for x in v)
        payload = struct.pack(">iiiii", 1, 1, _FLOAT8_OID, len(v), 1) + body
    else:
        arr = np.empty(len(v), dtype=_ELEMENT)
        arr["n"] = 8
        arr["v"] = v
        payload = struct.pack(">iiiii", 1, 0, _FLOAT8_OID, len(v), 1) + arr.tobytes()
    return struct.pack(">i", len(payload)) + payload


_ENCODERS = {"DOUBLE": _float, "BIGINT": _int8, "INTEGER": _int4, "BOOLEAN": _bool, "DOUBLE[]": _floats}


def _copy_rows(rows: list[list[Any]], types: list[str], memo: dict[str, bytes] | None = None) -> bytes:
    """``rows`` as tuples of COPY's binary format (no header or trailer), each column by its type's encoder.

    Most text values repeat from row to row (run id, environment, model, metric...): ``memo`` keeps
    each one's encoded form across calls.
    """
    memo = {} if memo is None else memo

    def text(v: Any) -> bytes:
        if v is None:
            return _NULL
        out = memo.get(v)
        if out is None:
            raw = _clean(str(v)).encode()
            out = memo[v] = struct.pack(">i", len(raw)) + raw
        return out

    enc = [text if t == "VARCHAR" else _ENCODERS[t] for t in types]
    count = struct.pack(">h", len(types))
    return b"".join(count + b"".join([f(v) for f, v in zip(enc, r)]) for r in rows)


def _lines(path: Path) -> int:
    """Non-empty lines of a file, without parsing them."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _load_float8_array(data) -> np.ndarray | None:
    """PostgreSQL's binary float8[] as a float64 array in one numpy call (psycopg's loader goes value by value)."""
    ndim, has_null, _ = struct.unpack_from(">iii", data)
    if ndim == 0:
        return np.empty(0, dtype=np.float64)
    n = struct.unpack_from(">i", data, 12)[0]
    if ndim == 1 and not has_null:
        return np.frombuffer(data, dtype=_ELEMENT, count=n, offset=20)["v"].astype(np.float64)
    values, off = [], 12 + 8 * ndim  # NULL elements (never written by costbench): read them one by one
    while off < len(data):
        size = struct.unpack_from(">i", data, off)[0]
        off += 4
        values.append(np.nan if size < 0 else struct.unpack_from(">d", data, off)[0])
        off += max(size, 0)
    return np.asarray(values, dtype=np.float64)



def explain_connect_error(url: str, exc: Exception) -> str:
    """One line that says what is wrong with connecting to ``url`` (without its password)."""
    text = redact(str(exc)).strip()
    low = text.lower()
    where = redact(url)
    if "password authentication failed" in low:
        why = "password authentication failed (check the password in the URL, PGPASSWORD or ~/.pgpass)"
    elif "no password supplied" in low or "password is required" in low:
        why = "the server wants a password and none was given (put it in ~/.pgpass, PGPASSWORD or the URL)"
    elif "database" in low and "does not exist" in low:
        why = "no such database (" + next((p.strip() for p in text.splitlines() if "does not exist" in p),
                                           text).split("FATAL:")[-1].strip() + ")"
    elif "role" in low and "does not exist" in low:
        why = "no such user (" + next((p.strip() for p in text.splitlines() if "does not exist" in p),
                                       text).split("FATAL:")[-1].strip() + ")"
    elif "invalid" in low and ("option" in low or "uri" in low or "connection" in low) or "missing" in low:
        why = f"not a valid PostgreSQL URL ({text.splitlines()[0]})"
    elif any(k in low for k in ("no such file", "connection refused", "could not translate host", "timeout",
                                "timed out", "could not connect", "is the server running")):
        why = "cannot reach the server (is PostgreSQL running there, and the host, port or socket folder right?)"
    else:
        why = text.splitlines()[0] if text else type(exc).__name__
    return f"PostgreSQL store {where}: {why}"


@dataclass
class Prepared:
    """One run file read and encoded for COPY, case by case (a push sends the cases the store lacks)."""

    path: Path
    header: dict[str, Any]
    case_ids: list[str]
    case_data: list[bytes]  # the cases table's row of each case, by seq (COPY binary tuples)
    result_data: list[bytes]  # the results table's rows of each case, by seq
    result_rows: list[int]


def prepare(rf: RunFile) -> Prepared:
    """Read a run file and encode its rows; ValueError/KeyError when it is not a costbench run file."""
    header, records = rf.read()
    # A push sends whole cases, in order: a case some of whose processes are still to come waits for them
    # (its merged rows would change), and so does every case after it.
    groups = group_records(records)
    suite = (header.get("suite") or {}).get("spec")
    complete = next((i for i, g in enumerate(groups) if not is_complete(g, suite)), len(groups))
    cases = [r for g in groups[:complete] for r in g]
    run_id = header["run_id"]
    by_seq: list[list[list[Any]]] = [[] for _ in groups[:complete]]
    for r in rows_of(rf, header, cases):
        rows = by_seq[r["seq"]]
        rows.append([r[c] for c in RESULT_COLUMNS] + [len(rows)])
    memo: dict[str, bytes] = {}
    return Prepared(
        rf.path, header, [g[0]["case"].get("case_id") for g in groups[:complete]],
        [_copy_rows([row], COLUMN_TYPES["cases"], memo) for row in case_rows_of(run_id, cases)],
        [_copy_rows(rows, COLUMN_TYPES["results"], memo) for rows in by_seq], [len(rows) for rows in by_seq])


def _prepare_or_none(rf: RunFile) -> Prepared | None:
    try:
        return prepare(rf)
    except (ValueError, KeyError) as exc:
        warnings.warn(f"{rf.path}: not a costbench run file ({exc!r}); skipped")
        return None


class PgStore(ResultStore):
    """A team store in PostgreSQL at ``url`` (``postgresql://USER@HOST:PORT/DB`` or ``...?host=SOCKET_DIR``)."""

    def __init__(self, url: str, connect_timeout: float = 10.0):
        self.url = url
        self.connect_timeout = connect_timeout

    @property
    def name(self) -> str:
        return redact(self.url)

    # --- connecting and the schema ------------------------------------------------------------------

    def connect(self):
        """An open psycopg connection; a StoreError that names the problem when there is none."""
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a PostgreSQL store needs psycopg: pip install 'costbench[fleet]' "
                             "(or pip install 'psycopg[binary]')") from exc
        try:
            return psycopg.connect(self.url, connect_timeout=int(self.connect_timeout), application_name="costbench")
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(explain_connect_error(self.url, exc)) from None

    def _schema_version(self, cur) -> int | None:
        cur.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.meta"])
        if cur.fetchone()[0] is None:
            return None
        cur.execute(f"SELECT max(schema_version) FROM {SCHEMA}.meta")
        return cur.fetchone()[0]

    def _check_version(self, found: int | None) -> None:
        if found is None or found == SCHEMA_VERSION:
            return
        if found > SCHEMA_VERSION:
            raise StoreError(f"PostgreSQL store {self.name} has schema version {found}, written by a newer costbench "
                             f"(this one reads version {SCHEMA_VERSION}): upgrade costbench to use it")
        raise StoreError(f"PostgreSQL store {self.name} has schema version {found}, older than this costbench's "
                         f"{SCHEMA_VERSION}: push the run files into a new database (costbench store push DIR --to URL)")

    def check(self, create: bool = True) -> None:
        """Connect and check the schema (creating the tables when ``create``), before anything runs."""
        with self.connect() as conn:
            self._ensure(conn, create)

    def _ensure(self, conn, create: bool) -> bool:
        """Whether the tables exist (after creating them when ``create``); StoreError on another schema version."""
        import psycopg

        with conn.cursor() as cur:
            found = self._schema_version(cur)
            self._check_version(found)
            if found is not None or not create:
                conn.commit()
                return found is not None
            try:
                with conn.transaction():
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                    for stmt in DDL:
                        cur.execute(stmt)
                    cur.execute(f"SELECT count(*) FROM {SCHEMA}.meta")
                    if cur.fetchone()[0] == 0:
                        cur.execute(f"INSERT INTO {SCHEMA}.meta VALUES (%s)", [SCHEMA_VERSION])
            except psycopg.errors.InsufficientPrivilege as exc:
                raise StoreError(f"PostgreSQL store {self.name}: this user may not create costbench's tables "
                                 f"({exc.diag.message_primary}); ask the store's owner to push once, or grant CREATE")
            self._check_version(self._schema_version(cur))
        return True

    # --- pushing ------------------------------------------------------------------------------------

    def push(self, results_dir: Path, run_ids: Iterable[str] | None = None) -> list[PushResult]:
        """Push every run file of ``results_dir`` (or those whose id starts with one of ``run_ids``)."""
        files = run_files(Path(results_dir))
        if run_ids is not None:
            prefixes = list(run_ids)
            files = [f for f in files if any(f.path.stem.startswith(p) for p in prefixes)]
        with self.connect() as conn:
            self._ensure(conn, create=True)
            with conn.cursor() as cur:
                cur.execute(f"SELECT run_id, cases_done FROM {SCHEMA}.runs WHERE complete")
                complete = dict(cur.fetchall())
            conn.commit()
            out, todo = [], []
            for rf in files:
                done = complete.get(rf.path.stem)
                if done is not None and _lines(rf.path) - 1 <= done:  # the store has all this file can hold
                    out.append(PushResult(rf.path.stem, done, 0, 0, True))
                else:
                    todo.append(rf)
            # The next file is read and encoded in a thread while the server takes this one: the
            # wait on the server releases the GIL, so the two overlap.
            with ThreadPoolExecutor(max_workers=1) as pool:
                ahead = pool.submit(_prepare_or_none, todo[0]) if todo else None
                for i in range(len(todo)):
                    prepared = ahead.result()
                    ahead = pool.submit(_prepare_or_none, todo[i + 1]) if i + 1 < len(todo) else None
                    if prepared is not None:
                        out.append(self._push_one(conn, prepared))
            return sorted(out, key=lambda r: r.run_id)

    def push_run(self, run_file: RunFile) -> PushResult:
        """Push one run file (what it holds so far: a run still going is pushed again as it grows)."""
        prepared = prepare(run_file)
        with self.connect() as conn:
            self._ensure(conn, create=True)
            return self._push_one(conn, prepared)

    def _push_one(self, conn, prepared: "Prepared", attempts: int = 5) -> PushResult:
        import psycopg

        for attempt in range(attempts):
            try:
                with conn.transaction():
                    return self._write_run(conn, prepared)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _write_run(self, conn, run: "Prepared") -> PushResult:
        """Write one run inside the caller's transaction."""
        run_id, n = run.header["run_id"], len(run.case_ids)
        planned = run.header.get("planned_cases")
        complete = n >= planned if isinstance(planned, int) else True
        with conn.cursor() as cur:
            # Pushes of the same run wait for each other; the lock goes with the transaction.
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [run_id])
            cur.execute(f"SELECT cases_done, complete FROM {SCHEMA}.runs WHERE run_id = %s", [run_id])
            row = cur.fetchone()
            done = row[0] if row else 0
            if row and done >= n and (row[1] or not complete):
                return PushResult(run_id, n, 0, 0, bool(row[1]))
            if done:  # the store's cases must be the run file's: the same run id from elsewhere is refused
                cur.execute(f"SELECT seq, case_id FROM {SCHEMA}.cases WHERE run_id = %s ORDER BY seq", [run_id])
                stored = cur.fetchall()
                if stored != list(enumerate(run.case_ids[:len(stored)])):
                    raise StoreError(f"run {run_id} in {self.name} holds other cases than {run.path}: "
                                     "two different runs share this id; nothing was pushed")
            cases_added = self._insert(cur, "cases", CASE_PG_COLUMNS, ["run_id", "seq"],
                                       b"".join(run.case_data[done:]), n - done)
            rows_added = self._insert(cur, "results", RESULT_PG_COLUMNS, ["run_id", "seq", "pos"],
                                      b"".join(run.result_data[done:]), sum(run.result_rows[done:]))
            values = {k: _clean(v) for k, v in run_row_of(run.header).items()}
            cur.execute(
                f"""INSERT INTO {SCHEMA}.runs (run_id, created, commit, harness_version, env_id, suite, env,
                        cases_done, suite_source, argv, planned_cases, complete)
                    VALUES (%(run_id)s, %(created)s, %(commit)s, %(harness_version)s, %(env_id)s, %(suite)s,
                            %(env)s, %(done)s, %(suite_source)s, %(argv)s, %(planned)s, %(complete)s)
                    ON CONFLICT (run_id) DO UPDATE SET cases_done = GREATEST(runs.cases_done, EXCLUDED.cases_done),
                        complete = runs.complete OR EXCLUDED.complete, pushed_at = now()""",
                {**values, "done": n, "planned": planned if isinstance(planned, int) else None,
                 "complete": complete})
        return PushResult(run_id, n, cases_added, rows_added, complete)

    @staticmethod
    def _insert(cur, table: str, columns: list[str], key: list[str], data: bytes, n_rows: int) -> int:
        """Add the rows (``data``, COPY binary tuples) the store lacks; returns how many were added.

        They are the cases past the run's ``cases_done``, read under the run's lock, so none is there
        yet and one COPY adds them all. Should one be there after all, the COPY is undone to its
        savepoint and the rows go through a scratch table with ``ON CONFLICT DO NOTHING``.
        """
        import psycopg

        if not n_rows:
            return 0
        cols = ", ".join(f'"{c}"' for c in columns)
        try:
            with cur.connection.transaction():  # a savepoint
                with cur.copy(f"COPY {SCHEMA}.{table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(COPY_HEADER + data + COPY_TRAILER)
            return n_rows
        except psycopg.errors.UniqueViolation:
            pass
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming_{table} (LIKE {SCHEMA}.{table}) ON COMMIT DROP")
        with cur.copy(f"COPY incoming_{table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(COPY_HEADER + data + COPY_TRAILER)
        cur.execute(f"INSERT INTO {SCHEMA}.{table} ({cols}) SELECT {cols} FROM incoming_{table} "
                    f"ON CONFLICT ({', '.join(key)}) DO NOTHING")
        added = cur.rowcount
        cur.execute(f"DROP TABLE incoming_{table}")
        return added

    # --- reading (ResultStore) ----------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = (), binary: bool = False) -> list[tuple]:
        with self.connect() as conn:
            if not self._ensure(conn, create=False):
                return []
            if binary:
                from psycopg.adapt import Loader
                from psycopg.pq import Format

                class Float8ArrayLoader(Loader):
                    format = Format.BINARY

                    def load(self, data):
                        return _load_float8_array(bytes(data))

                conn.adapters.register_loader(1022, Float8ArrayLoader)  # float8[]
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql, list(params))
                return cur.fetchall()

    def runs(self) -> pd.DataFrame:
        rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM {SCHEMA}.runs "
                          'ORDER BY created COLLATE "C", run_id COLLATE "C"')
        df = pd.DataFrame.from_records(rows, columns=RUN_COLUMNS)
        for c in RUN_COLUMNS:
            if c != "cases_done":
                df[c] = df[c].astype("str").where(df[c].notna())
        df["cases_done"] = df["cases_done"].astype("int32")
        return df

    def results(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        if run_ids is not None and not run_ids:
            return as_frame(pd.DataFrame(columns=RESULT_COLUMNS))
        where, params = ("", []) if run_ids is None else ("WHERE r.run_id = ANY(%s)", [list(run_ids)])
        # Only runs whose push committed have a runs row; the join keeps the frame to those.
        rows = self._read(
            f"SELECT {', '.join(f'r.{c}' for c in RESULT_COLUMNS)} FROM {SCHEMA}.results r "
            f"JOIN {SCHEMA}.runs USING (run_id) {where} "
            'ORDER BY r.created COLLATE "C", r.run_id COLLATE "C", r.seq, r.metric COLLATE "C", r.pos', params,
            binary=True)
        df = pd.DataFrame.from_records(rows, columns=RESULT_COLUMNS)
        df["samples"] = [pd.NA if s is None else s for s in df["samples"]]
        return as_frame(df)

    def cases(self, run_ids: Sequence[str]) -> pd.DataFrame:
        if not run_ids:
            return pd.DataFrame(columns=CASE_COLUMNS)
        rows = self._read(f"SELECT {', '.join(CASE_COLUMNS)} FROM {SCHEMA}.cases WHERE run_id = ANY(%s) "
                          "ORDER BY run_id, seq", [list(run_ids)])
        df = pd.DataFrame.from_records(rows, columns=CASE_COLUMNS)
        df["seq"] = df["seq"].astype("int32")
        return df


class RunPublisher:
    """Pushes a run to a team store as its cases finish (``costbench run --store URL``).

    Opened before anything runs, so a wrong URL, password or schema stops the run at once. A push
    that fails later only warns: the run file has everything, and ``costbench store push`` sends it again.
    """

    def __init__(self, url: str, results_dir: Path, run_file: Path | None = None):
        self.store = PgStore(url)
        self.store.check(create=True)
        self.results_dir = Path(results_dir)
        self.run_file = run_file
        self._before = {p.name for p in (self.results_dir / "runs").glob("*.jsonl")}
        self.failed: str | None = None

    def _find(self) -> Path | None:
        if self.run_file is None:  # a new run: the run file that appeared since the publisher opened
            new = [p for p in (self.results_dir / "runs").glob("*.jsonl") if p.name not in self._before]
            self.run_file = max(new, key=lambda p: p.stat().st_mtime_ns) if new else None
        return self.run_file

    def case_done(self) -> None:
        """Push what the run file holds now; never raises."""
        path = self._find()
        if path is not None:
            self._push(path)

    def finish(self, run_file: Path) -> PushResult | None:
        """Push the finished run; returns what the last push did, or None when it failed (see ``failed``)."""
        self.run_file = Path(run_file)
        return self._push(self.run_file)

    def _push(self, path: Path) -> PushResult | None:
        try:
            result = self.store.push_run(RunFile(path))
            self.failed = None
            return result
        except Exception as exc:  # noqa: BLE001 -- the run goes on; its run file is the source of truth
            self.failed = (f"{redact(str(exc))}; the run file has every case: costbench store push "
                           f"{self.results_dir} --to {self.store.name}")
            return None
