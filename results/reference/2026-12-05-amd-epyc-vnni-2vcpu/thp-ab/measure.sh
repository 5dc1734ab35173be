#!/usr/bin/env bash
# Transparent huge pages for ONNX Runtime and OpenVINO (issue 28's last unmeasured cause), side by side:
# BASE as the machine is (THP "madvise": glibc never asks for huge pages), NEW with glibc asking for them
# (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc >= 2.35). Run from the repository root, quiet machine.
set -euo pipefail
HERE=results/reference/2026-12-05-amd-epyc-vnni-2vcpu/thp-ab
OUT=${OUT:-/tmp/thp-ab}
cat /sys/kernel/mm/transparent_hugepage/enabled > "$HERE/thp.txt"
ldd --version | head -1 >> "$HERE/thp.txt"
# Do the huge pages happen? A 64 MiB allocation, then AnonHugePages of this process.
for tun in "" "glibc.malloc.hugetlb=1"; do
  GLIBC_TUNABLES=$tun python -c "
import numpy as np, re
a = np.ones(64 << 18, dtype=np.int32)
kb = int(re.search(r'AnonHugePages:\s+(\d+)', open('/proc/self/smaps_rollup').read()).group(1))
print(f'GLIBC_TUNABLES={\"$tun\" or \"(unset)\"}: AnonHugePages {kb} kB after a 64 MiB allocation')" >> "$HERE/thp.txt"
done
uptime > "$HERE/load.txt"
costbench ab "$HERE/suite.toml" --new-env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 -o "$OUT" \
  --json "$HERE/compare.json" --markdown "$HERE/compare.md" | tee "$HERE/ab.txt"
uptime >> "$HERE/load.txt"
