"""Headless Chromium over the DevTools protocol on a pipe: load a page, collect its errors, query its DOM.

``--remote-debugging-pipe`` makes Chromium read protocol messages (JSON, NUL-terminated) on fd 3
and write replies and events on fd 4, so no port, websocket library or network is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe"]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("#", "data:", "javascript:")):
                self.refs.append(f"<{tag} {name}={value}>")


def external_references(html: str) -> list[str]:
    """Every src/href in the page's tags that would load something (script bodies are not parsed as tags)."""
    parser = _Refs()
    parser.feed(html)
    return parser.refs


TRAMPOLINE = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
os.dup2(r, 3)
os.dup2(w, 4)
for fd in {r, w, int(sys.argv[1]), int(sys.argv[2])} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


def find_chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    """One loaded page: its DevTools session and every error it logged."""

    browser: "Browser"
    session: str
    errors: list[str] = field(default_factory=list)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """Run JavaScript in the page (promises awaited) and return its JSON value; a thrown error raises."""
        res = self.browser.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                     "returnByValue": True}, self.session, timeout)
        if "exceptionDetails" in res:
            raise AssertionError(f"page script failed: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res["result"].get("value")

    def collect_errors(self) -> list[str]:
        """Errors logged so far: uncaught exceptions, console.error/assert, and error log entries (CSP, network)."""
        for ev in self.browser.events(self.session):
            method, p = ev["method"], ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                self.errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                self.errors.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return self.errors

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.browser.targets.pop(self.session)})


class Browser:
    """A headless Chromium process driven over its DevTools pipe."""

    def __init__(self, executable: str, profile_dir: Path):
        self.log = Path(profile_dir).parent / f"{Path(profile_dir).name}-chromium.log"
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        # A tiny Python trampoline puts our pipe ends on fds 3 and 4, where --remote-debugging-pipe expects
        # them (POSIX sh cannot redirect fds above 9, and pytest's pipes are often above 9).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(to_browser_r), str(from_browser_w), executable, *FLAGS,
             f"--user-data-dir={profile_dir}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._events: list[dict] = []
        self.targets: dict[str, str] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._lock.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._lock:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self._events.append(msg)
                self._lock.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """Send one protocol command and wait for its reply."""
        with self._lock:
            self._next += 1
            ident = self._next
        msg = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(f"Chromium exited (code {self.proc.poll()}); its log ends:\n{self.log_tail()}") from None
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise TimeoutError(f"no reply to {method} from Chromium within {timeout} s; its log ends:\n"
                                       f"{self.log_tail()}")
                self._lock.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def events(self, session: str, method: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self._events if e.get("sessionId") == session and (method is None or e["method"] == method)]

    def wait_event(self, session: str, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                hits = [e for e in self._events if e.get("sessionId") == session and e["method"] == method]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {method} within {timeout} s")
                self._lock.wait(left)

    def open(self, path: Path | str, settle_ms: int = 300, timeout: float = 60) -> Page:
        """Load a local file (or an http URL) in a new tab, wait for its load event and a moment for scripts,
        and return it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.targets[session] = target
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.send(domain, session=session)
        http = isinstance(path, str) and path.startswith(("http://", "https://"))
        url = path if http else Path(path).resolve().as_uri()
        self.send("Page.navigate", {"url": url}, session)
        self.wait_event(session, "Page.loadEventFired", timeout)
        page = Page(self, session)
        page.evaluate(f"new Promise(r => setTimeout(r, {settle_ms}))")
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium driven over the DevTools pipe; skips only when Chromium is not installed.

    A fixture here, imported by the conftest and test modules that drive a browser."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (CI installs it with .ci/install-browser; "
                    "locally: apt-get install -y chromium)")
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()
