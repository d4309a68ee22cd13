#!/usr/bin/env bash
# GPU readiness in one command: the `gpu` tests (tests/test_gpu.py) plus a CPU vs GPU throughput
# comparison at the seeds' model size, as one JSON line (what is measured: benchmarks/gpu_check.py).
# Exit codes: 0 all good, or no CUDA device at all ({"gpu": false, "skipped": ...}: nothing to
# check); 1 a gpu test failed, or nvidia-smi sees a GPU that torch cannot use; 124 past the time
# limit (GPU_CHECK_TIMEOUT seconds, default 290, still one JSON line).
#   bash benchmarks/gpu_check.sh [--pairs N] [--skip-tests] ...
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
LIMIT=${GPU_CHECK_TIMEOUT:-290}
timeout "$LIMIT" "$PY" benchmarks/gpu_check.py "$@"
rc=$?
if [ "$rc" -eq 124 ]; then
  echo "{\"benchmark\": \"gpu_check\", \"ok\": false, \"error\": \"timed out after $LIMIT s\"}"
fi
exit "$rc"
