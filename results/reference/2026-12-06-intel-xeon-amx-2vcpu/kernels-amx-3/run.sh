#!/usr/bin/env bash
# The committed kernel on a 2-vCPU Intel Xeon with AMX: validate (every path, ours and the vendors'), then the full
# bench on 2 threads (11 interleaved rounds, MiniLM end to end in the same rounds). Run from the repository root with
# the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-3/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-3
export COLUMNS=200
source scripts/quiet_start.sh
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
