#!/usr/bin/env bash
# generate_server's capacity search alone and beside two bursty CPU hogs (busy.py): how long the process waited
# for a CPU, whether the result says it was held up, and the estimate against the queue model on the trials'
# own measured times. Run from the repository root with the project's environment active, under the lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/generate-server-busy/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/generate-server-busy
out=${1:-$here}
source scripts/quiet_start.sh
python "$here/busy.py" 11 12 13 > "$out/busy.jsonl"
{ date -u; uptime; } > "$out/load-after.txt"
