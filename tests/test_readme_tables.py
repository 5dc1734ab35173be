"""README.md's and the docs pages' generated tables match the committed runs they name (scripts/readme_tables.py)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_and_docs_are_what_their_runs_give(tables, capsys):
    code = tables.main(["--check"])  # README.md and every docs/**/*.md
    assert code == 0, capsys.readouterr().out
    files = tables.markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "measurement.md" in files
    blocks = {f.relative_to(ROOT).as_posix(): len(tables.BLOCK.findall(f.read_text())) for f in files}
    assert blocks["README.md"] >= 1
    # each block lives with its section's page
    for page in ("measured", "serving", "measurement", "reports", "kernels", "nvidia", "compression", "litert"):
        assert blocks[f"docs/{page}.md"] >= 1, blocks


def test_an_edited_number_in_a_docs_page_is_caught(tables, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for f in (ROOT / "docs").glob("*.md"):
        shutil.copy(f, tmp_path / "docs" / f.name)
    (tmp_path / "results").symlink_to(ROOT / "results")
    page = tmp_path / "docs" / "compression.md"
    text = page.read_text()
    m = next(b for b in tables.BLOCK.finditer(text) if "\n| " in b["body"])
    i = m.start("body") + m["body"].index("| fp32 |") + len("| fp32 |") + 1  # a digit of the first row
    assert text[i].isdigit()
    page.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])
    assert tables.main(["--check", "--root", str(tmp_path)]) == 1
    assert f"out of date: {m['gen']} {m['src']} (in docs/compression.md)" in capsys.readouterr().out
    assert tables.main(["--root", str(tmp_path), str(page)]) == 0  # rewriting restores what the run gives
    assert page.read_text() == text


def test_run_output_cut_to_one_model_and_rows(tables):
    src = ROOT / "results" / "reference" / "2026-11-30-amd-epyc-avx2-2vcpu" / "smoke"
    full = tables.gen_run_output(src, [])
    one = tables.gen_run_output(src, ["--model", "efficientnet-lite0"])
    assert "efficientnet-lite0" in one and "\ndigits-cnn\n" not in one and "\ndigits-cnn\n" in full
    assert "(the tables of digits-cnn are not shown)" in one
    rows = tables.gen_run_output(src, ["--model", "efficientnet-lite0", "--rows", "3"])
    measured = [line for line in rows.splitlines() if line.rstrip().endswith(" ok")]
    assert len(measured) == 3 and "(9 more measured row(s) are not shown)" in rows
    with pytest.raises(tables.SourceError, match="no model nope"):
        tables.gen_run_output(src, ["--model", "nope"])


def test_an_edited_number_is_caught(tables, tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    m = next(tables.BLOCK.finditer(readme))  # the smoke run's output: a table as costbench printed it
    body = m["body"]
    start = body.index("\n| ") if "\n| " in body else body.index(" ok\n")  # past the header, into a row
    digit = next(i for i, ch in enumerate(body) if ch.isdigit() and i > start)
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


def test_kernels_table_pairs_rounds_only_in_records_that_say_so(tables, rng):
    """A record written by the paired bench shows per-round ratios; an earlier one keeps its ratio of medians."""
    from costbench.commands.kernels import RATIO_PAIRED

    drift = rng.uniform(1.0, 2.0, size=9)  # each round's machine speed, shared by both samples of the round
    record = {"threads": 2, "peaks": {"avx512vnni": {"2": 800.0}},
              "shapes": [{"label": "t", "m": 64, "k": 64, "n": 64, "series": {
                  "costbench avx512vnni": {"times_s": list(1e-3 * drift)},
                  "onnxruntime MatMulInteger": {"times_s": list(1.2e-3 * drift)}}}]}
    paired = tables._kernels_table({**record, "ratio": RATIO_PAIRED})
    unpaired = tables._kernels_table(record)
    assert "| 1.20 [1.20–1.20] |" in paired, paired
    assert "| 1.20 [1.20–1.20] |" not in unpaired, unpaired
    # without a loop timed beside it, % of peak is the median GOPS over the peak measured at the start
    gops = 2 * 64**3 / np.median(1e-3 * drift) / 1e9
    assert f"| {100 * gops / 800:.0f}% |" in paired


def test_share_of_peak_takes_the_best_ceiling_measured(tables, rng):
    from costbench.commands.kernels import RATIO_PAIRED

    drift = np.concatenate([[1.0], rng.uniform(1.0, 3.0, size=8)])  # the machine's speed per round; one at full
    ops = 2.0 * 64**3
    loop_ops = 1e6
    ours = 1e-3 * np.sort(drift)  # our median: 1e-3 times drift's median
    record = {"threads": 2, "ratio": RATIO_PAIRED, "peaks": {"avx512vnni": {"2": 1e-3}},  # a start peak in a slow spell
              "shapes": [{"label": "t", "m": 64, "k": 64, "n": 64, "series": {
                  "costbench avx512vnni": {"times_s": list(ours)},
                  "peak loop avx512vnni": {"times_s": list(0.5e-3 * drift * loop_ops / ops), "ops": loop_ops}}}]}
    text = tables._kernels_table(record)
    share = 100 * (ops / np.median(ours)) / (loop_ops / (0.5e-3 * loop_ops / ops))  # over the fastest loop round
    assert f"| {share:.0f}% |" in text and "best rate" in text, text


def test_kernels_table_says_which_shapes_ours_handed_to_the_vnni_kernel(tables, rng):
    """An amx record names the K up to which ours ran the avx512vnni kernel; a record without it says nothing."""
    record = {"threads": 2, "peaks": {"amx": {"2": 9000.0}},
              "shapes": [{"label": "t", "m": 64, "k": 32, "n": 64, "series": {
                  "costbench amx": {"times_s": list(rng.uniform(1e-3, 2e-3, 5))}}}]}
    assert "K ≤ 64 run the avx512vnni kernel" in tables._kernels_table({**record, "vnni_max_k": 64})
    assert "avx512vnni kernel" not in tables._kernels_table(record)
