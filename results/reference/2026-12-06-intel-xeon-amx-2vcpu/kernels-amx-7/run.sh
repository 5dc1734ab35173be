#!/usr/bin/env bash
# Shares of the amx task grid (2-vCPU Intel Xeon with AMX): shares.py (9 rounds) on three builds, ONNX Runtime
# beside them: before = BEFORE_COMMIT's gemm.c (both threads take tasks from one shared counter, chunk by chunk);
# rowsall = this commit's with the share of rows (M > N) on one thread too; after = this commit's. Then validate and
# the full bench on 2 threads (11 rounds). Run from the repository root with the project's environment active,
# under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-7/run.sh BEFORE_COMMIT
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-7
export COLUMNS=200
source scripts/quiet_start.sh
before=${1:?the commit whose kernel is "before"}
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show "$before:kernels/csrc/gemm.c" > "$build/before.c"
cp kernels/csrc/gemm.c "$build/after.c"
rule="g->rows_outer = threads > 1 \&\& g->M > g->N;"
grep -q "g->rows_outer = threads > 1 && g->M > g->N;" "$build/after.c" || { echo "the share rule is not where rowsall expects it" >&2; exit 1; }
sed "s/$rule/g->rows_outer = g->M > g->N;/" "$build/after.c" > "$build/rowsall.c"
for side in before rowsall after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
echo "before: $before" >> "$out/commit.txt"
python "$out/shares.py" "$build" 9 before rowsall after > "$out/ab-shares.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
