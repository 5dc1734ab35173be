"""Per case and run: the ± of the p50 across processes (95% t interval on logs), and max/min of the per-process p50s
(contended processes left out, as the result leaves them out)."""
import sys
from pathlib import Path

import numpy as np
from scipy.stats import t

from costbench.harness.results.rounds import contended
from costbench.harness.results.runfile import RunFile

rows = []
for f in sorted(Path(sys.argv[1]).rglob("*.jsonl")):
    rf = RunFile(f)
    name = rf.header()["suite"]["name"]
    by: dict[str, list[float]] = {}
    for rec in rf.cases():
        if rec["status"] != "ok" or contended(rec):
            continue
        p50 = next(m["value"] for m in rec["metrics"] if m["metric"] == "latency_p50")
        by.setdefault(f'{rec["case"]["variant"]:5} {rec["case"]["backend"]:12}', []).append(p50)
    for case, p50s in sorted(by.items()):
        a = np.log(p50s)
        half = t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("inf")
        rows.append((name, f.stem[-15:], case, len(a), float(np.exp(a.mean())), 100 * (np.exp(half) - 1),
                     max(p50s) / min(p50s)))
print(f"{'suite':24} {'run':15} {'case':18} {'n':>2} {'p50 ms':>8} {'± %':>6} {'max/min':>7}")
for r in rows:
    print(f"{r[0]:24} {r[1]:15} {r[2]:18} {r[3]:2d} {r[4]:8.3f} {r[5]:6.1f} {r[6]:7.3f}")
