#!/usr/bin/env bash
# When the amx path takes a second thread (2-vCPU Intel Xeon with AMX): kernels-amx-7/shares.py (9 rounds) on three
# builds that differ only in MIN_MACS_PER_THREAD_AMX, at shapes from 2^22 to 2^26 padded multiply-accumulates,
# ONNX Runtime beside them: t2from24 (2^23 a thread: two threads from 2^24 in all), after (this commit's 2^24: two
# from 2^25), t2from26 (2^25, the one before: two from 2^26). Then validate and the full bench on 2 threads (11
# rounds). Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-9/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-9
export COLUMNS=200
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
cap="#define MIN_MACS_PER_THREAD_AMX (1LL << 24)"
grep -q "^$cap\$" kernels/csrc/gemm.c || { echo "the amx thread minimum is not where this run expects it" >&2; exit 1; }
sed "s/^$cap\$/#define MIN_MACS_PER_THREAD_AMX (1LL << 23)/" kernels/csrc/gemm.c > "$build/t2from24.c"
cp kernels/csrc/gemm.c "$build/after.c"
sed "s/^$cap\$/#define MIN_MACS_PER_THREAD_AMX (1LL << 25)/" kernels/csrc/gemm.c > "$build/t2from26.c"
for side in t2from24 after t2from26; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
SHAPES='[[32, 384, 384], [128, 384, 384], [32, 384, 1536], [49, 1152, 320], [49, 320, 1280], [176, 384, 512],
         [256, 384, 384], [64, 384, 1536], [96, 384, 1152], [128, 384, 1152], [128, 512, 768], [49, 1152, 640],
         [512, 384, 384]]' \
  python results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-7/shares.py "$build" 9 t2from24 after t2from26 \
  > "$out/ab-threads.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
