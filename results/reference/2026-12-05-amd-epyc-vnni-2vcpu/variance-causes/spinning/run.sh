#!/usr/bin/env bash
# ONNX Runtime's thread-pool wait policy as a cause of between-process variance: EfficientNet-Lite0 fp32/int8 with
# the default 2 threads, the intra-op threads spinning (the default) and sleeping (spinning = false), run
# A B A B so the machine's drift falls on both. Run from the repository root with the project installed, the
# artifact cache warm, nothing else running. Writes runs/, run-*.log, spread.txt and load.log next to this script.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COLUMNS=200
rm -rf "$here/runs" "$here"/run-*.log "$here/load.log"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) >> "$here/load.log" &
logger=$!
trap 'kill $logger' EXIT
git rev-parse HEAD > "$here/commit.txt"
for round in 1 2; do
  for kind in spinning sleeping; do
    costbench run "$here/smoke-ort-$kind.toml" --out "$here/runs" > "$here/run-$kind-$round.log" 2>&1
    echo "$kind round $round rc=$?"
  done
done
python "$here/../pinning/spread.py" "$here/runs" | tee "$here/spread.txt"
