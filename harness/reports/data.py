"""What reports read: runs, result rows and per-case provenance from results folders and team stores."""

from __future__ import annotations

import difflib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from costbench.core.metrics import Series, catalogue
from costbench.harness.results.store import (
    CASE_COLUMNS, RESULT_COLUMNS, RUN_COLUMNS as STORE_RUN_COLUMNS, ResultStore, as_frame, is_url, open_store, run_files,
)

# A series is everything that names one measured quantity except the run it was measured in.
CASE_KEYS = ["model", "variant", "backend", "device", "scenario", "batch_size"]
SERIES_KEYS = CASE_KEYS + ["metric"]
RUN_COLUMNS = [c for c in STORE_RUN_COLUMNS if c != "cases_done"] + ["results_dir"]


class RunNotFound(LookupError):
    """A run reference that names no run, or more than one."""


@dataclass
class Selection:
    """Rows of the chosen runs: long-form results, one row per run, one row per case (with its provenance)."""

    results: pd.DataFrame
    runs: pd.DataFrame
    cases: pd.DataFrame

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's row as a dict."""
        return self.runs.set_index("run_id").loc[run_id].to_dict() | {"run_id": run_id}

    def info(self, run_id: str, case_id: str) -> dict[str, Any]:
        """The provenance ('info') recorded with one case, or {}."""
        hit = self.cases[(self.cases.run_id == run_id) & (self.cases.case_id == case_id)]
        return hit["info"].iloc[0] if len(hit) else {}


def _json(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return json.loads(value) if isinstance(value, str) else value


Source = str | Path  # a results folder, or a postgresql:// URL of a team store


def _stores(sources: Sequence[Source]) -> list[ResultStore]:
    """The store of each source: a results folder's DuckDB copy, or a team store (``postgresql://...``)."""
    stores = []
    for src in sources:
        if is_url(src):
            stores.append(open_store(src))
            continue
        d = Path(src)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such results folder")
        if run_files(d):
            stores.append(open_store(d))
    return stores


def list_all_runs(sources: Sequence[Source]) -> pd.DataFrame:
    """Every run in the given results folders and stores, oldest first; a run id found twice is taken from the first.

    ``results_dir`` names the store each run comes from (a folder, or a store URL without its password).
    """
    frames = []
    for s in _stores(sources):
        df = s.runs()
        df["results_dir"] = s.name
        frames.append(df)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=RUN_COLUMNS)
    runs = pd.concat(frames, ignore_index=True).drop_duplicates("run_id", keep="first")
    runs["env"] = runs["env"].map(_json)
    runs["argv"] = runs["argv"].map(_json)
    return runs.sort_values(["created", "run_id"], kind="stable").reset_index(drop=True)[RUN_COLUMNS]


def resolve_runs(refs: Iterable[str], runs: pd.DataFrame) -> list[str]:
    """Run ids for references: an exact id, a unique prefix, or 'last'. Unknown ones name similar ids."""
    ids = [str(r) for r in runs["run_id"]]
    out: list[str] = []
    for ref in refs:
        if ref in ("last", "latest"):
            if not ids:
                raise RunNotFound("no runs in the results folders")
            hit = [ids[-1]]
        else:
            hit = [r for r in ids if r == ref] or [r for r in ids if r.startswith(ref)]
        if len(hit) > 1:
            raise RunNotFound(f"run {ref!r} is ambiguous: it starts {len(hit)} run ids ({', '.join(hit[:6])}"
                              f"{', …' if len(hit) > 6 else ''}); give more characters")
        if not hit:
            similar = difflib.get_close_matches(ref, ids, n=5, cutoff=0.5)
            hint = (f"similar: {', '.join(similar)}" if similar else
                    f"most recent: {', '.join(ids[-5:])}" if ids else "there are no runs yet")
            raise RunNotFound(f"run {ref!r}: no such run; {hint}")
        if hit[0] not in out:
            out.append(hit[0])
    return out


def load_selection(sources: Sequence[Source], run_ids: Sequence[str] | None = None,
                   runs: pd.DataFrame | None = None) -> Selection:
    """Result rows, runs and cases of ``run_ids`` (all runs when None) from the stores of ``sources``.

    ``runs`` is ``list_all_runs(sources)`` when the caller already has it.
    """
    runs = list_all_runs(sources) if runs is None else runs
    if run_ids is not None:
        runs = runs[runs["run_id"].isin(list(run_ids))]
    stores = {s.name: s for s in _stores(sources)}
    results, cases = [], []
    for name, group in runs.groupby("results_dir", sort=False):
        store = stores.get(name) or open_store(Path(name))
        ids = group["run_id"].tolist()
        results.append(store.results(ids))
        cases.append(store.cases(ids))
    res = pd.concat(results, ignore_index=True) if results else as_frame(pd.DataFrame(columns=RESULT_COLUMNS))
    res["batch_size"] = res["batch_size"].astype("Int64")
    res["value"] = pd.to_numeric(res["value"], errors="coerce")
    cas = pd.concat(cases, ignore_index=True) if cases else pd.DataFrame(columns=CASE_COLUMNS)
    cas["spec"] = cas["spec"].map(_json)
    cas["info"] = cas["info"].map(lambda v: _json(v) or {})
    return Selection(res[RESULT_COLUMNS].reset_index(drop=True), runs.reset_index(drop=True), cas)


# --- Describing environments ---------------------------------------------------------------------------

