"""Fixtures for report tests: synthetic run builders on sys.path, and one headless Chromium per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # synth_runs.py and cdp_browser.py sit beside the tests

from cdp_browser import Browser, find_chromium  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium driven over the DevTools pipe; skips only when Chromium is not installed."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (CI installs it with .ci/install-browser; "
                    "locally: apt-get install -y chromium)")
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()
