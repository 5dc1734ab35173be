#!/usr/bin/env bash
# Makes every file of this folder: costbench kernels validate and bench on 2 threads, with the
# machine's load logged every 10 s throughout. Run from the repository root with the project's
# environment active, under the measurement lock that keeps measurements on this 2-vCPU VM apart:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-4/run.sh
# The code measured: swap_linear_layers with all its fusions (Q/K/V as one GEMM, GELU in the intermediate
# layer's epilogue, the skip connection's add in the output blocks' epilogue); kernels-vnni-3 is the code
# before the last. Other work that does not take the lock may still run here, so the run first waits
# (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle; idle.txt
# says when it started and how idle the last window was.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-4
export COLUMNS=200
cpu_idle() {  # percent idle over 2 s
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local t=0 i
  for i in 1 2 3 4 5 6 7 8; do t=$((t + b[i] - a[i])); done
  echo $((100 * (b[4] - a[4]) / t))
}
ok=0
for _ in $(seq 150); do
  idle=$(cpu_idle)
  if [ "$idle" -ge 90 ]; then ok=$((ok + 1)); else ok=0; fi
  [ "$ok" -ge 3 ] && break
done
echo "$(date -u +%FT%TZ) started; last 2 s window ${idle}% idle, ${ok} quiet windows in a row" > "$out/idle.txt"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) > "$out/load.log" &
logger=$!
trap 'kill $logger' EXIT
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-before.txt"
git rev-parse HEAD > "$out/commit.txt"
costbench env > "$out/env.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --no-minilm --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after.txt"
