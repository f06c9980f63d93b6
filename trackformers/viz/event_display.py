"""Event displays: x–y and r–z views, hits coloured by predicted track next to truth."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trackformers.viz.style import label_colours, plt


def event_display(
    event: Mapping[str, np.ndarray],
    track_id: np.ndarray,
    max_hits: int | None = 20_000,
    seed: int = 0,
    title: str | None = None,
):
    """2 × 2 figure: x–y and r–z, truth particles (left) and predicted tracks (right).

    Noise hits (particle 0) and unassigned hits (track -1) are grey. Large events are
    subsampled to ``max_hits`` hits for drawing (the sample is the same in every panel).

    Args:
        event: the event dict.
        track_id: (nhit,) predicted track per hit.
        max_hits: hits drawn at most (None: all).
        seed: seed of the subsample.
        title: figure title.

    Returns:
        The figure.
    """
    x, y, z = (np.asarray(event[k], dtype=np.float64) for k in ("hit_x", "hit_y", "hit_z"))
    pid = np.asarray(event["hit_particle_id"]).astype(np.int64)
    track_id = np.asarray(track_id)
    if track_id.shape != x.shape:
        raise ValueError(f"track_id has shape {track_id.shape}, event has {x.shape[0]} hits")
    idx = np.arange(len(x))
    if max_hits is not None and len(x) > max_hits:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), max_hits, replace=False))
    r = np.hypot(x, y)
    colours = {
        "truth": label_colours(pid, noise=0),
        "prediction": label_colours(track_id, noise=-1),
    }
    size = float(np.clip(6000 / max(len(idx), 1), 0.5, 10))  # marker area: larger when sparse
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for col, (name, c) in enumerate(colours.items()):
        axes[0, col].scatter(x[idx], y[idx], c=c[idx], s=size, linewidths=0)
        axes[0, col].set(xlabel="x [mm]", ylabel="y [mm]", title=f"{name}: x–y", aspect="equal")
        axes[1, col].scatter(z[idx], r[idx], c=c[idx], s=size, linewidths=0)
        axes[1, col].set(xlabel="z [mm]", ylabel="r [mm]", title=f"{name}: r–z")
    n_tracks = len(np.unique(track_id[track_id >= 0]))
    n_part = len(np.unique(pid[pid > 0]))
    fig.suptitle(title or f"{len(x)} hits, {n_part} particles, {n_tracks} predicted tracks")
    fig.tight_layout()
    return fig
