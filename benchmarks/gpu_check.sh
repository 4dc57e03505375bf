#!/usr/bin/env bash
# The GPU check (issue #18) in one run, a few minutes on one CUDA GPU:
#   1. the test suite's CUDA-marked tests (tests/test_device.py, tests/test_gpu.py: training and
#      scoring on the GPU against the CPU path, a Ray sweep trial on half a GPU, a remote training);
#   2. benchmarks/gpu.py on the demo data: training s, images/s at batch 1 and 32, the largest
#      score difference from the CPU path;
#   3. one `python -m cainnflow sweep --gpus-per-trial 0.5` trial from the command line.
# Each step's output goes to LOG_DIR/<step>.log (default $OUT, else runs/gpu_check); the exit
# status is 0 only when every step passed, 2 when there is no CUDA device (nothing is faked).
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [LOG_DIR]
#   bash benchmarks/gpu_check.sh stash DIR     # keep DIR's wheels on this machine for a later run
#
# On a machine without a package index, packages come as wheels made elsewhere by
# benchmarks/gpu_wheels.py (folders .whl/1, .whl/2 ...): `stash` each folder but the last in
# its own call, then run with `--wheels` the last one; split wheels are joined before install.
set -uo pipefail
cd "$(dirname "$0")/.."
STASH=/tmp/cainnflow-wheels
SITE=/tmp/cainnflow-site
PY=${PYTHON:-python3}

if [ "${1:-}" = stash ]; then
  [ -d "${2:-}" ] || { echo "usage: $0 stash DIR (a folder of wheels)"; exit 64; }
  mkdir -p "$STASH" && cp "$2"/* "$STASH"/ && ls -l "$STASH"
  exit $?
fi
if [ "${1:-}" = --wheels ]; then
  [ -d "${2:-}" ] || { echo "--wheels needs a folder of wheels"; exit 64; }
  mkdir -p "$STASH" && cp "$2"/* "$STASH"/ || exit 1
  shift 2
fi
LOG_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if compgen -G "$STASH/*" >/dev/null; then
  # Parts NAME.part-00, -01 ... become NAME again; then every wheel is installed.
  for first in "$STASH"/*.part-00; do
    [ -e "$first" ] || continue
    whole=${first%.part-00}
    cat "$whole".part-* >"$whole" && rm -f "$whole".part-*
  done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STASH"/*.whl || { echo "could not install the wheels in $STASH"; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device here: nothing to check")' \
  || exit 2
"$PY" -c 'import torch, timm, FrEIA, cainnflow; print("torch", torch.__version__, "timm", timm.__version__)' \
  || { echo "the library does not import: install requirements.txt or pass --wheels"; exit 1; }

failed=()
step() {
  local name=$1 start rc
  shift
  echo "== $name: $*"
  start=$(date +%s)
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $(($(date +%s) - start)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

demo=$(mktemp -d)/demo
step tests "$PY" -m pytest -o addopts= -p no:cacheprovider -m gpu -rs -q tests/test_device.py tests/test_gpu.py
step benchmark "$PY" benchmarks/gpu.py --demo
step sweep_cli bash -c "$PY -m cainnflow make-demo-data '$demo' >/dev/null && $PY -m cainnflow sweep \
  --data-root '$demo' --categories pill_disc --epochs 2 --out '$LOG_DIR/sweep' --gpus-per-trial 0.5 \
  && grep -c cuda '$LOG_DIR/sweep/results.csv'"

if [ ${#failed[@]} -eq 0 ]; then
  echo "GPU check passed: tests, benchmark, sweep"
else
  echo "GPU check FAILED in: ${failed[*]}"
  exit 1
fi
