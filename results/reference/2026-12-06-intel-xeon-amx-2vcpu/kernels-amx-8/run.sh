#!/usr/bin/env bash
# Run-to-run spread on the amx path after kernels-amx-6 and -7: three passes of the full bench (every shape and
# MiniLM end to end, 5 rounds each), a minute apart, each its own process. Run from the repository root with the
# project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-8/run.sh [OUT]
# OUT: the folder to write (default this one; a later run of the same passes names its own).
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=${1:-results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-8}
export COLUMNS=200
source scripts/quiet_start.sh
for pass in 1 2 3; do
  costbench kernels bench --threads 2 --rounds 5 --json "$out/pass-$pass.json" > "$out/pass-$pass.txt" 2>&1
  [ "$pass" = 3 ] || sleep 60
done
{ date -u; uptime; } > "$out/load-after.txt"
