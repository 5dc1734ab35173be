#!/usr/bin/env bash
# The avx2 tile's build for int32 products (RAW) and the avx512vnni tiles' output prefetch kept to K >= 128
# (2-vCPU Intel Xeon with AMX; the avx2 path forced where named: a stand-in, not an AVX2-only machine):
#   tile_ab-avx2.txt, tile_ab-avx512vnni.txt (tile_ab.py, 11 rounds): commit cc9a649's gemm.c (prev) against this
#     commit's, the int32 GEMM and the Int8Linear call side by side, the path's register-only loop beside;
#   kernels-validate.txt; kernels-bench.txt (this CPU's own path, amx, 11 rounds: its calls with K <= 64 run the
#     avx512vnni tiles); kernels-bench-avx2.txt (the avx2 path forced, 7 rounds).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-epilogue-1/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-epilogue-1
out=${1:-$here}
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show cc9a649:kernels/csrc/gemm.c > "$build/prev.c"
cp kernels/csrc/gemm.c "$build/after.c"
for side in prev after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
python "$here/tile_ab.py" "$build" 11 avx2 prev after > "$out/tile_ab-avx2.txt"
python "$here/tile_ab.py" "$build" 11 avx512vnni prev after > "$out/tile_ab-avx512vnni.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
COSTBENCH_KERNELS_ISA=avx2 costbench kernels bench --threads 2 --rounds 7 --json "$out/kernels-bench-avx2.json" \
  > "$out/kernels-bench-avx2.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
