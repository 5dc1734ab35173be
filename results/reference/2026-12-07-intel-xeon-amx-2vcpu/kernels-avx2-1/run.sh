#!/usr/bin/env bash
# The avx2 path on the avx512vnni path's job (A widened or quantized in the job, the epilogue whole in the tile)
# and the inexact avx2-saturating mode, on a 2-vCPU Intel Xeon with AMX (AVX2 forced: not an AVX2-only machine):
#   ab.py (11 rounds): the build before (commit da88220's gemm.c) against this commit's, avx2-saturating beside
#     them, and both register-only loops timed in the same rounds (% of each one's limit);
#   minilm_ab.py (15 rounds): all-MiniLM-L6-v2 through Int8Linear on both builds' avx2 and on avx2-saturating;
#   validate; the full bench with COSTBENCH_KERNELS_ISA=avx2 (ours: the avx2 path; 7 rounds).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-1/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-1
out=${1:-$here}
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show da88220:kernels/csrc/gemm.c > "$build/before.c"
cp kernels/csrc/gemm.c "$build/after.c"
for side in before after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
python "$here/ab.py" "$build" 11 before after > "$out/ab.txt"
python "$here/minilm_ab.py" "$build" 15 before after > "$out/minilm_ab.txt" 2> "$out/minilm_ab.err"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
COSTBENCH_KERNELS_ISA=avx2 costbench kernels bench --threads 2 --rounds 7 --json "$out/kernels-bench.json" \
  > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
