#!/usr/bin/env bash
# Where a second thread's time goes on the amx path: a traced copy of this commit's gemm.c (variant.py), 2000
# back-to-back calls a line on one thread and on two (trace.py; trace.txt). Run from the repository root with the
# project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-4/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-4
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
python "$out/variant.py" kernels/csrc/gemm.c "$build/trace.c"
gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/trace.c" -o "$build/trace.so"
AMX_TRACE=1 python "$out/trace.py" "$build" 2> "$out/trace.txt"
{ date -u; uptime; } > "$out/load-after.txt"
