#!/usr/bin/env bash
# costbench vs optimum-benchmark on llama-200m fp32 (transformers backend, threads 2, prompt 128, 32 new tokens):
# 3 alternated repeats of (costbench in a fresh process, optimum-benchmark in a fresh process), then both tools on
# one loaded model in one process, alternated for 10 rounds (--breakdown). Run from the repository root with
# costbench[crosscheck] installed. Writes next to this script: crosscheck.json, crosscheck.md, crosscheck.log,
# load.txt (uptime before and after), and the tools' files under work/ (costbench's run files; the DuckDB copies
# synced from them are removed).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$here/work"
{
  echo "commit $(git rev-parse --short HEAD)"
  echo "load before: $(uptime)"
  s=$(date +%s.%N)
  costbench crosscheck "$here/suite.toml" --tool optimum-benchmark --repeat 3 --time 0 \
    --breakdown --breakdown-rounds 10 \
    --json "$here/crosscheck.json" --md "$here/crosscheck.md" --keep "$here/work" > "$here/crosscheck.log" 2>&1
  echo "crosscheck rc=$? $(echo "$(date +%s.%N) - $s" | bc) s"
  echo "load after: $(uptime)"
} | tee "$here/load.txt"
find "$here/work" -name costbench.duckdb -delete
