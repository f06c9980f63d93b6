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
# # Compare runs
#
# Side-by-side metrics and efficiency curves of several evaluated runs (outputs of
# `python -m trackformers.evaluate`). Set `TRACKFORMERS_EVAL_DIRS` to a `:`-separated list of
# evaluation directories; the name of each run is its directory name.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from trackformers import viz

ROOT = Path(
    os.environ.get(
        "TRACKFORMERS_ROOT", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
    )
)
default = ":".join(str(p) for p in sorted((ROOT / "outputs").glob("*/eval")))
EVAL_DIRS = [Path(p) for p in os.environ.get("TRACKFORMERS_EVAL_DIRS", default).split(":") if p]
if not EVAL_DIRS:
    raise FileNotFoundError("no evaluated runs: set TRACKFORMERS_EVAL_DIRS or run `make demo`")

runs = {}
for d in EVAL_DIRS:
    name = d.name if d.name != "eval" else d.parent.name
    runs[name] = {
        "metrics": json.loads((d / "metrics.json").read_text()),
        "particles": pd.read_csv(d / "particles.csv"),
        "tracks": pd.read_csv(d / "tracks.csv"),
    }

# %%
keys = [
    "trackml_score",
    "dm_efficiency",
    "perfect_efficiency",
    "lhc_efficiency",
    "fake_rate",
    "duplicate_rate",
    "n_events",
]
table = pd.DataFrame({n: {k: r["metrics"][k] for k in keys} for n, r in runs.items()}).T
table["cluster"] = [r["metrics"]["cluster"]["method"] for r in runs.values()]
display(table)

# %% [markdown]
# ## Efficiency vs pT and η (double majority), fake rate vs η

# %%
parts = {n: r["particles"] for n, r in runs.items()}
fig, ax = plt.subplots(1, 3, figsize=(15, 4))
viz.plot_efficiency(parts, "pt", flags=("dm",), ax=ax[0])
viz.plot_efficiency(parts, "eta", flags=("dm",), ax=ax[1])
viz.plot_fake_rate({n: r["tracks"] for n, r in runs.items()}, ax=ax[2])
fig.tight_layout()

# %% [markdown]
# ## Per-event TrackML score: paired difference on common events

# %%
per_event = pd.concat(
    {
        n: pd.DataFrame(r["metrics"]["per_event"]).set_index("event_id")["trackml_score"]
        for n, r in runs.items()
    },
    axis=1,
)
per_event.describe()
