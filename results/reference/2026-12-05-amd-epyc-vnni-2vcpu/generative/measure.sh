#!/usr/bin/env bash
# suites/generative.toml end to end on this machine, cold artifact cache (the zoo model, every variant and the
# fp32 reference are built inside the timed run), then its hardware report, with the machine's load logged
# every 10 s. Run from the repository root with the project installed (README, command 2). Writes next to
# this script: results/, report/, run.log, report.log, timing.txt, load.log.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COSTBENCH_CACHE_DIR="${COSTBENCH_CACHE_DIR:-/tmp/costbench-generative-cold}"
rm -rf "$COSTBENCH_CACHE_DIR" "$here/results" "$here/report" "$here/load.log"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$here/load.log" &
logger=$!
trap 'kill $logger' EXIT
{
  echo "commit $(git rev-parse --short HEAD)"
  echo "load before: $(uptime)"
  s=$(date +%s.%N)
  costbench run suites/generative.toml --out "$here/results" > "$here/run.log" 2>&1
  echo "run rc=$? $(echo "$(date +%s.%N) - $s" | bc) s (cold cache: builds included)"
  echo "load after: $(uptime)"
  costbench report last -r "$here/results" -o "$here/report" > "$here/report.log" 2>&1
  echo "report rc=$?"
} | tee "$here/timing.txt"
