#!/usr/bin/env bash
# 784x40x240 second by second, ours (reused output, fresh output, one thread) and ONNX Runtime, 150 rounds
# (about 3 minutes). Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-17/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-17
export COLUMNS=200
source scripts/quiet_start.sh
python "$out/phase_peers.py" 150 > "$out/phase_peers.txt"
{ date -u; uptime; } > "$out/load-after.txt"
