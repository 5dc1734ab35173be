"""When a case's failure will repeat: stop starting its processes, record it once, and say so.

A case is measured in several processes (the unit of replication). A failure while building the artifact
or preparing the session repeats in every one of them (nothing there varies between processes), and a
failure that two processes hit the same way is taken to be the case's, not the machine's: starting the
remaining processes would only cost their time, up to the case's timeout each for a backend that hangs.
A case with any process that succeeded is never stopped: its failures vary, and are counted as they are.
"""

from __future__ import annotations

import re
from typing import Any

from costbench.harness.measure.stages import REPEATING

_NUMBER = re.compile(r"\d+(\.\d+)?")


def cause(reason: str) -> str:
    """A failure's reason without its numbers (sizes, times, addresses), so that the same failure matches."""
    return _NUMBER.sub("#", reason).strip()


def why_stop(records: list[dict[str, Any]]) -> str | None:
    """Why the case's remaining processes should not start, given its processes' records so far; None: go on."""
    if any(r.get("status") == "ok" for r in records):
        return None
    failed = [r for r in records if r.get("status") == "failed"]
    for r in failed:
        stage = (r.get("info") or {}).get("stage")
        if stage in REPEATING:
            what = "building the artifact" if stage == "build" else "preparing the session"
            return f"process {r.get('process', 0)} failed while {what}, which no process of a case does differently"
    seen: dict[str, Any] = {}
    for r in failed:
        key = cause(r.get("reason", ""))
        if key in seen:
            return f"processes {seen[key]} and {r.get('process', 0)} failed the same way"
        seen[key] = r.get("process", 0)
    return None
