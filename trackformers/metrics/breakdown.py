"""Efficiency and fake-rate breakdowns over per-particle / per-track tables of many events."""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_BINS = {
    "pt": np.array([0.9, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0]),
    "eta": np.linspace(-4.0, 4.0, 17),
}
CATEGORICAL = ("region", "pileup")


def binned_rate(
    table: pd.DataFrame,
    by: str,
    flag: str,
    bins: np.ndarray | None = None,
    where: str | None = "reconstructable",
) -> pd.DataFrame:
    """Fraction of rows with ``flag`` per bin of ``by`` among rows with ``where`` (if given).

    ``by`` in ``CATEGORICAL`` is grouped by value; otherwise by ``bins`` (default
    ``DEFAULT_BINS[by]``), left-closed. Returns columns bin (label), lo, hi, n, k, rate, err
    (binomial standard error), one row per bin, empty bins included with rate nan.

    Args:
        table: per-particle (or per-track) table.
        by: column to bin.
        flag: bool column counted.
        bins: bin edges (None: ``DEFAULT_BINS[by]``).
        where: bool column that selects the rows (None: all rows).
    """
    for col in (by, flag) + ((where,) if where else ()):
        if col not in table.columns:
            raise KeyError(f"table lacks column {col!r}; has {list(table.columns)}")
    t = table[table[where].astype(bool)] if where else table
    hit = t[flag].astype(bool).to_numpy()
    if by in CATEGORICAL:
        keys = t[by].to_numpy()
        labels = np.unique(keys)
        idx = np.searchsorted(labels, keys)
        lo = hi = labels
    else:
        edges = np.asarray(DEFAULT_BINS[by] if bins is None else bins, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins for {by!r} must be increasing edges, got {edges}")
        idx = np.digitize(t[by].to_numpy(), edges) - 1
        inside = (idx >= 0) & (idx < len(edges) - 1)
        idx, hit = idx[inside], hit[inside]
        lo, hi = edges[:-1], edges[1:]
        labels = [f"[{a:g}, {b:g})" for a, b in zip(lo, hi, strict=True)]
    n = np.bincount(idx, minlength=len(labels))
    k = np.bincount(idx, weights=hit, minlength=len(labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, k / n, np.nan)
        err = np.sqrt(rate * (1 - rate) / n)
    return pd.DataFrame(
        {"bin": labels, "lo": lo, "hi": hi, "n": n, "k": k.astype(int), "rate": rate, "err": err}
    )


def efficiency_breakdowns(particles: pd.DataFrame, flag: str = "dm", bins=None) -> dict:
    """Efficiency tables by pt, eta, pileup and region (barrel/endcap) for one match flag.

    Args:
        particles: per-particle table of ``evaluate_event`` (all events).
        flag: match flag (``dm``, ``perfect``, ``lhc``).
        bins: by -> edges overriding ``DEFAULT_BINS``.

    Returns:
        by -> table of :func:`binned_rate`.
    """
    bins = bins or {}
    return {
        by: binned_rate(particles, by, flag, bins.get(by))
        for by in ("pt", "eta", "pileup", "region")
    }


def fake_rate_vs_eta(tracks: pd.DataFrame, bins: np.ndarray | None = None) -> pd.DataFrame:
    """Fake rate of candidate tracks per bin of mean hit eta (tracks from ``track_table``).

    Args:
        tracks: per-track table.
        bins: eta edges (None: ``DEFAULT_BINS["eta"]``).

    Returns:
        The table of :func:`binned_rate`.
    """
    return binned_rate(tracks, "eta", "fake", bins, where="candidate")
