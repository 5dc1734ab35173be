"""The one interface every store serves to reports (DuckDB per results folder, PostgreSQL for a team)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import pandas as pd

from costbench.harness.results.runfile import FRAME_DTYPES, RESULT_COLUMNS

RUN_LIST_COLUMNS = ["run_id", "created", "commit", "env_id", "suite", "cases_done"]
RUN_COLUMNS = ["run_id", "created", "commit", "env_id", "suite", "suite_source", "argv", "env", "cases_done"]
CASE_COLUMNS = ["run_id", "seq", "case_id", "status", "spec", "info"]


class StoreError(RuntimeError):
    """A store that cannot be used: unreachable, refused, the wrong schema. The message says what to do."""


_SCHEME_ALIASES = {"postgres": "postgresql"}


def store_kind(source: str | Path) -> str:
    """The registered store that serves ``source``: a URL's scheme (``postgresql``), ``duckdb`` for a folder."""
    if isinstance(source, str) and "://" in source:
        scheme = source.split("://", 1)[0].lower()
        return _SCHEME_ALIASES.get(scheme, scheme)
    return "duckdb"


def is_url(source: str | Path) -> bool:
    """Whether ``source`` names a store by URL rather than a results folder."""
    return store_kind(source) != "duckdb"


class ResultStore(ABC):
    """What reports read: runs, their long-form result rows and per-case provenance, whichever database holds them."""

    @classmethod
    def open(cls, source: str | Path) -> "ResultStore":
        """The store ``source`` names (a folder or a URL of this store's scheme)."""
        return cls(str(source))

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the store is, for people and for grouping runs (never with a password)."""

    @abstractmethod
    def runs(self) -> pd.DataFrame:
        """One row per run (``RUN_COLUMNS``; env and argv as JSON text), oldest first."""

    @abstractmethod
    def results(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The ``load_results`` frame of these runs (all when None)."""

    @abstractmethod
    def cases(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """Per-case provenance of these runs (``CASE_COLUMNS``; spec and info as JSON text)."""


def as_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the load_results columns, order and dtypes (so every store serves the same frame)."""
    df = df.reindex(columns=RESULT_COLUMNS)
    for col, dtype in FRAME_DTYPES.items():
        if col == "samples":  # arrays (or NA) in an object column, even when there are no rows
            df[col] = df[col].astype(object)
            continue
        if dtype == "str":
            df[col] = df[col].astype("str").where(df[col].notna())
        elif dtype == "float64":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        else:
            df[col] = df[col].astype(dtype)
    return df.reset_index(drop=True)
