"""Did the yardstick see the slow processes? Reads runs.tar.xz (the 20 run files of the trials measured with it)
and applies the rule it was judged by: a process is slow when its yardstick (the slower of the readings before
and after it) is over 1.15 times the median of its case's processes in that run (at least 3 readings)."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np

FACTOR = 1.15
rows = []
with tarfile.open(Path(__file__).with_name("runs.tar.xz")) as tar:
    for member in sorted(tar.getmembers(), key=lambda m: m.name):
        if not member.name.endswith(".jsonl"):
            continue
        recs = [json.loads(line) for line in io.TextIOWrapper(tar.extractfile(member))]
        recs = [r for r in recs if r.get("type") == "case" and r["status"] == "ok"]
        for case in sorted({r["case"]["backend"] for r in recs}):
            mine = [r for r in recs if r["case"]["backend"] == case]
            m = [{x["metric"]: x for x in r["metrics"]} for r in mine]
            p50 = np.array([x["latency_p50"]["value"] for x in m])
            stick = np.array([x["yardstick"]["value"] for x in m])
            for v, y in zip(p50 / np.median(p50), stick / sorted(stick)[(len(stick) - 1) // 2]):
                rows.append((v, y))
p50, stick = np.array(rows).T
slow = stick > FACTOR
outliers = p50 > 1.08
print(f"{len(rows)} processes; judged slow (yardstick > {FACTOR}x its case's median): {slow.sum()} "
      f"({slow.mean():.0%})")
print("yardstick over its case's median, percentiles 5/25/50/75/95: "
      + ", ".join(f"{q:.3f}" for q in np.percentile(stick, [5, 25, 50, 75, 95])))
print(f"p50 over its case's median of the processes judged slow: median {np.median(p50[slow]):.3f}, "
      f"of the others: {np.median(p50[~slow]):.3f}")
print(f"processes more than 8% above their case's median p50: {outliers.sum()}, of them judged slow: "
      f"{(outliers & slow).sum()}; correlation of the two ratios: {np.corrcoef(p50, stick)[0, 1]:.2f}")
