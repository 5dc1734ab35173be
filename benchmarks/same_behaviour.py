"""Did a change keep costbench's behaviour? Two runs of one suite (old commit, new commit, one shared cache).

    python benchmarks/same_behaviour.py OLD_RESULTS NEW_RESULTS

Compares, case by case: status, reason, the set of metric names, and every value that does not come from a
clock (the metric catalogue's size, accuracy, parity and setting kinds). Timings are left to ``costbench
compare``, which tests them across processes. Exit 1 on any difference; each one is listed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from costbench.core.metrics import catalogue

NOT_FROM_A_CLOCK = ("size", "accuracy", "parity", "setting")


def cases(results_dir: Path) -> dict[tuple, dict]:
    (run_file,) = sorted((results_dir / "runs").glob("*.jsonl"))
    out = {}
    for line in run_file.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "case":
            c = rec["case"]
            key = (c["model"], c["variant"], c["backend"], c["device"], c["scenario"], c["batch_size"], rec["process"])
            out[key] = {"status": rec["status"], "reason": rec.get("reason", ""),
                        "metrics": {m["metric"]: m.get("value") for m in rec.get("metrics") or []}}
    return out


def differences(old: dict[tuple, dict], new: dict[tuple, dict]) -> tuple[list[str], int, int]:
    """(what differs, values compared, values identical)."""
    cat = catalogue()
    compared = same = 0
    found = [f"only in one run: {sorted(set(old) ^ set(new))}"] if set(old) != set(new) else []
    for key in sorted(set(old) & set(new), key=str):
        o, n = old[key], new[key]
        if (o["status"], o["reason"]) != (n["status"], n["reason"]):
            found.append(f"{key}: {o['status']} {o['reason']!r} -> {n['status']} {n['reason']!r}")
        if set(o["metrics"]) != set(n["metrics"]):
            found.append(f"{key}: metrics {sorted(set(o['metrics']) ^ set(n['metrics']))} in one run only")
        for name in sorted(set(o["metrics"]) & set(n["metrics"])):
            if cat.knows(name) and cat.metric(name).kind in NOT_FROM_A_CLOCK:
                compared += 1
                same += o["metrics"][name] == n["metrics"][name]
                if o["metrics"][name] != n["metrics"][name]:
                    found.append(f"{key}: {name} {o['metrics'][name]!r} -> {n['metrics'][name]!r}")
    return found, compared, same


def main(argv: list[str]) -> int:
    old, new = cases(Path(argv[0])), cases(Path(argv[1]))
    found, compared, same = differences(old, new)
    statuses = {s: sum(c["status"] == s for c in new.values()) for s in ("ok", "skipped", "failed")}
    print(f"{len(old)} case records old, {len(new)} new; new statuses {statuses}; "
          f"{same} of {compared} values not from a clock identical")
    print("\n".join(found) or "no difference in statuses, reasons, metric names or values not from a clock")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
