#!/usr/bin/env bash
# Makes this folder: the capacity-search benchmark (benchmarks/capacity.py), every part, with the machine's
# load logged every 10 s. Run from the repository root with the project's environment active:
#   bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/capacity/measure.sh
# Each step can be run on its own (a part appends its runs); the last step writes capacity.json / .md.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/capacity
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$out/load.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$out/commit.txt"
costbench env > "$out/env.txt"
for i in 1 2 3 4; do  # 4 runs x 5 processes: 20 searches of the 1-ms backend, 90 s each
  python benchmarks/capacity.py "$out" --part md1 --processes 5 --budget 90
done
python benchmarks/capacity.py "$out" --part batched --processes 2 --budget 90
python benchmarks/capacity.py "$out" --part lite0 --budget 120
python benchmarks/capacity.py "$out" --summary > "$out/summary.txt"
