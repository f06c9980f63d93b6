#!/usr/bin/env bash
# GPU call of the recipe learning curves: installs the wheelhouse (.wheels: uproot, awkward,
# hydra; .whl: pythia8mc), simulates mu = 0 tt-bar pixel events with the TrackML vertex spread
# on all cores, then runs benchmarks/recipe_sweep.py over a variants file, all variants at once
# on the one GPU. Device tool: carry [".wheels", ".whl"], command
#   bash benchmarks/recipe_sweep.sh benchmarks/runs/recipe_pu0_baseline.yaml 3000 420
# (variants file, steps, seconds the sweep may take before its curves are collected as they are).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HYDRA_FULL_ERROR=1
variants=$1; steps=${2:-3000}; budget=${3:-420}; events=${EVENTS:-4000}
OUT=${OUT:-outputs/sweep_out}
python3 -m pip install -q --no-index --find-links .wheels uproot awkward hydra-core omegaconf || exit 1
python3 -m pip install -q --no-index --no-deps .whl/pythia8mc-*.whl || exit 1
python3 -m pip install -q --no-build-isolation --no-deps -e . || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
if [ -n "${GPU_TESTS:-}" ]; then  # e.g. GPU_TESTS="tests/test_hit_filter.py": their gpu tests first
  timeout "${GPU_TESTS_S:-120}" python3 -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS 2>&1 | tail -15
fi
t0=$(date +%s)
python3 -m trackformers.simulate process=ttbar pileup=0 n_events=$events detector.keep_volumes=[7,8,9] \
  vertex.sigma_z=5.5 seed=1 workers=16 progress=false output=data/sweep_pu0 > $OUT/simulate.log 2>&1 \
  || { tail -20 $OUT/simulate.log; exit 1; }
echo "simulated $events events in $(( $(date +%s) - t0 )) s"
run=outputs/sweep
timeout "$budget" python3 benchmarks/recipe_sweep.py "$variants" --out $run --data data/sweep_pu0 \
  --steps "$steps" --val-every "${VAL_EVERY:-250}" --parallel 8 --threads 2 > $OUT/sweep.log 2>&1
echo "sweep rc $?"
python3 benchmarks/recipe_sweep.py "$variants" --out $run --data data/sweep_pu0 --collect
cp $run/curves.json $run/curves.md $run/curves.png $OUT/ 2>/dev/null
for d in $run/*/; do n=$(basename $d); tail -3 $d/train.log | sed "s/^/[$n] /"; done > $OUT/tails.log
for d in $run/*/; do echo "[$(basename $d)] $(grep -h "tune_clustering:" $d/train.log | sed 's/.*tune_clustering: //')"; done
