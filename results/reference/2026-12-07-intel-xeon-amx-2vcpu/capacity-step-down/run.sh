#!/usr/bin/env bash
# The capacity search's step down while no rate is shown to meet the SLO: fixed 10% (growth 1, the rule before)
# against doubling (growth 2), on simulated queues (step_down.py; no timing, so no quiet machine needed).
# Run from the repository root with the project's environment active:
#   bash results/reference/2026-12-07-intel-xeon-amx-2vcpu/capacity-step-down/run.sh
set -euo pipefail
here=results/reference/2026-12-07-intel-xeon-amx-2vcpu/capacity-step-down
out=${1:-$here}
git rev-parse HEAD > "$out/commit.txt"
seeds=2809775894,1,2,3,4,5,6,7,8,9
more=10,11,12,13,14,15,16,17,18,19
{
  for g in 1 2; do python "$here/step_down.py" "$g" "$seeds" 60; done
  for g in 1 2; do python "$here/step_down.py" "$g" "$more" 60; done
} > "$out/step_down.txt"
# The doubling step alone on 100 more seeds (6,000 searches a case), the preempting cases only
python "$here/step_down.py" 2 "$(seq -s, 100 199)" 60 preempting-only > "$out/step_down-more.txt"
