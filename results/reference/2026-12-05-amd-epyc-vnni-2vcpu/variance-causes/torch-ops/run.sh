#!/usr/bin/env bash
# PyTorch's between-process spread with one thread, through costbench itself: glibc's defaults (a query's freed
# activations go back to the kernel in some launches, ~4,500 page faults a query) against retain_memory = true
# (mallopt: freed memory stays in the heap). EfficientNet-Lite0 fp32 on torch, 1 thread, 6 processes a run,
# A B A B. Run from the repository root with the project installed, the artifact cache warm, nothing else
# running. Writes runs/{default,retain}/ and per-process.txt. profile.py is the standalone diagnosis that found
# the faults (its outputs: profile-*.txt and ops-*.json).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COLUMNS=200
rm -rf "$here/runs"
git rev-parse HEAD > "$here/commit.txt"
for round in 1 2; do
  costbench run "$here/torch-1-thread.toml" --out "$here/runs/default" > /dev/null 2>&1
  costbench run "$here/torch-1-thread-retain.toml" --out "$here/runs/retain" > /dev/null 2>&1
done
for k in default retain; do
  mv "$here/runs/$k"/runs/*.jsonl "$here/runs/$k"/ 2>/dev/null; rm -rf "$here/runs/$k/runs" "$here/runs/$k"/*.duckdb
done
python - "$here/runs" <<'PY' | tee "$here/per-process.txt"
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/*.jsonl")):
    p50 = [round(next(m["value"] for m in r["metrics"] if m["metric"] == "latency_p50"), 2)
           for r in map(json.loads, f.read_text().splitlines()) if r["type"] == "case" and r["status"] == "ok"]
    print(f"{f.parent.name:7} {f.stem}  p50 ms by process {p50}  max/min {max(p50) / min(p50):.3f}")
PY
