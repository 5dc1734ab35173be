#!/usr/bin/env bash
# The VNNI GEMM's thread split taking ties along the longer of M and N, and the bench's per-round paired ratios.
# In order: validate; split_ab.py (the build before the change, built here from 5bc4388 in a temporary worktree,
# against this one and ONNX Runtime); MiniLM in three passes a minute apart, each 21 interleaved rounds of 0.2 s
# beside the quick GEMM shapes; every GEMM shape, 11 rounds. Run from the repository root with the project's
# environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-8/run.sh
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/kernels-vnni-8
export COLUMNS=200
old=$(mktemp -d /tmp/costbench-split-old.XXXXXX)
git worktree add --detach "$old" 5bc4388 > /dev/null
( cd "$old" && python setup.py build_ext --inplace > build.log 2>&1 )
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
trap 'kill $logger; git worktree remove --force "$old"' EXIT
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-before.txt"
git rev-parse HEAD > "$out/commit.txt"
costbench env > "$out/env.txt"
costbench kernels validate --threads 2 > "$out/kernels-validate.txt"
python "$out/split_ab.py" "$(ls "$old"/kernels/_gemm*.so)" > "$out/split_ab.txt" 2>&1
for pass in 1 2 3; do
  [ "$pass" = 1 ] || sleep 60
  echo "pass $pass started $(date -u +%FT%TZ)" >> "$out/passes.txt"
  costbench kernels bench --threads 2 --quick --rounds 21 --min-time 0.2 --json "$out/kernels-bench-minilm-$pass.json" \
    > "$out/kernels-bench-minilm-$pass.txt" 2>&1
done
sleep 60
costbench kernels bench --threads 2 --rounds 11 --no-minilm --json "$out/kernels-bench.json" > "$out/kernels-bench.txt" 2>&1
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-after.txt"
