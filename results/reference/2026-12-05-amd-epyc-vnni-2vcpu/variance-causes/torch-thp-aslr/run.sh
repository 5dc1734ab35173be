#!/usr/bin/env bash
# PyTorch's between-process spread with one thread, three candidate causes: transparent huge pages for its CPU
# allocations (THP_MEM_ALLOC_ENABLE=1, read by c10's allocator; the kernel's setting here is madvise), and
# address-space layout randomisation (the run under `setarch -R`, which its children inherit). EfficientNet-Lite0
# fp32 on torch, 1 thread, 6 processes a run, no precision target. Run from the repository root with the project
# installed, the artifact cache warm, nothing else running. Writes runs/{0,1,noaslr}/ and per-process.txt.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COLUMNS=200
rm -rf "$here/runs"
git rev-parse HEAD > "$here/commit.txt"
for round in 1 2; do
  for thp in 0 1; do
    THP_MEM_ALLOC_ENABLE=$thp costbench run "$here/torch-1-thread.toml" --out "$here/runs/$thp" > /dev/null 2>&1
  done
done
for round in 1 2; do
  setarch "$(uname -m)" -R costbench run "$here/torch-1-thread.toml" --out "$here/runs/noaslr" > /dev/null 2>&1
done
for k in 0 1 noaslr; do
  mkdir -p "$here/runs/$k"; mv "$here/runs/$k"/runs/*.jsonl "$here/runs/$k"/ 2>/dev/null; rm -rf "$here/runs/$k/runs" "$here/runs/$k"/*.duckdb
done
python - "$here/runs" <<'PY' | tee "$here/per-process.txt"
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/*.jsonl")):
    p50 = [round(next(m["value"] for m in r["metrics"] if m["metric"] == "latency_p50"), 2)
           for r in map(json.loads, f.read_text().splitlines()) if r["type"] == "case" and r["status"] == "ok"]
    print(f"{f.parent.name:7} {f.stem}  p50 ms by process {p50}  max/min {max(p50) / min(p50):.3f}")
PY
