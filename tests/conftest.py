"""Session-wide test settings: one artifact/model cache per test session, so tests never touch ~/.cache;
one random seed per run, fresh each run, printed on failure so the failure can be replayed.

Tests draw random inputs from the ``rng`` (numpy) or ``torch_rng`` (torch) fixture, or take ``seed`` to
seed something else (a child process, a torch module's initialisation). Every test also starts with the
global generators (``random``, ``np.random``, torch's default generator) seeded from it, so code that
draws from them (``nn.Linear`` initialisation, ``torch.randn`` without a generator) replays too.
``COSTBENCH_TEST_SEED=N`` replays a run's seed.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGINS = Path(__file__).parent / "plugins"
SEED_ENV = "COSTBENCH_TEST_SEED"
_SEED = pytest.StashKey[int]()


def pytest_configure(config):
    raw = os.environ.get(SEED_ENV, "").strip()
    try:
        seed = int(raw) if raw else secrets.randbits(32)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV}={raw!r} is not an integer") from None
    if not 0 <= seed < 2**32:
        raise pytest.UsageError(f"{SEED_ENV}={seed} is outside [0, 2**32)")
    config.stash[_SEED] = seed


def _replay(seed: int) -> str:
    return f"{seed} (replay with {SEED_ENV}={seed})"


def pytest_report_header(config):
    return f"costbench test seed: {_replay(config.stash[_SEED])}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(("costbench test seed", _replay(item.config.stash[_SEED])))
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    result = yield  # the outermost wrapper: after the short test summary, the last line before the totals
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        terminalreporter.write_line(f"costbench test seed: {_replay(config.stash[_SEED])}")
    return result


@pytest.fixture(scope="session")
def seed(pytestconfig) -> int:
    """This run's seed: fresh each run, or ``$COSTBENCH_TEST_SEED``; failures print it."""
    return pytestconfig.stash[_SEED]


@pytest.fixture
def rng(seed) -> np.random.Generator:
    """A numpy generator seeded with this run's seed, fresh for each test."""
    return np.random.default_rng(seed)


@pytest.fixture
def torch_rng(seed):
    """A CPU torch generator seeded with this run's seed, fresh for each test."""
    import torch

    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _seed_global_generators(request, seed):
    """Every test starts with the global generators seeded from this run's seed (torch only if imported)."""
    request.node.user_properties.append(("seed", seed))
    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


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
    monkeypatch.setenv("COSTBENCH_EXTRA_BACKENDS",
                       "faulty=faulty_backend:FaultyBackend,linear-service=linear_service_backend:LinearServiceBackend")


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory) -> Path:
    """One artifact cache for the whole session, so a zoo model is trained or exported once (EfficientNet)."""
    return tmp_path_factory.mktemp("zoo-cache")
