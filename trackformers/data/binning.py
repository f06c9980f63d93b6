"""Quantile-balanced parameter bins for the classifier (EncCla, TrackFormers Part 1).

Each track parameter gets ``n`` bins whose edges are quantiles of the training sample, so
bins hold about equal numbers of hits; the joint class of a hit is the mixed-radix index of
its per-parameter bins (parameters in the order given).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """(n_bins - 1,) inner edges at the 1/n .. (n-1)/n quantiles of the finite values.

    Args:
        values: parameter values (non-finite ones ignored).
        n_bins: number of bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("cannot fit quantile bins without finite values")
    edges = np.quantile(v, np.arange(1, n_bins) / n_bins)
    if len(np.unique(edges)) < len(edges):
        raise ValueError(
            f"{n_bins} quantile bins are not distinct for this sample "
            f"({len(np.unique(v))} distinct values); use fewer bins"
        )
    return edges


def fit_class_bins(params: Mapping[str, np.ndarray], n_bins: int | Mapping[str, int]) -> dict:
    """{param: inner edges} for each parameter (same n for all, or per parameter).

    Args:
        params: parameter name -> values.
        n_bins: bins per parameter.
    """
    out = {}
    for name, values in params.items():
        n = n_bins if isinstance(n_bins, int) else n_bins[name]
        out[name] = quantile_edges(values, n)
    return out


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) int64 bin of each value in 0..len(edges) (values on an edge go to the upper bin).

    Args:
        values: (N,) values.
        edges: inner bin edges, increasing.
    """
    return np.searchsorted(np.asarray(edges), np.asarray(values), side="right").astype(np.int64)


def num_classes(bins: Mapping[str, np.ndarray]) -> int:
    """Number of joint classes of ``bins``: the product of (edges + 1) over the parameters.

    Args:
        bins: parameter name -> bin edges.

    Returns:
        The class count (``joint_class`` values lie in [0, count)).
    """
    return int(np.prod([len(e) + 1 for e in bins.values()]))


def joint_class(params: Mapping[str, np.ndarray], bins: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) int64 mixed-radix class over the parameters of ``bins`` (first is most significant).

    Non-finite values get class -1.

    Args:
        params: parameter name -> (N,) values.
        bins: parameter name -> inner edges (its order sets the radix order).
    """
    cls = None
    finite = None
    for name, edges in bins.items():
        v = np.asarray(params[name])
        b = bin_index(v, edges)
        ok = np.isfinite(v)
        cls = b if cls is None else cls * (len(edges) + 1) + b
        finite = ok if finite is None else finite & ok
    if cls is None:
        raise ValueError("joint_class needs at least one parameter")
    return np.where(finite, cls, -1)


def class_centers(bins: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> dict:
    """Median of each parameter inside each of its bins (to turn classes back into values).

    Args:
        bins: parameter name -> inner edges.
        params: parameter name -> values used to place the medians.

    Returns:
        parameter name -> median per bin (nan for an empty bin).
    """
    out = {}
    for name, edges in bins.items():
        v = np.asarray(params[name], dtype=np.float64)
        v = v[np.isfinite(v)]
        b = bin_index(v, edges)
        out[name] = np.array(
            [np.median(v[b == i]) if (b == i).any() else np.nan for i in range(len(edges) + 1)]
        )
    return out
