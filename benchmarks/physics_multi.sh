#!/usr/bin/env bash
# Several physics runs on one machine, one per GPU (issue 9's ablation on an nvidia-h200-x4):
# installs the wheelhouse once, then starts benchmarks/physics_run.py for each line of a run
# list, "GPU TAG ARGS...", with CUDA_VISIBLE_DEVICES=GPU --tag TAG, waits for all of them and
# packs each run's files into $OUT/TAG.tar.gz (the device brings back at most 8 files).
# Runs that share a GPU share it for real: put one run per GPU where timings matter.
#   device tool: carry [".wheels", ".whl", ".tfcache"],
#   command `bash benchmarks/physics_multi.sh benchmarks/runs/<list>.txt`
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=${1:?usage: physics_multi.sh RUNLIST}
[ -f "$LIST" ] || { echo "run list $LIST does not exist" >&2; exit 2; }
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
OUT=${OUT:-outputs/physics_multi}
WORK=${WORK:-/tmp/physics_multi}
mkdir -p "$OUT" "$WORK"
if [ -z "${SKIP_INSTALL:-}" ]; then  # SKIP_INSTALL=1: the caller installed the same already
  python3 -m pip install -q --no-index --find-links .wheels uproot awkward hydra-core omegaconf
  python3 -m pip install -q --no-index --no-deps .whl/pythia8mc-*.whl
  python3 -m pip install -q --no-build-isolation --no-deps -e .
fi
if [ -d .tfcache ]; then export TRACKFORMERS_CACHE=$PWD/.tfcache; fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
mapfile -t LINES < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$LIST")
N=${#LINES[@]}
WORKERS=$(( $(nproc) / N - 1 )); [ "$WORKERS" -ge 1 ] || WORKERS=1
declare -A PIDS
for line in "${LINES[@]}"; do
  read -r gpu tag args <<<"$line"
  echo "[$(date -u +%T)] GPU $gpu: $tag $args"
  # shellcheck disable=SC2086  # ARGS are split on purpose
  CUDA_VISIBLE_DEVICES=$gpu python3 benchmarks/physics_run.py --tag "$tag" --out "$WORK/$tag" \
    --workers "$WORKERS" $args >"$WORK/$tag.log" 2>&1 &
  PIDS[$tag]=$!
done
status=0
for tag in "${!PIDS[@]}"; do
  if wait "${PIDS[$tag]}"; then rc=0; else rc=$?; status=1; fi
  echo "[$(date -u +%T)] $tag exit $rc"
  cp "$WORK/$tag.log" "$WORK/$tag/stdout.log" 2>/dev/null || true
  tar -C "$WORK" -czf "$OUT/$tag.tar.gz" "$tag"
  tail -n 3 "$WORK/$tag.log"
done
exit $status
