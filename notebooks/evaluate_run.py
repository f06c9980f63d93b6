# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Evaluate a run
#
# Metrics, efficiency curves and breakdowns of one evaluated checkpoint. Point `EVAL_DIR` at
# the output directory of `python -m trackformers.evaluate ckpt=...` (it holds `metrics.json`,
# `particles.csv`, `tracks.csv`), or set `CKPT` to evaluate a checkpoint here first.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from trackformers import viz
from trackformers.metrics import binned_rate, efficiency_breakdowns

ROOT = Path(
    os.environ.get(
        "TRACKFORMERS_ROOT", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
    )
)
EVAL_DIR = Path(os.environ.get("TRACKFORMERS_EVAL_DIR", ROOT / "outputs/demo/eval"))
CKPT = os.environ.get("TRACKFORMERS_CKPT")  # evaluate this checkpoint first (optional)
DATA = os.environ.get("TRACKFORMERS_DATA", str(ROOT / "data/sample/ttbar_pu10_pixel"))

# %%
if CKPT:
    from trackformers.evaluate import run

    run(
        {
            "ckpt": CKPT,
            "data": DATA,
            "output_dir": str(EVAL_DIR),
            "wandb": {"enabled": False},
            "cluster": {"method": "auto"},
        }
    )
metrics = json.loads((EVAL_DIR / "metrics.json").read_text())
particles = pd.read_csv(EVAL_DIR / "particles.csv")
tracks = pd.read_csv(EVAL_DIR / "tracks.csv")
keys = [
    "trackml_score",
    "dm_efficiency",
    "perfect_efficiency",
    "lhc_efficiency",
    "fake_rate",
    "duplicate_rate",
    "n_events",
    "n_reconstructable",
    "n_candidates",
]
pd.Series({k: metrics[k] for k in keys}, name=metrics["ckpt"]).to_frame()

# %% [markdown]
# Settings used: the clustering and the reconstructable / matching definitions.

# %%
{k: metrics[k] for k in ("cluster", "reconstructable", "matching", "device")}

# %% [markdown]
# ## Efficiency vs pT and η, fake rate vs η

# %%
fig, ax = plt.subplots(1, 3, figsize=(15, 4))
viz.plot_efficiency(particles, "pt", ax=ax[0])
viz.plot_efficiency(particles, "eta", ax=ax[1])
viz.plot_fake_rate(tracks, ax=ax[2])
fig.tight_layout()

# %% [markdown]
# ## Breakdowns: barrel / endcap and pile-up

# %%
bd = efficiency_breakdowns(particles)
pd.concat({k: bd[k][["bin", "n", "k", "rate", "err"]] for k in ("region", "pileup")})

# %% [markdown]
# ## Per-event spread of the TrackML score and the DM efficiency

# %%
per_event = pd.DataFrame(metrics["per_event"])
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
per_event["trackml_score"].plot.hist(ax=ax[0], bins=20, title="TrackML score per event")
per_event["dm_efficiency"].plot.hist(ax=ax[1], bins=20, title="DM efficiency per event")
fig.tight_layout()
per_event[["event_id", "n_hits", "trackml_score", "dm_efficiency", "fake_rate"]].describe()

# %% [markdown]
# Which particles are lost? Completeness of the best track of reconstructable particles.

# %%
rec = particles[particles.reconstructable]
print(binned_rate(particles, "pt", "perfect")[["bin", "n", "rate"]])
rec["best_completeness"].describe()
