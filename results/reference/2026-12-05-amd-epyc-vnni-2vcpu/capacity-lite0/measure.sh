#!/usr/bin/env bash
# The EfficientNet-Lite0 part of benchmarks/capacity.py again, with the capacity search as it is since
# ../capacity/ was measured (a line through three rates at least; interval ends are tried rates, never
# interpolated; an open end steps on after two undecided trials). Run from the repository root with the
# project installed, nothing else running:
#   bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/capacity-lite0/measure.sh
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/capacity-lite0
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$out/load.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$out/commit.txt"
python benchmarks/capacity.py "$out" --part lite0 --budget 120 > "$out/lite0.log" 2>&1
python benchmarks/capacity.py "$out" --summary > "$out/summary.txt"
