#!/usr/bin/env bash
# The GELU epilogue pass in each form (gelu_forms.py, 21 rounds), then kernels-vnni-12's run again on this commit:
# validate, every GEMM shape and MiniLM on every path, 11 interleaved rounds, and kernels-vnni-12/minilm_paths.py
# (where MiniLM's time goes on the avx512vnni and avx2 paths). Run from the repository root with the project's
# environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-13/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-13
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
python "$out/gelu_forms.py" 21 > "$out/gelu_forms.txt" 2>&1
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
python "$out/../kernels-vnni-12/minilm_paths.py" > "$out/minilm_paths.txt" 2>&1
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after.txt"
