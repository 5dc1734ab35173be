#!/usr/bin/env bash
# PyTorch's between-process spread with one thread, two more candidate causes: the instruction set oneDNN's JIT
# kernels are generated for (ONEDNN_MAX_CPU_ISA, read by oneDNN when a process first creates a primitive; on this
# AVX-512 machine it picks AVX-512 kernels, and AVX2 caps it: other code, other blocking), and torch's inter-op
# thread pool (interop_threads = 1 against torch's default of one per core). EfficientNet-Lite0 fp32 on torch,
# 1 thread, 6 processes a run, A B C A B C. Run from the repository root with the project installed, the
# artifact cache warm, nothing else running. Writes runs/{default,avx2,interop1}/ and per-process.txt.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COLUMNS=200
rm -rf "$here/runs"
git rev-parse HEAD > "$here/commit.txt"
for round in 1 2; do
  costbench run "$here/torch-1-thread.toml" --out "$here/runs/default" > /dev/null 2>&1
  ONEDNN_MAX_CPU_ISA=AVX2 costbench run "$here/torch-1-thread.toml" --out "$here/runs/avx2" > /dev/null 2>&1
  costbench run "$here/torch-1-thread-interop-1.toml" --out "$here/runs/interop1" > /dev/null 2>&1
done
for k in default avx2 interop1; do
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
