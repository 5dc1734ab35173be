"""The documentation site: `mkdocs build --strict` passes without a warning, and its pages open in headless Chromium.

The build runs in a temporary folder (never site/ in the checkout); the site is served on 127.0.0.1 by an
http.server thread on an ephemeral port (search needs http, not file://), and the pages are opened through
the DevTools helper the report tests use (tests/reports/cdp_browser.py). Without Chromium the browser tests
skip with the reason; the build tests need only mkdocs (the `test` and `docs` extras).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reports"))  # cdp_browser.py sits beside the report tests

from cdp_browser import browser  # noqa: E402,F401 (the fixture)

pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' (the test extra has it)")
pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")

# Pages every check below opens, by their URL under the site root.
PAGES = ["", "getting-started/", "measurement/", "replication/", "serving/", "compression/", "backends/",
         "kernels/", "nvidia/", "fleet/", "reports/", "measured/", "architecture/"]


def build(config: Path, out: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of CONFIG into OUT; its output (warnings included) in stdout."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=config.parent,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"})


def warnings_of(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "ERROR" in line]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs-site") / "site"
    proc = build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0 and not warnings_of(proc), (
        f"mkdocs build --strict failed ({proc.returncode}):\n" + "\n".join(warnings_of(proc) or [proc.stderr[-3000:]]))
    return out


def test_site_builds_strict_without_warnings(site):
    for page in PAGES:
        assert (site / page / "index.html").is_file(), f"no page {page or 'home'} in the built site"
    index = json.loads((site / "search" / "search_index.json").read_text())
    titles = {d["title"] for d in index["docs"]}
    assert {"How it measures", "Serving: dynamic batching and the capacity search", "int8 GEMM kernels"} <= titles


@pytest.mark.parametrize("broken", ["[a page that is not there](nowhere.md)",
                                    "[an anchor that is not there](serving.md#no-such-heading)"])
def test_strict_build_fails_on_a_broken_link(tmp_path, broken):
    """The check above means something only if strict mode stops on a broken link between pages or anchors."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write(f"\n{broken}\n")
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert any("index.md" in w for w in warnings_of(proc)), proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ in Chromium


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        """Keep the test output free of one line per request."""


@pytest.fixture(scope="module")
def served(site):
    """The built site over http on 127.0.0.1 (an ephemeral port); yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()




STATE = """(() => ({
  title: document.title,
  h1: (document.querySelector('article h1') || {}).textContent || null,
  nav: [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')].map(a => a.textContent.trim()),
  tables: [...document.querySelectorAll('article table')].map(t => ({
    head: [...t.querySelectorAll('thead th')].map(th => th.textContent.trim()),
    rows: t.querySelectorAll('tbody tr').length})),
}))()"""


def test_home_page_renders_with_title_and_nav(browser, served):
    page = browser.open(served, settle_ms=500)
    try:
        state = page.evaluate(STATE)
        errors = page.collect_errors()
    finally:
        page.close()
    assert errors == []
    assert state["title"].startswith("costbench")
    assert state["h1"].strip().startswith("costbench")
    nav = " | ".join(state["nav"])
    for entry in ("How it measures", "Serving", "int8 GEMM kernels", "NVIDIA GPUs and TensorRT", "Prices",
                  "Measured here", "Architecture"):
        assert entry in nav, f"{entry!r} not in the navigation: {nav}"


@pytest.mark.parametrize("path", PAGES[1:])
def test_page_loads_without_errors(browser, served, path):
    page = browser.open(served + path, settle_ms=200)
    try:
        state = page.evaluate(STATE)
        errors = page.collect_errors()
    finally:
        page.close()
    assert errors == [], f"{path}: {errors}"
    assert state["h1"], f"{path}: no title"


def test_generated_table_is_an_html_table(browser, served):
    """The compression page's generated pivot (scripts/readme_tables.py) renders as real tables."""
    page = browser.open(served + "compression/", settle_ms=500)
    try:
        tables = page.evaluate(STATE)["tables"]
    finally:
        page.close()
    pivots = [t for t in tables if t["head"][:4] == ["variant", "torch ms", "onnxruntime ms", "openvino ms"]]
    assert len(pivots) == 3, tables  # digits-cnn, efficientnet-lite0, all-minilm-l6-v2
    assert all(t["rows"] >= 9 for t in pivots)


def test_search_index_is_served_and_searchable(browser, served):
    with urllib.request.urlopen(served + "search/search_index.json", timeout=10) as r:
        index = json.load(r)
    assert len({d["location"].split("#")[0] for d in index["docs"]}) >= len(PAGES)
    page = browser.open(served + "measurement/", settle_ms=500)
    try:
        found = page.evaluate("fetch('../search/search_index.json').then(r => r.json())"
                              ".then(j => j.docs.filter(d => /capacity search/i.test(d.text)).length)")
        # the theme's own search box: type a query, wait for its worker's results
        hits = page.evaluate("""(async () => {
          const input = document.querySelector('input.md-search__input');
          input.focus(); input.value = 'capacity'; input.dispatchEvent(new Event('input', {bubbles: true}));
          input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'y'}));
          for (let i = 0; i < 100; i++) {
            const items = document.querySelectorAll('.md-search-result__item');
            if (items.length) return [...items].map(li => li.textContent.trim().slice(0, 80));
            await new Promise(r => setTimeout(r, 100));
          }
          return [];
        })()""")
        errors = page.collect_errors()
    finally:
        page.close()
    assert errors == []
    assert found >= 1
    assert any("Serving" in h or "capacity" in h.lower() for h in hits), hits
