#!/usr/bin/env bash
# The MiniLM end-to-end comparison again, with 21 interleaved rounds of 0.2 s (run.sh's 5 rounds of 0.05 s gave
# 1.17x [0.80-1.39], too wide to decide the 1.2x target), beside the quick GEMM shapes. Run from the repository
# root with the project's environment active, nothing else running:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-3/run-minilm.sh
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-3
export COLUMNS=200
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) > "$out/load-minilm.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$out/commit-minilm.txt"
costbench kernels bench --threads 2 --quick --rounds 21 --min-time 0.2 --json "$out/kernels-bench-minilm.json" \
  > "$out/kernels-bench-minilm.txt" 2>&1
