"""The PostgreSQL team store on a real server: same frame as DuckDB, idempotent, atomic, many writers, clear errors."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reports"))  # synth_runs.py

from synth_runs import case, history_dir, server_case, write_run  # noqa: E402

from costbench.commands.cli import app  # noqa: E402
from costbench.harness.reports.data import list_all_runs, load_selection  # noqa: E402
from costbench.harness.results.runfile import SCHEMA_VERSION, RunFile  # noqa: E402
from costbench.harness.results.store import StoreError, list_runs, load_results  # noqa: E402
from costbench.harness.results.store_pg import SCHEMA, PgStore, prepare  # noqa: E402

psycopg = pytest.importorskip("psycopg", reason="the team store needs psycopg: pip install -e '.[fleet]'")


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty database on the session's server."""
    return pg_cluster.create_db(f"t_{uuid.uuid4().hex[:12]}")


def mixed_runs(root: Path) -> Path:
    """History runs plus one run with every kind of row: skipped, failed, server, runner-flagged, NaN values."""
    history_dir(root)
    nan_case = case(variant="int8-dynamic", seed=5)
    nan_case["metrics"][0]["value"] = float("nan")
    nan_case["metrics"][2]["samples"] = [1, 2.5, float("nan"), float("inf"), -0.0]  # ints, NaN, inf, -0 kept as such
    nan_case["metrics"][3]["samples"] = []
    write_run(root, "20260108-000000-mixed", [
        case(variant="fp32", runner_unstable=True, power_w=30.0),
        case(variant="int8", backend="openvino", status="skipped", reason="no VNNI [here]"),
        case(variant="fp16", status="failed", reason="crashed: segfault\nlast line"),
        server_case(max_qps=250.0), server_case(target_qps=100.0, slo_met=False, batch_size=4),
        nan_case,
    ], created="2026-01-08T00:00:00+00:00")
    return root


def table_dump(url: str) -> dict[str, list[tuple]]:
    """Every row of the store's tables (the runs' push times included: a push that adds nothing writes nothing)."""
    with psycopg.connect(url) as conn:
        # As text, so NaN equals NaN.
        return {t: conn.execute(f"SELECT x::text FROM {SCHEMA}.{t} x ORDER BY {order}").fetchall()
                for t, order in (("meta", "1"), ("runs", "run_id"), ("cases", "run_id, seq"),
                                 ("results", "run_id, seq, pos"))}


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    pd.testing.assert_frame_equal(a.drop(columns=["samples"]), b.drop(columns=["samples"]))
    for x, y in zip(a["samples"], b["samples"]):
        if x is pd.NA:
            assert y is pd.NA
        else:
            # DuckDB hands a NaN sample back masked; PostgreSQL keeps it NaN: the same missing sample.
            x = np.ma.filled(np.ma.asarray(x, dtype=np.float64), np.nan)
            assert isinstance(y, np.ndarray) and y.dtype == np.float64 and np.array_equal(x, y, equal_nan=True)
            assert np.array_equal(np.signbit(x), np.signbit(y))


def test_push_then_read_back_equals_duckdb(tmp_path, pg_url):
    d = mixed_runs(tmp_path / "results")
    pushed = PgStore(pg_url).push(d)
    assert [p.run_id for p in pushed] == [f.stem for f in sorted((d / "runs").glob("*.jsonl"))]
    assert all(p.complete and p.cases_added == p.cases for p in pushed)
    assert_same_frame(load_results(d), load_results(pg_url))
    assert_same_frame(load_results(d, "20260108-000000-mixed"), load_results(pg_url, "20260108-000000-mixed"))
    pd.testing.assert_frame_equal(list_runs(d), list_runs(pg_url))
    # What reports read: runs (with their fingerprints) and per-case provenance.
    local, team = load_selection([d]), load_selection([pg_url])
    assert_same_frame(local.results, team.results)
    assert team.runs["results_dir"].eq(PgStore(pg_url).name).all() and "s3cret" not in team.runs["results_dir"][0]
    pd.testing.assert_frame_equal(local.runs.drop(columns="results_dir"), team.runs.drop(columns="results_dir"))
    pd.testing.assert_frame_equal(local.cases.sort_values(["run_id", "seq"]).reset_index(drop=True),
                                  team.cases.sort_values(["run_id", "seq"]).reset_index(drop=True))


def test_a_nul_in_text_is_kept_visibly(tmp_path, pg_url):
    """PostgreSQL text cannot hold NUL (a crashed child's stderr might): it is stored as the four characters \\x00."""
    d = tmp_path / "results"
    write_run(d, "20260101-000000-nul", [case(variant="fp16", status="failed", reason="crashed: \x00 segfault")])
    PgStore(pg_url).push(d)
    assert load_results(pg_url)["reason"].tolist() == ["crashed: \\x00 segfault"]


