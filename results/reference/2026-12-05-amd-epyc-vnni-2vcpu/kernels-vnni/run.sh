#!/usr/bin/env bash
# Makes every file of this folder: costbench kernels validate and bench on 2 threads, then the
# ablation of the avx512vnni changes, with the machine's load logged every 10 s throughout.
# Run from the repository root with the project's environment active:
#   bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni/run.sh
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni
export COLUMNS=200
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) > "$out/load.log" &
logger=$!
trap 'kill $logger' EXIT
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-before.txt"
git rev-parse HEAD > "$out/commit.txt"
costbench env > "$out/env.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 5 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
python "$out/ablation.py" --threads 2 --rounds 5 --processes 3 --json "$out/ablation.json" > "$out/ablation.txt" 2>&1
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after.txt"
