"""The layers go one way (docs/architecture.md): commands > harness > backends > kernels > core.

Two checks, both over every import (module level, inside functions, and modules loaded by name):
import-linter's contracts from pyproject.toml, run on the tree laid out as it installs, and our own
scan for import circles, which also follows the registries' entry points to the plugins they load.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from import_graph import build_graph

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Where each registry loads its entry-point group (the edge registry -> plugin that importlib makes).
REGISTRY_LOADERS = {
    "costbench.backends": "costbench.backends.registry",
    "costbench.recipes": "costbench.harness.build.compress.registry",
    "costbench.models": "costbench.harness.build.zoo.registry",
    "costbench.scenarios": "costbench.harness.measure.scenarios.registry",
    "costbench.executors": "costbench.harness.execute.registry",
    "costbench.stores": "costbench.harness.results.store",
}


def _package_roots() -> dict[str, Path]:
    """Top packages of each folder, from pyproject's package-dir (subpackages live inside their folder)."""
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    return {pkg: ROOT / folder for pkg, folder in dirs.items()
            if not any(pkg.startswith(other + ".") and folder.startswith(dirs[other] + "/") for other in dirs)}


def _extensions() -> set[str]:
    return set(re.findall(r'Extension\(\s*"([\w.]+)"', (ROOT / "setup.py").read_text()))


def _graph():
    groups = PYPROJECT["project"]["entry-points"]
    entry_points = {group: (loader, list(groups.get(group, {}).values())) for group, loader in REGISTRY_LOADERS.items()}
    return build_graph(_package_roots(), entry_points, _extensions())


def test_every_registry_group_has_a_loader():
    groups = set(PYPROJECT["project"]["entry-points"])
    assert groups == set(REGISTRY_LOADERS), "a new plugin group needs its loader here, so its imports are followed"
    graph = _graph()
    for loader in REGISTRY_LOADERS.values():
        assert loader in graph.files


def test_no_import_circles():
    graph = _graph()
    assert len(graph.files) > 80  # the whole tree was scanned, not an empty folder
    cycles = graph.cycles()
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("lower", ["costbench.core", "costbench.kernels", "costbench.backends", "costbench.harness"])
def test_lower_layers_never_import_higher_ones(lower):
    order = ["costbench.core", "costbench.kernels", "costbench.backends", "costbench.harness", "costbench.api",
             "costbench.commands"]
    higher = tuple(order[order.index(lower) + 1:])
    graph = _graph()
    assert any(m.startswith(lower) for m in graph.files)
    bad = graph.violations(lower, higher)
    assert not bad, f"{lower} imports from a higher layer:\n" + "\n".join(bad)


def test_import_linter_contracts(tmp_path):
    """import-linter on the tree as it installs (the editable layout spreads one package over several folders)."""
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    site = tmp_path / "site"
    for pkg, folder in _package_roots().items():
        shutil.copytree(folder, site.joinpath(*pkg.split(".")), ignore=shutil.ignore_patterns("__pycache__", "*.so", "csrc"),
                        dirs_exist_ok=True)
    config = tmp_path / "importlinter.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = len(PYPROJECT["tool"]["importlinter"]["contracts"])
    assert "0 broken" in proc.stdout and f"Contracts: {kept} kept" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_circles_through_functions_strings_and_entry_points(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": "import importlib\nimportlib.import_module('pkg.a')\n",
        "pkg/reg.py": "",
        "pkg/plug.py": "from .reg import x\n",
        "pkg/leaf.py": "from pkg import _ext\n",
    })
    graph = build_graph({"pkg": tmp_path / "pkg"}, {"g": ("pkg.reg", ["pkg.plug:Plug"])}, {"pkg._ext"})
    assert graph.cycles() == [["pkg.a", "pkg.b"], ["pkg.plug", "pkg.reg"]]
    assert "pkg" not in graph.edges.get("pkg.leaf", {})  # the compiled extension is a leaf, not the package


def test_checker_finds_an_upward_import(tmp_path):
    _write(tmp_path, {"low/__init__.py": "", "low/m.py": "def f():\n    import high.x\n",
                      "high/__init__.py": "", "high/x.py": "import low.m\n"})
    graph = build_graph({"low": tmp_path / "low", "high": tmp_path / "high"})
    assert graph.violations("low", ("high",)) == [f"{tmp_path / 'low' / 'm.py'}:2 low.m -> high.x"]


def test_no_part_of_the_harness_holds_more_than_a_quarter_of_the_package():
    """The harness stays split by responsibility: no subpackage grows into the whole (issue: 63% was one folder)."""
    roots = _package_roots()
    lines = {path: len(path.read_text().splitlines()) for root in roots.values() for path in root.rglob("*.py")}
    total = sum(lines.values())
    parts = [p for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert len(parts) >= 6
    for part in parts:
        share = sum(n for path, n in lines.items() if path.is_relative_to(part)) / total
        assert share <= 0.25, f"harness/{part.name} holds {share:.0%} of the package's {total} lines"