def test_push_twice_changes_nothing(tmp_path, pg_url):
    d = mixed_runs(tmp_path / "results")
    store = PgStore(pg_url)
    store.push(d)
    before = table_dump(pg_url)
    again = store.push(d)
    assert all(p.cases_added == 0 and p.rows_added == 0 for p in again)
    assert table_dump(pg_url) == before


def test_a_growing_run_is_pushed_in_steps_and_complete_only_at_the_end(tmp_path, pg_url):
    d = tmp_path / "results"
    rf = write_run(d, "20260101-000000-grow", [case(variant="fp32")])
    header = rf.header()
    rf.path.write_text(rf.path.read_text().replace('"planned_cases": 1', '"planned_cases": 3'))
    assert RunFile(rf.path).header()["planned_cases"] == 3 and header["run_id"] == "20260101-000000-grow"
    store = PgStore(pg_url)
    first = store.push_run(rf)
    assert (first.cases_added, first.complete) == (1, False)
    for variant in ("int8", "fp16"):
        rf.append({**case(variant=variant), "run_id": "20260101-000000-grow"})
        store.push_run(rf)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT cases_done, complete FROM {SCHEMA}.runs").fetchall() == [(3, True)]
    assert_same_frame(load_results(d), load_results(pg_url))


def test_concurrent_overlapping_pushes_lose_and_duplicate_nothing(tmp_path, pg_url):
    shared = history_dir(tmp_path / "shared")
    a, b = tmp_path / "a", tmp_path / "b"
    for dest in (a, b):
        shutil.copytree(shared, dest, ignore=shutil.ignore_patterns("*.duckdb*"))
    write_run(a, "20260201-000000-only-a", [case(variant="fp32", seed=1), case(variant="int8", seed=2)])
    write_run(b, "20260202-000000-only-b", [case(variant="fp32", seed=3)])
    errors: list[BaseException] = []

    def push(d: Path) -> None:
        try:
            PgStore(pg_url).push(d)  # every writer creates the tables too: that must not collide either
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(d,)) for d in (a, b, a, b, b, a)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    union = tmp_path / "union"
    shutil.copytree(a, union, ignore=shutil.ignore_patterns("*.duckdb*"))
    shutil.copy(b / "runs" / "20260202-000000-only-b.jsonl", union / "runs")
    team = load_results(pg_url)
    assert not team.duplicated(["run_id", "seq", "metric"]).any()
    assert_same_frame(load_results(union), team)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.cases").fetchone()[0] == 7 * 3 + 2 + 1
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.meta").fetchone()[0] == 1


def test_a_push_in_flight_or_interrupted_is_invisible(tmp_path, pg_url):
    d = tmp_path / "results"
    write_run(d, "20260101-000000-done", [case(variant="fp32")])
    rf = write_run(d, "20260102-000000-half", [case(variant="fp32"), case(variant="int8")],
                   created="2026-01-02T00:00:00+00:00")
    store = PgStore(pg_url)
    store.push(d, ["20260101"])
    writer = store.connect()
    with writer.transaction():
        store._write_run(writer, prepare(rf))  # every row written, not yet committed
        seen = load_results(pg_url)
        assert set(seen["run_id"]) == {"20260101-000000-done"}
        assert list(list_runs(pg_url)["run_id"]) == ["20260101-000000-done"]
        writer.cancel()
        writer.close()  # the writer dies mid-push: its transaction is rolled back
    assert set(load_results(pg_url)["run_id"]) == {"20260101-000000-done"}
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.results WHERE run_id LIKE '%half'").fetchone()[0] == 0
    assert store.push(d)[1].cases_added == 2  # pushed again from the run file: all of it
    assert_same_frame(load_results(d), load_results(pg_url))


def test_wrong_password_user_database_host_or_url_say_what_is_wrong(tmp_path, pg_cluster, pg_url):
    cases = {
        pg_cluster.url(pg_url.rsplit("/", 1)[1].split("?")[0], password="wrong-pw"): "password authentication failed",
        pg_cluster.url("no_such_db"): "no such database",
        pg_cluster.url(user="nobody_here"): "password authentication failed",
        pg_cluster.url(password=None): "password",
        f"postgresql://u:pw@/db?host={tmp_path}/nowhere&port=1": "cannot reach the server",
        "postgresql://u:pw@/db?host=/tmp&bogus_option=1": "not a valid PostgreSQL URL",
    }
    for url, why in cases.items():
        with pytest.raises(StoreError) as info:
            load_results(url)
        msg = str(info.value)
        assert why in msg, msg
        assert "wrong-pw" not in msg and "s3cret" not in msg and ":pw@" not in msg, msg
        assert msg.startswith("PostgreSQL store postgresql://")


