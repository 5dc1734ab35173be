"""Session-wide test settings: one artifact/model cache per test session, so tests never touch ~/.cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("costbench-cache")
    old = os.environ.get("COSTBENCH_CACHE_DIR")
    os.environ["COSTBENCH_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("COSTBENCH_CACHE_DIR", None)
    else:
        os.environ["COSTBENCH_CACHE_DIR"] = old


@pytest.fixture
def plugin_backends(monkeypatch):
    """Register the test-only backends in this process and in the per-case child processes."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("COSTBENCH_EXTRA_BACKENDS", "faulty=faulty_backend:FaultyBackend")
