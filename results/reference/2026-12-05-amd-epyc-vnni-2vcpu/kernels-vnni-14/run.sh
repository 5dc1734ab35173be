#!/usr/bin/env bash
# After the fix of the pool's thread placement: validate, every GEMM shape and MiniLM on every path (11 interleaved
# rounds, the bench now reporting any thread kept off some CPUs), MiniLM twice more (--quick, 21 rounds of 0.2 s),
# kernels-vnni-12/minilm_paths.py, and affinity_effect.py (MiniLM in a process confined to one CPU, as the bug
# left some, against one that is not). Run from the repository root with the project's environment active, under
# the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-14/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-14
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
costbench kernels bench --threads 2 --rounds 11 --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
for pass in 2 3; do
  echo "pass $pass started $(date -u +%FT%TZ)" >> "$out/passes.txt"
  costbench kernels bench --threads 2 --quick --rounds 21 --min-time 0.2 --json "$out/kernels-bench-minilm-$pass.json" \
    > "$out/kernels-bench-minilm-$pass.txt" 2>&1
done
python "$out/../kernels-vnni-12/minilm_paths.py" > "$out/minilm_paths.txt" 2>&1
for where in all one all one; do python "$out/affinity_effect.py" "$where" 2>/dev/null | tail -1 >> "$out/affinity_effect.txt"; done
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after.txt"
