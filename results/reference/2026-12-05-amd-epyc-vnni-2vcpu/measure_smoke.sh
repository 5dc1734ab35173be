#!/usr/bin/env bash
# The README's first command on a fresh clone and venv: install, cold smoke (empty artifact cache), report, warm smoke.
set -uo pipefail
rm -rf /tmp/fresh /tmp/fresh-cache; mkdir -p /tmp/fresh-cache
git clone -q /work/main /tmp/fresh && cd /tmp/fresh
git log --oneline -1
python3 -m venv .venv && . .venv/bin/activate
export COSTBENCH_CACHE_DIR=/tmp/fresh-cache
s=$(date +%s.%N); pip install -q -c constraints/cpu.txt -e . > install.log 2>&1; echo "install rc=$? $(echo "$(date +%s.%N) - $s" | bc) s (pip's download cache warm)"
s=$(date +%s.%N); costbench run suites/smoke.toml > cold.log 2>&1; echo "cold smoke rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"
s=$(date +%s.%N); costbench report last > report.log 2>&1; echo "report rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"
s=$(date +%s.%N); costbench run suites/smoke.toml > warm.log 2>&1; echo "warm smoke rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"
