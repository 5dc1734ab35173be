#!/usr/bin/env bash
# Where the avx2 path's time goes at small K (2-vCPU Intel Xeon with AMX, the avx2 path forced: a stand-in, not
# an AVX2-only machine): kscan.txt times our GEMM (u8 A, int32 out, 2 threads) at the EfficientNet shapes' M and N
# over K and fits time = fixed + per-k; store_floor.txt times the same outputs' stores alone (store_floor.c).
# Run from the repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-4/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/kernels-avx2-4
out=${1:-$here}
source scripts/quiet_start.sh
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
gcc -O2 -pthread "$here/store_floor.c" -o "$build/store_floor"
{
  for t in 1 2; do
    "$build/store_floor" 3136 144 $t 2000
    "$build/store_floor" 12544 16 $t 2000
    "$build/store_floor" 784 240 $t 2000
  done
} > "$out/store_floor.txt"
{
  ISA=avx2 python "$here/kscan.py" 3136 144 24,48,96,192 2
  ISA=avx2 python "$here/kscan.py" 12544 16 32,64,128,256 2
  ISA=avx2 python "$here/kscan.py" 784 240 40,80,160,320 2
} > "$out/kscan.txt"
{ date -u; uptime; } > "$out/load-after.txt"
