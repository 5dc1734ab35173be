#!/usr/bin/env bash
# Cache-line placement on the amx path (2-vCPU Intel Xeon with AMX): align.py (7 rounds: A and the output on 64-byte
# lines or 16 bytes past, ONNX Runtime beside); Int8Linear on torch's OpenMP team with its quantized rows in a
# malloc'd buffer (BEFORE_COMMIT's gemm.c) against one on a cache line (this commit's), through
# kernels-amx-2/ab.py linear (9 rounds); then validate and the full bench on 2 threads (11 rounds), whose
# activations and our output now start on lines. Run from the repository root with the project's environment
# active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-6/run.sh BEFORE_COMMIT
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-6
export COLUMNS=200
source scripts/quiet_start.sh
before=${1:?the commit whose kernel is "before"}
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show "$before:kernels/csrc/gemm.c" > "$build/before.c"
cp kernels/csrc/gemm.c "$build/after.c"
for side in before after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
echo "before: $before" >> "$out/commit.txt"
python "$out/align.py" 7 > "$out/align.txt"
python results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-2/ab.py linear "$build" 9 before after > "$out/ab-linear.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; } > "$out/load-after.txt"
