#!/usr/bin/env bash
# The v2 GEMM before and after the helper's patience (a thread that has run its own share takes tasks from a begun
# share only once its owner has stalled): both built from source, interleaved in one process on the shapes of
# kernels-vnni-15/ab.txt (20 rounds of 0.03 s), twice, a minute apart; then validate and the full bench on the
# committed kernel (11 interleaved rounds). Run from the repository root with the project's environment active,
# under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-16/run.sh BEFORE_COMMIT
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-16
export COLUMNS=200
source scripts/quiet_start.sh
before=${1:?the commit whose kernel is "before"}
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
for side in before after; do
  if [ $side = before ]; then git show "$before:kernels/csrc/gemm.c" > "$build/$side.c"; else cp kernels/csrc/gemm.c "$build/$side.c"; fi
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
echo "before: $before" >> "$out/commit.txt"
for pass in 1 2; do
  python "$out/../kernels-vnni-15/experiments.py" ab "$build" 20 before after > "$out/ab-$pass.txt"
  sleep 60
done
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