def describe_env(env: dict[str, Any] | None) -> str:
    """A short machine description from a fingerprint: CPU, threads, GPUs."""
    key = (env or {}).get("key") or {}
    if not key:
        return "unknown machine"
    parts = [str(key.get("cpu_model") or "unknown CPU")]
    if key.get("logical_cores"):
        parts.append(f"{key['logical_cores']} threads")
    gpus = key.get("gpus") or []
    if gpus:
        names = [g.get("name", "GPU") for g in gpus]
        parts.append(", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names)))
    return ", ".join(parts)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def env_differences(a: dict[str, Any] | None, b: dict[str, Any] | None, limit: int = 8) -> list[str]:
    """What differs in the comparability keys of two fingerprints, e.g. 'libraries.onnxruntime: 1.31.0 → 1.32.0'."""
    fa, fb = _flatten((a or {}).get("key") or {}), _flatten((b or {}).get("key") or {})
    diffs = [f"{k}: {fa.get(k, '-')} → {fb.get(k, '-')}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return diffs[:limit] + ([f"… and {len(diffs) - limit} more"] if len(diffs) > limit else [])


# --- Reproducing a point -------------------------------------------------------------------------------

def _display_path(path: str | None) -> str:
    if not path:
        return "SUITE.toml"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def reproduce_command(run: dict[str, Any], case: dict[str, Any], info: dict[str, Any] | None = None) -> str:
    """The shell command that measures this case again at the commit it was measured at."""
    if info and info.get("reproduce"):  # imported results carry their own (e.g. a pytest invocation)
        return str(info["reproduce"])
    only = " ".join(f"--only {shlex.quote(f'{k}={case[k]}')}" for k in CASE_KEYS if case.get(k) is not None)
    cmd = f"costbench run {shlex.quote(_display_path(run.get('suite_source')))} {only}"
    commit = run.get("commit")
    if commit:
        clean = str(commit).removesuffix("-dirty")
        cmd = f"git checkout {clean[:12]} && {cmd}"
        if str(commit).endswith("-dirty"):
            cmd += "  # measured with uncommitted changes"
    return cmd


def samples_of(value: Any) -> np.ndarray | None:
    """A result row's raw samples as a float array, or None when the row has none (None, NA, empty)."""
    if value is None or value is pd.NA or isinstance(value, float):
        return None
    arr = np.asarray(value, dtype=float)
    return arr if arr.size else None


def row_details(row: Any) -> dict[str, Any]:
    """A result row's ``details`` as a dict (the store keeps them as JSON text; missing: empty)."""
    d = row["details"]
    if isinstance(d, str):
        d = json.loads(d)
    return d if isinstance(d, dict) else {}


def runner_flags(df: pd.DataFrame) -> dict[tuple, str]:
    """Cases the runner flagged unstable (an ``unstable`` row = 1: its processes' spread, or a single process's CV,
    far above its history on that env_id).

    Keyed by (run_id, *CASE_KEYS); the value says why, for a person.
    """
    rows = df[(df["metric"] == "unstable") & (df["value"] == 1.0)]
    out = {}
    for r in rows.to_dict("records"):
        d = row_details(r)
        cv, usual = d.get("cv"), d.get("history_median_cv")
        spread, usual_spread = d.get("spread"), d.get("history_median")
        if isinstance(spread, float) and isinstance(usual_spread, float):
            why = (f"the runner flagged it unstable (its processes disagree by {spread:.1%}, sd of log medians, vs "
                   f"{usual_spread:.1%} usual on this machine)")
        elif isinstance(cv, float) and isinstance(usual, float):
            why = f"the runner flagged it unstable (CV {cv:.1%} vs {usual:.1%} usual on this machine)"
        else:
            why = "the runner flagged it unstable"
        out[(r["run_id"], *(r[k] for k in CASE_KEYS))] = why
    return out


def series_label(row: dict[str, Any] | pd.Series, with_metric: bool = True) -> str:
    """'model / variant / backend (device) / scenario / bN[ / metric]'."""
    backend = row["backend"] if row["device"] == "cpu" else f"{row['backend']} ({row['device']})"
    label = f"{row['model']} / {row['variant']} / {backend} / {row['scenario']} / b{row['batch_size']}"
    return f"{label} / {row['metric']}" if with_metric else label


def short_commit(commit: Any) -> str:
    if not commit or (isinstance(commit, float) and pd.isna(commit)):
        return "no-commit"
    c = str(commit)
    return c[:7] + ("+" if c.endswith("-dirty") else "")


def scenarios_leading_with(df: pd.DataFrame, *kinds: str) -> list[str]:
    """Labels of the scenarios in ``df`` (in order) whose kind leads with a metric of one of ``kinds``.

    Scenario labels are the user's; each row carries its scenario's registered kind, and the metric
    catalogue says what that kind leads with: "latency" (single-stream), "throughput" (offline),
    "capacity" (server), or whatever a plugin scenario declares.
    """
    cat = catalogue()
    labels = []
    for label, kind in df.drop_duplicates("scenario")[["scenario", "scenario_kind"]].itertuples(index=False):
        entry = cat.scenarios.get(kind)
        if entry is not None and cat.metrics[entry.headline].kind in kinds:
            labels.append(label)
    return labels


def primary_series(df: pd.DataFrame, label: str) -> Series:
    """The primary latency series of scenario ``label`` in ``df``."""
    kind = df.loc[df["scenario"] == label, "scenario_kind"].iloc[0]
    return catalogue().primary_series(kind)
