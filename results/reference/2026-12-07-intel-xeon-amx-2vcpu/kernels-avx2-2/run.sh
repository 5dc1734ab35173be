#!/usr/bin/env bash
# The avx2 path after its tiles learned to widen their own rows, and the register-only loops rewritten (2-vCPU
# Intel Xeon with AMX; the avx2 path forced: not an AVX2-only machine):
#   loops.py (15 rounds): the avx2 loop of commit da88220 (C, twelve chains sharing one product) and of
#     5fdd2bf (the same, and avx2-saturating's first loop, the same flaw) against this commit's (asm);
#   widen.txt (kernels-avx2-1/ab.py, 9 rounds): the tiles always widening (tilewide), the job always widening
#     (jobwide) and this commit's rule (after), on the shapes where the rule matters;
#   ab.txt (kernels-avx2-1/ab.py, 11 rounds): da88220 (before) against this commit, avx2-saturating beside;
#   minilm_ab.txt (kernels-avx2-1/minilm_ab.py, 15 rounds); validate; the full bench with AVX2 forced (7 rounds).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-2/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-2
prev=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-1
out=${1:-$here}
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
rule="#define A2_TILE_WIDENS_PANELS 3"
grep -q "^$rule\$" kernels/csrc/gemm.c || { echo "the widening rule is not where this run expects it" >&2; exit 1; }
git show da88220:kernels/csrc/gemm.c > "$build/before.c"
git show 5fdd2bf:kernels/csrc/gemm.c > "$build/firstsat.c"
cp kernels/csrc/gemm.c "$build/after.c"
sed "s/^$rule\$/#define A2_TILE_WIDENS_PANELS (1 << 30)/" kernels/csrc/gemm.c > "$build/tilewide.c"
sed "s/^$rule\$/#define A2_TILE_WIDENS_PANELS 0/" kernels/csrc/gemm.c > "$build/jobwide.c"
for side in before firstsat after tilewide jobwide; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
python "$here/loops.py" "$build" 15 before firstsat after > "$out/loops.txt"
SHAPES='[[12544, 32, 16], [784, 240, 40], [2048, 384, 32], [3136, 24, 144], [784, 40, 240], [49, 672, 192],
         [512, 384, 384], [2048, 384, 1152]]' \
  python "$prev/ab.py" "$build" 9 jobwide tilewide after > "$out/widen.txt"
python "$prev/ab.py" "$build" 11 before after > "$out/ab.txt"
python "$prev/minilm_ab.py" "$build" 15 before after > "$out/minilm_ab.txt" 2> "$out/minilm_ab.err"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
COSTBENCH_KERNELS_ISA=avx2 costbench kernels bench --threads 2 --rounds 7 --json "$out/kernels-bench.json" \
  > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
