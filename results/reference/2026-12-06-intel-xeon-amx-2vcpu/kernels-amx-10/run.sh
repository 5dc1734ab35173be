#!/usr/bin/env bash
# kernels-amx-8's three passes of the full bench a minute apart, on the kernel of kernels-amx-9 (a second amx thread
# from 2^25 multiply-accumulates in all). Run from the repository root with the project's environment active, under
# the measurement lock:
#   flock /tmp/costbench-measure.lock bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-10/run.sh
set -euo pipefail
exec bash results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-8/run.sh \
  results/reference/2026-12-06-intel-xeon-amx-2vcpu/kernels-amx-10
