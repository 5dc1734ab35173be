#!/usr/bin/env bash
# MiniLM end to end, beside the quick GEMM shapes: 21 interleaved rounds of 0.2 s (5 rounds of 0.05 s are too
# wide to decide 1.2x), with the costbench-kernels model both fused and unfused in the same rounds. Run from the
# repository root with the project's environment active, nothing else running:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-4/run-minilm.sh
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-4
export COLUMNS=200
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) > "$out/load-minilm.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$out/commit-minilm.txt"
costbench kernels bench --threads 2 --quick --rounds 21 --min-time 0.2 --json "$out/kernels-bench-minilm.json" \
  > "$out/kernels-bench-minilm.txt" 2>&1
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after-minilm.txt"
