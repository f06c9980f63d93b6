"""CPU reference clustering with scikit-learn, one event at a time (events from cu_seqlens)."""

from __future__ import annotations

import numpy as np


def _events(x: np.ndarray, cu_seqlens: np.ndarray):
    x = np.asarray(x)
    cu = np.asarray(cu_seqlens, dtype=np.int64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, d), got shape {x.shape}")
    if cu.ndim != 1 or len(cu) < 1 or cu[0] != 0 or cu[-1] != len(x) or np.any(np.diff(cu) < 0):
        raise ValueError(f"cu_seqlens {cu.tolist()[:8]}... does not partition {len(x)} rows")
    if not np.all(np.isfinite(x)):
        raise ValueError("clustering input contains non-finite values")
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        yield a, b, x[a:b]


def _offset_labels(per_event: list[np.ndarray]) -> np.ndarray:
    out, offset = [], 0
    for lab in per_event:
        lab = lab.astype(np.int64)
        out.append(np.where(lab >= 0, lab + offset, -1))
        offset += int(lab.max()) + 1 if (lab >= 0).any() else 0
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def dbscan_cpu(x, cu_seqlens, eps: float, min_samples: int = 5, n_jobs: int | None = None):
    """(N,) int64 sklearn DBSCAN labels per event, offset to be unique; -1 = noise.

    Args:
        x: (N, d) points (tensor or array), packed events.
        cu_seqlens: (B+1,) event boundaries.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        n_jobs: sklearn's worker count.
    """
    from sklearn.cluster import DBSCAN  # imported here: GPU-only setups may lack sklearn

    labels = []
    for _, _, xe in _events(x, cu_seqlens):
        if len(xe) == 0:
            labels.append(np.zeros(0, dtype=np.int64))
            continue
        labels.append(DBSCAN(eps=eps, min_samples=min_samples, n_jobs=n_jobs).fit_predict(xe))
    return _offset_labels(labels)


def hdbscan_cpu(
    x,
    cu_seqlens,
    min_cluster_size: int = 5,
    min_samples: int | None = None,
    cluster_selection_epsilon: float = 0.0,
):
    """(N,) int64 sklearn HDBSCAN labels per event, offset to be unique; -1 = noise.

    Args:
        x: (N, d) points (tensor or array), packed events.
        cu_seqlens: (B+1,) event boundaries.
        min_cluster_size: sklearn's ``min_cluster_size``.
        min_samples: sklearn's ``min_samples`` (None: min_cluster_size).
        cluster_selection_epsilon: sklearn's ``cluster_selection_epsilon``.
    """
    from sklearn.cluster import HDBSCAN

    labels = []
    for _, _, xe in _events(x, cu_seqlens):
        if len(xe) < 2:  # HDBSCAN needs two points; a lone hit is noise
            labels.append(np.full(len(xe), -1, dtype=np.int64))
            continue
        model = HDBSCAN(
            min_cluster_size=min(min_cluster_size, len(xe)),
            min_samples=min_samples,
            cluster_selection_epsilon=cluster_selection_epsilon,
            copy=True,
        )
        labels.append(model.fit_predict(xe))
    return _offset_labels(labels)
