#!/usr/bin/env bash
# The avx2 tile's k-step in asm (2-vCPU Intel Xeon with AMX, the avx2 path forced: not an AVX2-only machine):
#   ab.txt (kernels-avx2-1/ab.py, 11 rounds): commit eea0134's gemm.c (prev: the same kernel from intrinsics, gcc
#     copying each sum back to its accumulator) against this commit's, avx2-saturating beside;
#   minilm_ab.txt (kernels-avx2-1/minilm_ab.py, 15 rounds); validate; the full bench with AVX2 forced (7 rounds).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-3/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-3
prev=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-1
out=${1:-$here}
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show eea0134:kernels/csrc/gemm.c > "$build/prev.c"
cp kernels/csrc/gemm.c "$build/after.c"
for side in prev after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
python "$prev/ab.py" "$build" 11 prev after > "$out/ab.txt"
python "$prev/minilm_ab.py" "$build" 15 prev after > "$out/minilm_ab.txt" 2> "$out/minilm_ab.err"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
COSTBENCH_KERNELS_ISA=avx2 costbench kernels bench --threads 2 --rounds 7 --json "$out/kernels-bench.json" \
  > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
