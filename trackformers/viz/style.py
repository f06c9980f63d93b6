"""Shared matplotlib setup: Agg backend outside notebooks (no display needed), label colours."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # scripts and servers: no display needed; notebooks keep inline

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trackformers.io_atomic import atomic_path  # noqa: E402

NOISE_COLOUR = (0.7, 0.7, 0.7, 0.6)


def label_colours(labels: np.ndarray, noise: int | None = None) -> np.ndarray:
    """(N, 4) RGBA per hit: a stable pseudo-random colour per label, grey for ``noise``.

    Colours depend only on the label value (hashed), so the same track has the same colour in
    every panel; prediction and truth colours are unrelated.

    Args:
        labels: (N,) integer labels.
        noise: the label drawn grey (None: none).
    """
    labels = np.asarray(labels).astype(np.int64)
    h = (labels.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(4096)
    cmap = plt.get_cmap("tab20")
    rgba = cmap((h % np.uint64(20)).astype(int) / 19.0)
    rgba[:, :3] *= 0.55 + 0.45 * ((h // np.uint64(20)) % np.uint64(8)).astype(float)[:, None] / 7
    if noise is not None:
        rgba[labels == noise] = NOISE_COLOUR
    return rgba


def save(fig, path) -> str:
    """Save a figure atomically (temporary name, then renamed; parent directories created) and
    close it; returns the path.

    Args:
        fig: a matplotlib figure.
        path: the image file.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or None)
    finally:
        plt.close(fig)
    return str(path)
