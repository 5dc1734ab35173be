"""Print every process of the two run files here in time order: p50, its slowest tenth, cpu_contention."""
import json
import pathlib

import numpy as np

rows = []
for f in sorted(pathlib.Path(__file__).parent.glob("*.jsonl")):
    lines = [json.loads(line) for line in f.open()]
    side = lines[0]["paired"]["side"]
    for r in lines[1:]:
        if r.get("type") != "case" or r["status"] != "ok":
            continue
        m = {x["metric"]: x for x in r["metrics"]}
        s = np.asarray(m["latency_p50"]["samples"])
        rows.append((m["cpu_contention"]["details"]["window_start_monotonic_s"], r["finished"][11:19], side,
                     r["case"]["backend"], r["process"], m["latency_p50"]["value"], float(np.percentile(s, 90)),
                     m["cpu_contention"]["value"]))
t0 = min(r[0] for r in rows)
print("| window start (s) | finished | side | case | process | p50 ms | p90 ms | cpu_contention |")
print("|---:|---|---|---|---:|---:|---:|---:|")
for w, fin, side, case, k, p50, p90, share in sorted(rows):
    print(f"| {w - t0:.1f} | {fin} | {side} | {case} | {k} | {p50:.2f} | {p90:.2f} | {share:.1%} |")
