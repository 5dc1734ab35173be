"""The README's generated tables match the committed runs they name (scripts/readme_tables.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_is_what_its_runs_give(tables, capsys):
    code = tables.main(["--check"])
    assert code == 0, capsys.readouterr().out
    assert len(tables.BLOCK.findall((ROOT / "README.md").read_text())) >= 3


def test_an_edited_number_is_caught(tables, tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    m = next(b for b in tables.BLOCK.finditer(readme) if "\n| " in b["body"])  # a Markdown table
    body = m["body"]
    digit = next(i for i, ch in enumerate(body) if ch.isdigit() and i > body.index("\n| "))
    tampered = readme[: m.start("body") + digit] + str((int(body[digit]) + 1) % 10) + readme[m.start("body") + digit + 1:]
    copy = tmp_path / "README.md"
    copy.write_text(tampered)
    (tmp_path / "results").symlink_to(ROOT / "results")
    assert tables.main(["--check", "--readme", str(copy)]) == 1
    assert f"out of date: {m['gen']} {m['src']}" in capsys.readouterr().out
    assert tables.main(["--readme", str(copy)]) == 0  # rewriting restores what the run gives
    assert copy.read_text() == readme


def test_a_missing_source_is_named(tables, tmp_path, capsys):
    copy = tmp_path / "README.md"
    copy.write_text("x\n<!-- generated: cases results/reference/nowhere -->\n| old |\n<!-- end generated -->\n")
    assert tables.main(["--check", "--readme", str(copy)]) == 2
    assert "results/reference/nowhere does not exist" in capsys.readouterr().err
    assert "| old |" in copy.read_text()  # nothing written
