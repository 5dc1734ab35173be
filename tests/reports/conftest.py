"""Fixtures for report tests: synthetic run builders on sys.path, and one headless Chromium per module."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # synth_runs.py and cdp_browser.py sit beside the tests

from cdp_browser import browser  # noqa: E402,F401 (the fixture, one headless Chromium per module)
