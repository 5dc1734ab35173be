"""The PostgreSQL team store's own cost, printed (never asserted): push and read-back time, concurrent pushes' counts.

    python benchmarks/store_pg.py [--rows 100000] [--url postgresql://...]

- 100,000 result rows (run files shaped like the runner's: 7 metric rows per case, 200 raw samples on
  each p50 row) pushed with ``PgStore.push`` and read back through ``load_results(URL)``, three times
  into fresh databases (the median is printed, and each); the DuckDB
  store's sync + read of the same run files is printed beside it;
- two pushes at once, from two processes, of overlapping sets of runs into an empty store: rows and
  cases in the store against what the run files hold (nothing lost, nothing twice).
Goal (issue 14, on a 2-core machine): push + read back under 10 s.

Without ``--url`` it starts a throwaway cluster (initdb + pg_ctl on a Unix socket, as the tests do).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "harness"), str(ROOT / "tests" / "reports")]

from synth_runs import case as synth_case, make_env  # noqa: E402

from costbench.harness.results.runfile import RUNS_DIR  # noqa: E402
from costbench.harness.results.store import load_results  # noqa: E402
from costbench.harness.results.store_pg import SCHEMA, PgStore  # noqa: E402

ROWS_PER_CASE = 7


def write_runs(root: Path, n_rows: int, n_runs: int = 50) -> list[Path]:
    """``n_runs`` run files holding about ``n_rows`` result rows (written plainly: no fsync per case)."""
    env = make_env()
    template = synth_case()
    assert len(template["metrics"]) == ROWS_PER_CASE
    per_run = -(-n_rows // (ROWS_PER_CASE * n_runs))
    (root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(n_runs):
        run_id = f"20260101-{r:06d}-bench"
        header = {"type": "run", "run_id": run_id, "created": f"2026-01-01T00:00:{r % 60:02d}+00:00",
                  "commit": "b" * 40, "harness_version": "0.1.0", "env_id": env["env_id"], "env": env,
                  "suite": {"name": "bench", "source": "suites/bench.toml"}, "planned_cases": per_run,
                  "argv": ["costbench", "run", "suites/bench.toml"]}
        lines = [json.dumps(header)]
        for i in range(per_run):
            spec = {**template["case"], "model": f"model-{i}", "case_id": f"model-{i}-{template['case']['case_id']}"}
            lines.append(json.dumps({**template, "case": spec, "run_id": run_id}))
        path = root / RUNS_DIR / f"{run_id}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def _push(url: str, results_dir: str) -> None:
    PgStore(url).push(Path(results_dir))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="Push and read back this many times (median shown).")
    ap.add_argument("--url", help="An existing server to create two scratch databases on (default: a throwaway one).")
    args = ap.parse_args()

    cluster = None
    if args.url is None:
        from pg_cluster import start_cluster

        cluster = start_cluster(port=54339)
    tmp = Path(tempfile.mkdtemp(prefix="costbench-store-bench-"))
    try:
        def new_db() -> str:
            if cluster:
                return cluster.create_db(f"bench_{uuid.uuid4().hex[:8]}")
            import psycopg

            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return args.url.replace(args.url.split("?")[0].rsplit("/", 1)[1], name, 1)

        full = tmp / "all"
        paths = write_runs(full, args.rows)
        pushes, reads = [], []
        for _ in range(args.repeat):  # each into a fresh database: this machine's load varies from minute to minute
            url = new_db()
            t0 = time.perf_counter()
            pushed = PgStore(url).push(full)
            pushes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            df = load_results(url)
            reads.append(time.perf_counter() - t0)
        t_push, t_read = statistics.median(pushes), statistics.median(reads)
        t0 = time.perf_counter()
        local = load_results(full)
        t_duck = time.perf_counter() - t0
        rows = sum(p.rows_added for p in pushed)
        assert len(df) == len(local) == rows, (len(df), len(local), rows)
        t0 = time.perf_counter()
        again = PgStore(url).push(full)
        t_again = time.perf_counter() - t0

        # Two processes push overlapping halves (runs 0-34 and 15-49) into an empty store at once.
        a, b = tmp / "a", tmp / "b"
        for dest, part in ((a, paths[:35]), (b, paths[15:])):
            (dest / RUNS_DIR).mkdir(parents=True)
            for p in part:
                shutil.copy(p, dest / RUNS_DIR)
        url2 = new_db()
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_push, args=(url2, str(d))) for d in (a, b)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        t_conc = time.perf_counter() - t0
        import psycopg

        with psycopg.connect(url2) as conn:
            stored_rows = conn.execute(f"SELECT count(*) FROM {SCHEMA}.results").fetchone()[0]
            distinct = conn.execute(f"SELECT count(DISTINCT (run_id, seq, metric)) FROM {SCHEMA}.results").fetchone()[0]
            stored_cases = conn.execute(f"SELECT count(*) FROM {SCHEMA}.cases").fetchone()[0]
            complete = conn.execute(f"SELECT count(*) FROM {SCHEMA}.runs WHERE complete").fetchone()[0]
        expected_cases = sum(p.cases for p in pushed)
        out = {
            "rows": rows, "samples_per_p50_row": len(df["samples"].dropna().iloc[0]),
            "push_s": round(t_push, 2), "read_s": round(t_read, 2), "push_plus_read_s": round(t_push + t_read, 2),
            "push_s_each": [round(t, 2) for t in pushes], "read_s_each": [round(t, 2) for t in reads],
            "push_plus_read_s_each": [round(a + b, 2) for a, b in zip(pushes, reads)],
            "push_again_s": round(t_again, 2), "push_again_rows_added": sum(p.rows_added for p in again),
            "duckdb_sync_plus_read_s": round(t_duck, 2),
            "concurrent": {"processes": [p.exitcode for p in procs], "s": round(t_conc, 2),
                           "rows_in_run_files": rows, "rows_stored": stored_rows, "distinct_rows": distinct,
                           "cases_in_run_files": expected_cases, "cases_stored": stored_cases,
                           "runs_complete": complete, "runs": len(paths)},
        }
        each = ", ".join(f"{a + b:.1f}" for a, b in zip(pushes, reads))
        print(f"{rows:,} rows: push {t_push:.2f} s + read back (load_results) {t_read:.2f} s = {t_push + t_read:.2f} s "
              f"(median of {len(pushes)}: {each} s; goal < 10 s); push again {t_again:.2f} s, {out['push_again_rows_added']} rows added; "
              f"DuckDB sync + read of the same files {t_duck:.2f} s")
        print(f"two concurrent overlapping pushes ({t_conc:.2f} s): {stored_rows:,} rows stored ({distinct:,} distinct) "
              f"of {rows:,} in the run files; {stored_cases:,} of {expected_cases:,} cases; "
              f"{complete}/{len(paths)} runs complete")
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
