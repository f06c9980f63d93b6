#!/usr/bin/env bash
# The GPU call of the physics results (issue 9) and the compile check (issue 7): installs the
# wheelhouse (.wheels: uproot, awkward, hydra; .whl: pythia8mc), then benchmarks/physics_run.py.
# Device tool: carry [".wheels", ".whl", ".tfcache"], command `bash benchmarks/physics_run.sh`.
# Extra arguments go to physics_run.py (e.g. --budget 540 --pileup 20 --experiment ttbar_pu20).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
OUT=${OUT:-outputs/physics_out}
python3 -m pip install -q --no-index --find-links .wheels uproot awkward hydra-core omegaconf
python3 -m pip install -q --no-index --no-deps .whl/pythia8mc-*.whl
python3 -m pip install -q --no-build-isolation --no-deps -e .
# Pythia's multiparton-interaction tables computed on the dev machine (same pythia8mc version)
if [ -d .tfcache ]; then export TRACKFORMERS_CACHE=$PWD/.tfcache; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 benchmarks/physics_run.py --out "$OUT" "$@"
