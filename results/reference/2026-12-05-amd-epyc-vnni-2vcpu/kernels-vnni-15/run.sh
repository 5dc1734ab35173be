#!/usr/bin/env bash
# Where the two-thread time of 784x40x240 goes: the committed kernel's threads traced (when each enters the job,
# finishes its own share, leaves), the same with stealing only from an unbegun share and with the two shares
# swapped between the threads; one thread on each half of the rows; the output at five offsets within a page; and
# two changes A/B-tested against the committed kernel in one process (sticky stealing; 8 or 16 tasks a share).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-15/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-15
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
python "$out/variants.py" "$build" > /dev/null
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
for shape in 784x40x240 12544x32x16; do
  for variant in trace-base trace-sticky trace-sticky-swap trace-base trace-sticky trace-sticky-swap; do
    V2_TRACE=1 python "$out/experiments.py" trace "$build" "$variant" "$shape" 2>> "$out/trace.txt"
  done
done
python "$out/experiments.py" halves > "$out/halves.txt"
python "$out/experiments.py" offsets > "$out/offsets.txt"
python "$out/experiments.py" ab "$build" 20 base sticky tasks8 tasks16 > "$out/ab.txt"
{ date -u; uptime; } > "$out/load-after.txt"
