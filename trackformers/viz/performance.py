"""Efficiency and fake-rate plots from per-particle / per-track tables (trackformers.metrics)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from trackformers.metrics.breakdown import binned_rate
from trackformers.viz.style import plt

FLAG_LABELS = {"dm": "double majority", "perfect": "perfect match", "lhc": "LHC (purity > 0.75)"}


def _errorbar(ax, tab: pd.DataFrame, label: str, **kw):
    centre = 0.5 * (tab["lo"] + tab["hi"])
    half = 0.5 * (tab["hi"] - tab["lo"])
    ax.errorbar(centre, tab["rate"], xerr=half, yerr=tab["err"], fmt="o", ms=3, label=label, **kw)


def plot_efficiency(
    runs: Mapping[str, pd.DataFrame] | pd.DataFrame,
    by: str = "pt",
    flags: tuple[str, ...] = ("dm", "perfect", "lhc"),
    bins: np.ndarray | None = None,
    ax=None,
):
    """Efficiency vs ``by`` ("pt" or "eta") for each flag; ``runs`` maps a name to a particle
    table (or is one table). Returns the figure.

    Args:
        runs: name -> particle table, or one table.
        by: ``pt`` or ``eta``.
        flags: match flags drawn.
        bins: bin edges (None: the defaults).
        ax: axes to draw on (None: a new figure).

    Returns:
        The figure.
    """
    runs = {"": runs} if isinstance(runs, pd.DataFrame) else dict(runs)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4))
    for name, table in runs.items():
        for flag in flags if len(runs) == 1 else flags[:1]:
            label = FLAG_LABELS.get(flag, flag) if len(runs) == 1 else f"{name} ({flag})"
            _errorbar(ax, binned_rate(table, by, flag, bins), label)
    ax.set_xlabel({"pt": "particle $p_T$ [GeV]", "eta": r"particle $\eta$"}.get(by, by))
    ax.set_ylabel("efficiency")
    if by == "pt":
        ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_fake_rate(runs: Mapping[str, pd.DataFrame] | pd.DataFrame, bins=None, ax=None):
    """Fake rate of candidate tracks vs mean hit eta; ``runs`` maps names to track tables.

    Args:
        runs: name -> track table, or one table.
        bins: eta edges (None: the default).
        ax: axes to draw on (None: a new figure).

    Returns:
        The figure.
    """
    runs = {"": runs} if isinstance(runs, pd.DataFrame) else dict(runs)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4))
    for name, tracks in runs.items():
        _errorbar(
            ax, binned_rate(tracks, "eta", "fake", bins, where="candidate"), name or "fake rate"
        )
    ax.set_xlabel(r"track $\eta$ (mean of hits)")
    ax.set_ylabel("fake rate")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_breakdown_bars(particles: pd.DataFrame, by: str, flag: str = "dm", ax=None):
    """Bar chart of efficiency per category (``region`` or ``pileup``).

    Args:
        particles: the particle table.
        by: ``region`` or ``pileup``.
        flag: match flag.
        ax: axes to draw on (None: a new figure).

    Returns:
        The figure.
    """
    tab = binned_rate(particles, by, flag)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 3.5))
    ax.bar([str(b) for b in tab["bin"]], tab["rate"], yerr=tab["err"], color="tab:blue", alpha=0.8)
    ax.set_xlabel(by)
    ax.set_ylabel(f"{FLAG_LABELS.get(flag, flag)} efficiency")
    ax.set_ylim(0, 1.05)
    return fig
