#!/usr/bin/env bash
# suites/generative-batching.toml end to end on this machine (one slot and continuous batching of 4 and 8, each case's capacity search at a TTFT/TPOT SLO),
# then its hardware report, with the machine's load logged every 10 s. Run from the repository root with the
# project installed (README, command 2). Writes next to this script: results/, report/, run.log, timing.txt,
# load.log.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COSTBENCH_CACHE_DIR="${COSTBENCH_CACHE_DIR:-/tmp/costbench-generative-cache}"
rm -rf "$here/results" "$here/report" "$here/load.log"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$here/load.log" &
logger=$!
trap 'kill $logger' EXIT
{
  echo "commit $(git rev-parse --short HEAD)"
  echo "load before: $(uptime)"
  s=$(date +%s.%N)
  costbench run suites/generative-batching.toml --out "$here/results" > "$here/run.log" 2>&1
  echo "run rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"
  echo "load after: $(uptime)"
  costbench report last -r "$here/results" -o "$here/report" --max-parity-loss 100 > "$here/report.log" 2>&1
  echo "report rc=$?"
} | tee "$here/timing.txt"
