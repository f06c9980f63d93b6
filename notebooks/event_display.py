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
# # Event display
#
# x–y and r–z views of one event, hits coloured by predicted track next to the truth.
# With `TRACKFORMERS_CKPT` set, the prediction is the model's (inference + its clustering);
# without it, the clustering stage alone is shown: exact DBSCAN on the true track parameters
# (η, φ, q/pT) smeared by `SIGMA`, i.e. what the clustering makes of a regressor of that
# resolution.

# %%
import os
from pathlib import Path

import numpy as np
import torch

from trackformers import viz
from trackformers.cluster import dbscan
from trackformers.data.reader import iter_events
from trackformers.metrics import evaluate_event

ROOT = Path(
    os.environ.get(
        "TRACKFORMERS_ROOT", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
    )
)
DATA = os.environ.get("TRACKFORMERS_DATA", str(ROOT / "data/sample/ttbar_pu10_pixel"))
CKPT = os.environ.get("TRACKFORMERS_CKPT")
EVENT = int(os.environ.get("TRACKFORMERS_EVENT", 0))  # index of the event in DATA
SIGMA = 0.01

event = next(e for i, e in enumerate(iter_events(DATA)) if i == EVENT)
n_hits, n_part = len(event["hit_x"]), len(event["part_particle_id"])
print(f"event {int(event['event_id'])}: {n_hits} hits, {n_part} particles")

# %%
if CKPT:
    from trackformers.inference import load_model
    from trackformers.inference.stream import infer

    loaded = load_model(CKPT, "cpu", "dense")
    evs, labels, used, _ = infer(
        loaded.model,
        [event],
        loaded.features,
        loaded.device,
        10**6,
        {"method": "auto"},
        loaded.config,
    )
    event, track_id, source = evs[0], labels[0], f"model {Path(CKPT).name}, {used['method']}"
else:
    pid = event["hit_particle_id"].astype(np.int64)
    row = np.searchsorted(event["part_particle_id"].astype(np.int64), pid)
    row = np.clip(row, 0, len(event["part_particle_id"]) - 1)
    px, py, pz = (event[k].astype(np.float64)[row] for k in ("part_px", "part_py", "part_pz"))
    pt = np.hypot(px, py)
    params = np.stack(
        [
            np.arcsinh(pz / pt),
            np.sin(np.arctan2(py, px)),
            np.cos(np.arctan2(py, px)),
            event["part_q"][row] / pt,
        ],
        1,
    )
    params += np.random.default_rng(0).normal(0, SIGMA, params.shape)
    params[pid == 0] = np.random.default_rng(1).uniform(-3, 3, ((pid == 0).sum(), 4))  # noise hits
    cu = torch.tensor([0, len(pid)], dtype=torch.int32)
    track_id = dbscan(torch.from_numpy(params), cu, eps=3 * SIGMA, min_samples=3).numpy()
    source = f"DBSCAN on true parameters smeared by {SIGMA}"

metrics, particles = evaluate_event(event, track_id)
print(source)
{k: round(metrics[k], 4) for k in ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate")}

# %%
fig = viz.event_display(event, track_id, title=f"event {int(event['event_id'])}: {source}")

# %% [markdown]
# Lost particles (not double-majority matched) among the reconstructable ones:

# %%
particles[particles.reconstructable & ~particles.dm][
    ["particle_id", "pt", "eta", "nhits", "best_nhits", "best_purity"]
].head(10)
