#!/usr/bin/env bash
# Equal-budget CPU comparison of the hit filter and the augmentation (issue 17, points 1-3):
# a small model (d_model 64, 4 layers, dense attention) on mu = 0 ttbar pixel events with the
# TrackML vertex spread, trained for BUDGET (default 2 min) per variant; prints the clustering
# tuned on validation and the metrics of `evaluate` on fresh events of another seed.
#   benchmarks/hitfilter_ablation.sh [BUDGET=00:00:02:00] [VARIANTS="base filter filter_aug"]
# env: PY, DATA, EVAL, OUT, TRAINER (cpu | default), MAX_STEPS (the cosine schedule's length)
set -euo pipefail
BUDGET=${1:-00:00:02:00}
VARIANTS=${2:-"base filter filter_aug"}
PY=${PY:-python}
DATA=${DATA:-/tmp/hitfilter_pu0}
EVAL=${EVAL:-/tmp/hitfilter_pu0_eval}
OUT=${OUT:-/tmp/hitfilter_runs}
TRAINER=${TRAINER:-cpu}      # cpu | default (a GPU: bf16-mixed)
[ -d "$DATA" ] || $PY -m trackformers.simulate process=ttbar pileup=0 n_events=300 \
  detector.keep_volumes=[7,8,9] vertex.sigma_z=5.5 output="$DATA"
[ -d "$EVAL" ] || $PY -m trackformers.simulate process=ttbar pileup=0 n_events=100 seed=2 \
  detector.keep_volumes=[7,8,9] vertex.sigma_z=5.5 output="$EVAL"
common=(experiment=ttbar_pu0_pixel "data.path=$DATA" data.num_workers=0 data.max_tokens=2000
  "model.encoder={d_model: 64, n_heads: 4, n_layers: 4}" optim.optimizer.lr=2e-3
  optim.scheduler.warmup_steps=50 "trainer=$TRAINER" "trainer.max_steps=${MAX_STEPS:-1000}" "+trainer.max_time=$BUDGET"
  trainer.val_check_interval=100000 logger=csv callbacks.rich_progress_bar=null)
for v in $VARIANTS; do
  case $v in
    base) extra=() ;;
    filter) extra=(model=contrastive_filter loss=contrastive_filter) ;;
    aug) extra=(data.augment.rotate_phi=true data.augment.reflect_z=true) ;;
    filter_aug) extra=(model=contrastive_filter loss=contrastive_filter
                       data.augment.rotate_phi=true data.augment.reflect_z=true) ;;
    *) echo "unknown variant $v"; exit 2 ;;
  esac
  $PY -m trackformers.train "${common[@]}" "${extra[@]}" name="hf_$v" "hydra.run.dir=$OUT/$v" \
    > "$OUT.$v.log" 2>&1 || { tail -30 "$OUT.$v.log"; exit 1; }
  $PY -m trackformers.evaluate "ckpt=$OUT/$v/checkpoints/last.ckpt" "data=$EVAL" plots=false \
    wandb.enabled=false "output_dir=$OUT/$v/eval" > "$OUT.$v.eval.log" 2>&1 \
    || { tail -30 "$OUT.$v.eval.log"; exit 1; }
  $PY - "$OUT/$v" <<'PY'
import json, sys, torch
d = sys.argv[1]
s = json.load(open(f"{d}/summary.json"))
c = torch.load(f"{d}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)["clustering"]
m = json.load(open(f"{d}/eval/metrics.json"))
print(f"{d}: steps {s['global_step']} tuned eps={c['params']['eps']} ms={c['params']['min_samples']} "
      f"thr={c['filter_threshold']} val DM {c['metrics']['dm_efficiency']:.4f} fake "
      f"{c['metrics']['fake_rate']:.4f} | fresh DM {m['dm_efficiency']:.4f} fake {m['fake_rate']:.4f} "
      f"score {m['trackml_score']:.4f} ({m['n_events']} events)")
PY
done
