"""The pilot behind costbench ab's design, from the ten trials in ../yardstick/runs.tar.xz (measured the day the
design was fixed, before the run in this folder): (1) does pairing process k of BASE with process k of NEW
cancel anything (the variance of the pairs' log ratios against the two sides' variances added)? (2) the power
of the two-look rule for a +10% change at q < 0.001 a look, drawing processes from the pilot's own residuals
(heavy tails kept), for second looks of 2x and 3x the first's 5 pairs."""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from scipy import stats

runs = {}
with tarfile.open(Path(__file__).parent.parent / "yardstick" / "runs.tar.xz") as tar:
    for m in tar.getmembers():
        if m.name.endswith(".jsonl"):
            lines = [json.loads(line) for line in io.TextIOWrapper(tar.extractfile(m))]
            runs[lines[0]["run_id"]] = lines
ratio_var, sum_var, residuals = [], [], []
for run_id, lines in runs.items():
    tag = lines[0]["paired"]
    if tag["side"] != "base":
        continue
    sides = {"base": lines, "new": runs[tag["with"]]}
    p50 = {s: {} for s in sides}
    for s, recs in sides.items():
        for r in recs[1:]:
            if r.get("type") == "case" and r["status"] == "ok":
                p50[s].setdefault(r["case"]["backend"], {})[r["process"]] = np.log(
                    next(x["value"] for x in r["metrics"] if x["metric"] == "latency_p50"))
    for case, b in p50["base"].items():
        n = p50["new"].get(case, {})
        ks = sorted(set(b) & set(n))
        if len(ks) < 5:
            continue
        bv, nv = np.array([b[k] for k in ks]), np.array([n[k] for k in ks])
        ratio_var.append(np.var(nv - bv, ddof=1))
        sum_var.append(np.var(bv, ddof=1) + np.var(nv, ddof=1))
        residuals += list(bv - np.median(bv)) + list(nv - np.median(nv))
print(f"(1) {len(ratio_var)} case-trials: median variance of the pairs' log ratios {np.median(ratio_var):.5f}, "
      f"of the two sides' added {np.median(sum_var):.5f} (ratio {np.median(np.array(ratio_var) / sum_var):.2f}; "
      "1 = pairing cancels nothing)")
res = np.array(residuals)
print(f"(2) residuals: {res.size} processes, sd {res.std(ddof=1):.3f}, 95th/99th percentile "
      f"{np.percentile(res, 95):.3f}/{np.percentile(res, 99):.3f}")
rng = np.random.default_rng(20261206)
for looks in ((5, 10), (5, 15)):
    called = 0
    for _ in range(4000):
        for n in looks:
            a, b = rng.choice(res, n), rng.choice(res, n) + np.log(1.10)
            if stats.ttest_ind(a, b, equal_var=False).pvalue < 0.001 and np.exp(b.mean() - a.mean()) >= 1.05:
                called += 1
                break
    print(f"    looks at {looks[0]} and {looks[1]} pairs: +10% called in {called / 4000:.0%} of 4,000 draws")
