"""Opening a store, and the frames every report reads: ``open_store``, ``load_results``, ``list_runs``.

Run files (:mod:`.runfile`) are the source of truth. A results folder's queryable copy is DuckDB
(:mod:`.store_duckdb`); a ``postgresql://`` URL names a team store that runs are pushed to
(:mod:`.store_pg`). Both serve the same frames through :class:`ResultStore`. Stores are an open axis:
each registers in the ``costbench.stores`` entry-point group under the URL scheme it serves (a folder
is ``duckdb``), so a third party adds one as it adds a backend.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from costbench.core.plugins import PluginGroup

# Run files, the row vocabulary and the store interface are re-exported: callers know them from here.
from costbench.harness.results.runfile import (  # noqa: F401
    FRAME_DTYPES, RESULT_COLUMNS, RESULT_TYPES, RUNS_DIR, SCHEMA_VERSION, RunFile, case_rows_of, frame_of, redact,
    rows_of, run_files, run_row_of,
)
from costbench.harness.results.base import (  # noqa: F401
    CASE_COLUMNS, RUN_COLUMNS, RUN_LIST_COLUMNS, ResultStore, StoreError, as_frame, is_url, store_kind,
)
from costbench.harness.results.store_duckdb import STORE_FILE, Store  # noqa: F401



STORES = PluginGroup("costbench.stores", "COSTBENCH_EXTRA_STORES", "store")


def open_store(source: str | Path) -> ResultStore:
    """The store ``source`` names: a results folder (DuckDB), or a URL whose scheme names a registered store
    (``postgresql://...``: a team's PostgreSQL; psycopg is imported only then)."""
    kind = store_kind(source)
    try:
        cls = STORES.load(kind, ResultStore)
    except KeyError:
        raise StoreError(f"{redact(str(source))}: no store is registered for {kind!r} URLs; registered: "
                         f"{', '.join(STORES.names())}") from None
    return cls.open(source)


def load_results(source: str | Path = "results", run_id: str | None = None) -> pd.DataFrame:
    """All results of a results folder or a ``postgresql://`` store (or one run), one row per case and metric."""
    return open_store(source).results(None if run_id is None else [run_id])


def list_runs(source: str | Path = "results") -> pd.DataFrame:
    """One row per run: id, time, commit, environment, suite, cases recorded."""
    return open_store(source).runs()[RUN_LIST_COLUMNS].reset_index(drop=True)
