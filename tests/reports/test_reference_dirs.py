"""The committed reference runs (results/reference/<date>-<machine>/<what>/) are read by default."""

from typer.testing import CliRunner

from costbench.commands.cli import app
from costbench.commands.reports import reference_dirs
from synth_runs import case, write_run


def test_report_and_dashboard_read_every_reference_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "results", "20260101-000000-local1", [case(variant="fp32")])
    write_run(tmp_path / "results/reference/2026-11-29-box/litert", "20261129-000000-ref001", [case(variant="int8")])
    write_run(tmp_path / "results/reference/2026-11-29-box/crosscheck-only", "20261129-000000-ref002",
              [case(variant="int8-nncf")])
    found = reference_dirs()
    assert [p.as_posix() for p in found] == ["results/reference/2026-11-29-box/crosscheck-only",
                                             "results/reference/2026-11-29-box/litert"]
    runner = CliRunner()
    out = runner.invoke(app, ["report", "20260101-000000-local1", "20261129-000000-ref001", "20261129-000000-ref002",
                              "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    md = next((tmp_path / "rep").glob("*.md")).read_text()
    assert all(r in md for r in ("20260101-000000-local1", "20261129-000000-ref001", "20261129-000000-ref002"))
    out = runner.invoke(app, ["dashboard", "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    data = (tmp_path / "site" / "dashboard.json").read_text()
    assert "20261129-000000-ref001" in data and "20260101-000000-local1" in data
