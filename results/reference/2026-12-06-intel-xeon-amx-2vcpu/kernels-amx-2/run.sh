#!/usr/bin/env bash
# The amx path before and after this folder's changes, both built from source and interleaved in one process with
# ONNX Runtime's MatMulInteger beside them (ab.py gemm: 9 rounds of 0.03 s a sample), and Int8Linear's call on
# torch's OpenMP team (ab.py linear: 9 rounds); then one thread against two per build (threads.py). Builds: before =
# BEFORE_COMMIT's gemm.c; serial = this commit's with each block's epilogue run right after its tile products (no
# overlap); tiles = this commit's with the amx thread cap at the other paths' 2^21 and no avx512vnni hand-over at
# small K; after = this commit's. Run from the
# repository root with the project's environment active, under the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-2/run.sh BEFORE_COMMIT
# The run first waits (at most 5 min) for three 2-second windows in a row with the CPUs at least 90% idle.
set -euo pipefail
out=results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-2
export COLUMNS=200
source scripts/quiet_start.sh
before=${1:?the commit whose kernel is "before"}
build=$(mktemp -d)
trap 'quiet_logger_stop; rm -rf "$build"' EXIT
inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
git show "$before:kernels/csrc/gemm.c" > "$build/before.c"
cp kernels/csrc/gemm.c "$build/after.c"
python - "$build" <<'PY'
import sys
d = sys.argv[1]
s = open(f"{d}/after.c").read()
old = """                const int left = amx_block(g, i0 + bi * 32, p, kb0, kb1, cblk, kb0 == 0, kb1 == nkb,
                                           pending ? &pend : NULL);
                pending = left;
                if (left) pend = (amx_pending){i0 + bi * 32, p, cblk};"""
new = """                if (amx_block(g, i0 + bi * 32, p, kb0, kb1, cblk, kb0 == 0, kb1 == nkb, NULL)) {
                    pend = (amx_pending){i0 + bi * 32, p, cblk};
                    amx_epilogue(g, &pend);
                }"""
assert old in s, "the overlapped epilogue loop is not where serial expects it"
open(f"{d}/serial.c", "w").write(s.replace(old, new))
cap, cap_to = "#define MIN_MACS_PER_THREAD_AMX (1LL << 25)", "#define MIN_MACS_PER_THREAD_AMX (1LL << 21)"
k, k_to = "#define AMX_V2_MAX_K 64", "#define AMX_V2_MAX_K 0"
assert cap in s and k in s, "the amx thread cap or hand-over is not where tiles expects it"
open(f"{d}/tiles.c", "w").write(s.replace(cap, cap_to).replace(k, k_to))
PY
for side in before serial tiles after; do
  gcc -shared -fPIC -O3 -std=gnu11 -pthread -Wno-unused-function -I"$inc" "$build/$side.c" -o "$build/$side.so"
done
echo "before: $before" >> "$out/commit.txt"
python "$out/ab.py" gemm "$build" 9 before serial after > "$out/ab-gemm.txt"
python "$out/ab.py" linear "$build" 9 before serial after > "$out/ab-linear.txt"
python "$out/threads.py" "$build" tiles after > "$out/threads.txt"
{ date -u; uptime; } > "$out/load-after.txt"
