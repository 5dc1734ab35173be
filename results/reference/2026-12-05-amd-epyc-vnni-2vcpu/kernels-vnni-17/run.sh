#!/usr/bin/env bash
# 784x40x240 second by second, ours (reused output, fresh output, one thread) and ONNX Runtime, 150 rounds at the
# start and 300 at the end; each
# task's time by share (kernels-vnni-15/variants.py's per-task build) at 784x40x240 and 792x40x240 (no short tile);
# and two other ways to split the rows, A/B against the committed kernel in one process (30 rounds). Run from the
# repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-17/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-17
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
python "$out/phase_peers.py" 150 > "$out/phase_peers-1.txt"
python "$out/../kernels-vnni-15/variants.py" "$build" > /dev/null
: > "$out/per_task.txt"
for shape in 784x40x240 792x40x240 784x40x240 792x40x240; do
  V2_TRACE=1 python "$out/../kernels-vnni-15/experiments.py" trace "$build" per-task "$shape" 2>> "$out/per_task.txt"
done
python "$out/../kernels-vnni-15/experiments.py" ab "$build" 30 base split-n interleaved > "$out/ab.txt"
python "$out/phase_peers.py" 300 > "$out/phase_peers-2.txt"
{ date -u; uptime; } > "$out/load-after.txt"
