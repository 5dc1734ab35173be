"""The checkout never shadows an installed package, ours or anyone's, when its root is on ``sys.path``.

``python -m`` and ``python -c`` run from the repository root put the root first on ``sys.path``, where
the folders ``harness/``, ``backends/``, ``kernels/`` and ``costbench/`` would answer to their bare
names (``costbench/_checkout.py`` makes them step aside). Checked against the editable install these
tests run in and against a non-editable install of the same tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    ["-m", "costbench.harness.measure.worker", "--help"],
    ["-c", "import costbench.harness, costbench.kernels, costbench.backends; print(costbench.harness.__file__)"],
    # Transformers >= 5.25 imports Hugging Face's `kernels` when it is installed: not our kernels/ folder.
    ["-c", "import transformers.integrations.hub_kernels"],
    ["-c", "import importlib.util as u, kernels; assert u.find_spec('kernels').origin == kernels.__file__; "
           "assert 'costbench' not in (kernels.__doc__ or ''), kernels.__file__"],
]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _has_hf_kernels() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return bool(version("kernels"))
    except PackageNotFoundError:
        return False


def _commands() -> list[list[str]]:
    # Without Hugging Face's `kernels` installed, the bare name must not import at all.
    if _has_hf_kernels():
        return COMMANDS
    return COMMANDS[:3] + [["-c", "import kernels"]]


def _check(env: dict[str, str], expect_under: Path) -> None:
    for args in _commands():
        proc = _run(args, env)
        if args == ["-c", "import kernels"]:
            assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr, proc.stderr[-2000:]
            continue
        assert proc.returncode == 0, f"python {' '.join(args)} from {ROOT} failed:\n{proc.stderr[-3000:]}"
        if "print(costbench.harness.__file__)" in args[-1]:
            assert Path(proc.stdout.strip()).resolve().is_relative_to(expect_under), proc.stdout


def test_editable_install_from_repository_root():
    import costbench.harness

    here = Path(costbench.harness.__file__).resolve()
    if not here.is_relative_to(ROOT):
        pytest.skip(f"costbench is not installed editable from this checkout (it is at {here})")
    _check(dict(os.environ), ROOT)


def test_non_editable_install_from_repository_root(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("costbench", "harness", "backends", "kernels"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    # The installed tree first, as site-packages would be; the checkout's root still ahead of it (cwd).
    env = {**os.environ, "PYTHONPATH": str(target)}
    _check(env, target)
    proc = _run(["-c", "import costbench, costbench.core; print(costbench.__file__, costbench.core.__file__)"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(Path(p).resolve().is_relative_to(target) for p in proc.stdout.split()), proc.stdout
