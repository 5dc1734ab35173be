#!/usr/bin/env bash
# The avx512vnni micro-kernel that the amx path runs for calls with fewer than 16 rows (vnni_tile), with each
# vpdpbusd in asm so that gcc keeps the accumulators in place (2-vCPU Intel Xeon with AMX, this CPU's own path):
#   tile_ab.txt (kernels-epilogue-1/tile_ab.py, 11 rounds): commit f087681's gemm.c (prev: one or two register
#     copies a vpdpbusd in these tiles' k-loops) against this commit's, the int32 GEMM and Int8Linear, M = 1, 8, 15;
#   loops.txt (loops.py, 15 rounds): the avx512vnni register-only loop of both builds (prev: gcc copied every chain
#     each iteration);
#   kernels-validate.txt; kernels-bench.txt (amx, 11 rounds).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-small-m-1/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-small-m-1
out=${1:-$here}
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show f087681:kernels/csrc/gemm.c > "$build/prev.c"
cp kernels/csrc/gemm.c "$build/after.c"
for side in prev after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
SHAPES='[[1, 384, 384], [8, 384, 384], [15, 384, 384], [1, 384, 1152], [8, 384, 1152], [15, 384, 1152],
         [1, 384, 1536], [8, 384, 1536], [15, 384, 1536], [1, 1536, 384], [8, 1536, 384], [15, 1536, 384]]' \
  python results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-epilogue-1/tile_ab.py "$build" 11 amx prev after \
  > "$out/tile_ab.txt"
python "$here/loops.py" "$build" 15 prev after > "$out/loops.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
