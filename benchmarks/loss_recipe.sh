#!/usr/bin/env bash
# Issue 17 loss ablation at equal budget: the same small model (d_model 64, 4 layers, dense
# attention) trained on mu = 0 ttbar pixel events with the old contrastive loss and each new
# option, then the validation DM efficiency / fake rate of each (BENCHMARKS.md "Training recipe").
#   python -m trackformers.simulate process=ttbar pileup=0 n_events=300 \
#       detector.keep_volumes=[7,8,9] vertex.sigma_z=5.5 output=/tmp/lossanch_pu0
#   benchmarks/loss_recipe.sh /tmp/lossanch_pu0 /tmp/lossanch_runs 45 00:00:02:00 [loss ...]
set -euo pipefail
DATA=${1:?dataset directory}
OUT=${2:?output directory}
STEPS=${3:-45}
MAXTIME=${4:-00:00:02:00}
shift 4 || true
LOSSES=("$@")
[ ${#LOSSES[@]} -gt 0 ] || LOSSES=(contrastive contrastive_signal contrastive_hard contrastive_hard_signal)
PY=${PY:-python}
mkdir -p "$OUT"
for loss in "${LOSSES[@]}"; do
  nice "$PY" -m trackformers.train experiment=ttbar_pu0_pixel "data.path=$DATA" "loss=$loss" \
    model.encoder.d_model=64 model.encoder.n_heads=4 model.encoder.n_layers=4 \
    data.max_tokens=2000 data.num_workers=0 optim.optimizer.lr=2e-3 \
    optim.scheduler.warmup_steps=10 "trainer.max_steps=$STEPS" "+trainer.max_time=$MAXTIME" \
    trainer.val_check_interval=null trainer.check_val_every_n_epoch=1000 \
    trainer.log_every_n_steps=5 logger=csv "name=recipe_$loss" "hydra.run.dir=$OUT/$loss" \
    >"$OUT/$loss.log" 2>&1
done
"$PY" - "$OUT" "${LOSSES[@]}" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| loss | steps | train s | val DM | val fake | val perfect | TrackML score |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for loss in sys.argv[2:]:
    s = json.loads((out / loss / "summary.json").read_text())
    print(f"| {loss} | {s['global_step']} | {s['train_seconds']:.0f} | "
          f"{100 * s['val/dm_efficiency']:.1f} % | {100 * s['val/fake_rate']:.1f} % | "
          f"{100 * s['val/perfect_efficiency']:.1f} % | {s['val/trackml_score']:.3f} |")
PYEOF
