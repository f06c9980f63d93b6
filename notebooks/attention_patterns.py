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
# # Attention patterns: how much attention does a track need?
#
# Every sparse attention plan trades compute (the fraction of hit pairs it lets attend) for
# *same-track coverage*: the fraction of a hit's fellow track hits inside its attention range.
# A plan that cuts tracks apart forces the model to infer them from context. Here the
# Part-2 cluster plan (groups of `group_size` hits on the projection surface, ± `adjacency`
# groups) and the φ-window plan are measured on the sample events at several sizes.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from trackformers import viz
from trackformers.attention.plans import attended_pairs, cluster_plan, full_plan, window_plan
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import pack_events
from trackformers.data.reader import read_events

ROOT = Path(
    os.environ.get(
        "TRACKFORMERS_ROOT", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
    )
)
DATA = os.environ.get("TRACKFORMERS_DATA", str(ROOT / "data/sample/ttbar_pu10_pixel"))
events = read_events(DATA)
batch = pack_events(events, FeatureConfig())
pid = batch.particle_id.numpy()
lengths = batch.cu_seqlens.diff().numpy()
print(f"{batch.num_events} events, {batch.num_hits} hits, {len(np.unique(pid[pid > 0]))} particles")

# %%
full_pairs = attended_pairs(full_plan(batch))
rows = []
for gs in (16, 32, 64, 128, 256):
    for adj in (0, 1, 2):
        plan = cluster_plan(batch, group_size=gs, sector_size=max(4 * gs, 256), adjacency=adj)
        cov = viz.same_track_coverage(plan, pid)
        att = attended_pairs(plan) / full_pairs
        full = np.nanmean(cov == 1)
        rows.append(
            {
                "plan": "cluster",
                "size": gs,
                "adjacency": adj,
                "attended": att,
                "coverage": np.nanmean(cov),
                "fully_covered": full,
            }
        )
for w in (16, 32, 64, 128, 256):
    plan = window_plan(batch, w)
    cov = viz.same_track_coverage(plan, pid)
    att = attended_pairs(plan) / full_pairs
    rows.append(
        {
            "plan": "window",
            "size": w,
            "adjacency": 0,
            "attended": att,
            "coverage": np.nanmean(cov),
            "fully_covered": np.nanmean(cov == 1),
        }
    )
study = pd.DataFrame(rows)
display(study)

# %% [markdown]
# Coverage vs attended fraction: up and to the left is better.

# %%
fig, ax = plt.subplots(figsize=(6, 4.5))
for (kind, adj), g in study.groupby(["plan", "adjacency"]):
    label = kind if kind == "window" else f"cluster ±{adj}"
    ax.plot(g["attended"], g["coverage"], "o-", label=label)
ax.set(
    xscale="log", xlabel="fraction of same-event pairs attended", ylabel="mean same-track coverage"
)
ax.grid(alpha=0.3)
ax.legend()

# %% [markdown]
# One event under the cluster plan: groups on the projection surface, the mask in sorted order,
# and the per-hit coverage.

# %%
plan = cluster_plan(batch, group_size=64, sector_size=256, adjacency=1)
fig = viz.plot_attention(batch.coords, plan, pid, event=int(np.argmax(lengths)))
