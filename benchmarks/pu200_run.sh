#!/usr/bin/env bash
# The µ = 200 GPU training run, one device call at a time (benchmarks/pu200_run.py): installs the
# wheelhouse (.wheels: uproot, awkward, hydra; .whl: pythia8mc), simulates the events once per
# machine, trains for this call's budget on N GPUs (DDP) going on from the previous call's
# checkpoint, evaluates on fresh seed-2 events and writes the learning curve (DM vs GPU-minutes).
#   bash benchmarks/pu200_run.sh GPUS TRAIN_SECONDS [extra pu200_run.py arguments]
# Device tool: carry [".wheels", ".whl", ".tfcache", ".resume"], command e.g.
#   bash benchmarks/pu200_run.sh 4 300
# then copy $OUT/state/{last.ckpt,metrics.csv} into .resume/pu200/ for the next call.
# DRY=1: the CPU rehearsal of the same path (no install; 8 + 2 events, tiny model, 2 CPU
# processes under DDP with gloo, 30 s of training): DRY=1 bash benchmarks/pu200_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
if [ -n "${DRY:-}" ]; then
  OUT=${OUT:-outputs/pu200_dry/out}
  PY=${PYTHON:-python3}
  exec $PY benchmarks/pu200_run.py --dry --out "$OUT" --state "$OUT/state" "$@"
fi
gpus=${1:?usage: pu200_run.sh GPUS TRAIN_SECONDS [args]}; budget=${2:?TRAIN_SECONDS}; shift 2
OUT=${OUT:-outputs/pu200_out}
python3 -m pip install -q --no-index --find-links .wheels uproot awkward hydra-core omegaconf
python3 -m pip install -q --no-index --no-deps .whl/pythia8mc-*.whl
python3 -m pip install -q --no-build-isolation --no-deps -e .
# Pythia's multiparton-interaction tables computed on the dev machine (same pythia8mc version)
if [ -d .tfcache ]; then export TRACKFORMERS_CACHE=$PWD/.tfcache; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'
python3 benchmarks/pu200_run.py --out "$OUT" --devices "$gpus" --budget "$budget" "$@"