def test_password_from_pgpassword_and_never_stored(tmp_path, pg_url, monkeypatch):
    d = tmp_path / "results"
    rf = write_run(d, "20260101-000000-argv", [case()])
    text = rf.path.read_text().replace('"argv": ["costbench", "run", "suites/smoke.toml"]',
                                       f'"argv": ["costbench", "run", "s.toml", "--store", "{pg_url}"]')
    rf.path.write_text(text)
    password = "s3cret-pw"
    assert password in pg_url
    monkeypatch.setenv("PGPASSWORD", password)
    bare = pg_url.replace(f":{password}@", "@")
    PgStore(bare).push(d)
    with psycopg.connect(pg_url) as conn:
        for table in ("runs", "cases", "results"):
            rows = conn.execute(f"SELECT t::text FROM {SCHEMA}.{table} t").fetchall()
            assert rows and not any(password in r[0] for r in rows), table
    argv = json.loads(list_all_runs([pg_url])["argv"].map(json.dumps)[0])
    assert argv[-1] == pg_url.replace(password, "***")


def test_store_from_a_newer_costbench_is_refused(tmp_path, pg_url):
    d = mixed_runs(tmp_path / "results")
    PgStore(pg_url).push(d)
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE {SCHEMA}.meta SET schema_version = %s", [SCHEMA_VERSION + 1])
    before = table_dump(pg_url)
    write_run(d, "20260301-000000-new", [case()])
    for act in (lambda: load_results(pg_url), lambda: PgStore(pg_url).push(d), lambda: PgStore(pg_url).check()):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer costbench"):
            act()
    assert table_dump(pg_url) == before  # nothing written, nothing lost
    res = CliRunner().invoke(app, ["store", "push", str(d), "--to", pg_url])
    assert res.exit_code == 2 and "newer costbench" in res.output


def test_run_with_a_bad_store_stops_before_any_case(tmp_path, pg_cluster):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmodels = ["digits-cnn"]\nvariants = ["fp32"]\nbackends = ["onnxruntime"]\n'
                     '[[scenarios]]\nkind = "single_stream"\n')
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--store", pg_cluster.url(password="bad-pw")])
    assert res.exit_code == 2, res.output
    assert "password authentication failed" in res.output and "bad-pw" not in res.output
    assert not list(out.glob("runs/*.jsonl"))
    res = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--store", "mysql://x@y/z"])
    assert res.exit_code == 2 and "expected a PostgreSQL URL" in res.output


