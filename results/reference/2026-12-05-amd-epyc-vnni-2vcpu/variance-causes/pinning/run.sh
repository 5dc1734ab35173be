#!/usr/bin/env bash
# CPU pinning as a cause of between-process variance: the smoke suite with one thread per runtime, unpinned
# and pinned (pin_cpus: the runtime's thread on core 1, the runner on core 0), run A B A B so the machine's drift
# falls on both. Run from the repository root with the project installed, the artifact cache warm, nothing else
# running. Writes runs/, run-*.log, spread.txt and load.log next to this script.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COLUMNS=200
rm -rf "$here/runs" "$here"/run-*.log "$here/load.log"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$here/load.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$here/commit.txt"
for round in 1 2; do
  for kind in unpinned pinned; do
    toml="$here/smoke-1-thread.toml"; [ "$kind" = pinned ] && toml="$here/smoke-1-thread-pinned.toml"
    costbench run "$toml" --out "$here/runs" > "$here/run-$kind-$round.log" 2>&1
    echo "$kind round $round rc=$?"
  done
done
python "$here/spread.py" "$here/runs" | tee "$here/spread.txt"