def test_cli_push_results_compare_report_dashboard(tmp_path, pg_url):
    d = mixed_runs(tmp_path / "results")
    runner = CliRunner()
    res = runner.invoke(app, ["store", "push", str(d), "--to", pg_url])
    assert res.exit_code == 0, res.output
    assert "pushed 8 run(s)" in res.output and "s3cret" not in res.output
    assert "already in the store" in runner.invoke(app, ["store", "push", str(d), "--to", pg_url, "--run", "202601"]
                                                   ).output

    res = runner.invoke(app, ["results", "--store", pg_url])
    assert res.exit_code == 0 and "20260108-000000-mixed" in res.output and "s3cret" not in res.output, res.output
    csv_team, csv_local = tmp_path / "team.csv", tmp_path / "local.csv"
    assert runner.invoke(app, ["results", "--store", pg_url, "--last", "--csv", str(csv_team)]).exit_code == 0
    assert runner.invoke(app, ["results", str(d), "--last", "--csv", str(csv_local)]).exit_code == 0
    assert csv_team.read_text() == csv_local.read_text()

    j_team, j_local = tmp_path / "team.json", tmp_path / "local.json"
    res = runner.invoke(app, ["compare", "20260101", "20260105", "--store", pg_url, "--json", str(j_team)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["compare", "20260101", "20260105", "-r", str(d), "--json", str(j_local)]).exit_code == 0
    team = json.loads(j_team.read_text())
    assert team == json.loads(j_local.read_text())
    assert team["counts"]["regressed"] >= 1  # int8 stepped up 25% at run 4: found through the store too

    res = runner.invoke(app, ["report", "20260108", "--store", pg_url, "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    local = runner.invoke(app, ["report", "20260108", "-r", str(d), "-o", str(tmp_path / "rep-local")])
    assert (tmp_path / "rep" / "report.csv").read_text() == (tmp_path / "rep-local" / "report.csv").read_text()
    assert local.exit_code == 0

    res = runner.invoke(app, ["dashboard", "--store", pg_url, "-o", str(tmp_path / "site")])
    assert res.exit_code == 0 and "8 run(s)" in res.output, res.output
    assert (tmp_path / "site" / "index.html").exists()
    res = runner.invoke(app, ["report", "last", "--store", pg_url.replace("s3cret-pw", "nope"), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "password authentication failed" in res.output and "nope" not in res.output


def test_run_pushes_each_case_as_it_ends(tmp_path, pg_url):
    """costbench run --store: a real run on a real model; the store ends up equal to the run file, argv redacted."""
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nmodels = ["digits-cnn"]\nvariants = ["fp32", "int8"]\nbackends = ["torch"]\n'
                     'timeout_s = 300\n[[scenarios]]\nkind = "single_stream"\nwarmup_count = 2\n'
                     'min_count = 20\nmin_duration_s = 0.05\n')
    out = tmp_path / "results"
    argv = sys.argv[:]
    try:
        sys.argv[:] = ["costbench", "run", str(suite), "--store", pg_url]  # what the run header records
        res = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--store", pg_url])
    finally:
        sys.argv[:] = argv
    assert res.exit_code == 0, res.output
    assert "pushed 2 case(s) to postgresql://costbench:***@" in res.output and "s3cret" not in res.output
    local = load_results(out)
    assert set(local["status"]) == {"ok", "skipped"}
    assert_same_frame(local, load_results(pg_url))
    assert "s3cret" not in next(out.glob("runs/*.jsonl")).read_text()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT cases_done, complete FROM {SCHEMA}.runs").fetchall() == [(2, True)]


def test_rows_already_in_the_store_are_skipped_not_doubled(tmp_path, pg_url):
    """Should the store hold rows past a run's cases_done (it never writes them so), a push adds only the rest."""
    d = mixed_runs(tmp_path / "results")
    store = PgStore(pg_url)
    store.push(d)
    before = table_dump(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE {SCHEMA}.runs SET cases_done = 1, complete = false")
        conn.execute(f"DELETE FROM {SCHEMA}.results WHERE run_id LIKE '%mixed' AND seq = 2")
    again = store.push(d)
    assert {p.run_id: p.rows_added for p in again if p.rows_added} == {"20260108-000000-mixed": 1}
    after = table_dump(pg_url)
    assert after["results"] == before["results"] and after["cases"] == before["cases"]
    assert_same_frame(load_results(d), load_results(pg_url))


def test_an_empty_store_reads_as_no_runs(tmp_path, pg_url):
    empty_local = load_results(tmp_path)
    team = load_results(pg_url)
    assert team.empty and team.dtypes.to_dict() == empty_local.dtypes.to_dict()
    assert list_runs(pg_url).empty and list(list_runs(pg_url).columns) == list(list_runs(tmp_path).columns)
    res = CliRunner().invoke(app, ["results", "--store", pg_url])
    assert res.exit_code == 2 and "no runs yet" in res.output


def test_redact_hides_passwords_in_urls_and_options():
    from costbench.harness.results.runfile import redact

    assert redact("postgresql://bob:pa%40ss@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("--store=postgres://bob:pw@/x?host=/tmp&password=pw2&port=5") == \
        "--store=postgres://bob:***@/x?host=/tmp&password=***&port=5"
    assert redact("host=db password=pw user=bob") == "host=db password=*** user=bob"
    assert redact("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert redact("suites/smoke.toml") == "suites/smoke.toml"


def test_publisher_pushes_each_case_and_only_warns_when_the_store_goes(tmp_path, pg_cluster, pg_url):
    from costbench.harness.results.store_pg import RunPublisher

    d = tmp_path / "results"
    write_run(d, "20260101-000000-old", [case()])  # already there before the run: not the run's file
    pub = RunPublisher(pg_url, d)
    rf = write_run(d, "20260102-000000-live", [case(variant="fp32")], created="2026-01-02T00:00:00+00:00")
    rf.path.write_text(rf.path.read_text().replace('"planned_cases": 1', '"planned_cases": 3'))

    def state():
        with psycopg.connect(pg_url) as conn:
            return conn.execute(f"SELECT run_id, cases_done, complete FROM {SCHEMA}.runs").fetchall()

    pub.case_done()
    assert state() == [("20260102-000000-live", 1, False)]
    rf.append({**case(variant="int8"), "run_id": "20260102-000000-live"})
    pub.case_done()
    assert state() == [("20260102-000000-live", 2, False)]
    rf.append({**case(variant="fp16"), "run_id": "20260102-000000-live"})
    assert pub.finish(rf.path).complete and state() == [("20260102-000000-live", 3, True)]

    # The store goes away mid-run: the run goes on, the push only warns and says how to send it later.
    db = pg_url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    rf.append({**case(variant="bf16"), "run_id": "20260102-000000-live"})
    pub.case_done()
    assert pub.finish(rf.path) is None
    assert "no such database" in pub.failed and f"costbench store push {d} --to" in pub.failed
    assert "s3cret" not in pub.failed
    assert len(RunFile(rf.path).cases()) == 4  # the run file has everything
