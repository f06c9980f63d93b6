"""Hit filter before clustering: hits whose filter score (sigmoid of the model's
``filter_logit``) is below a threshold are left out of the tracks (label -1), so they count
as unassigned in the metrics (a particle whose hits are all filtered is not found).

``kept_hits`` is the per-hit decision; ``cluster_kept`` runs any clustering function on the
kept hits alone (compacted, new event boundaries) and scatters the labels back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

FILTER_KEY = "filter_logit"


def check_threshold(threshold, where: str = "filter_threshold") -> float | None:
    """The threshold as a float in (0, 1), or None (no filter); a clear error otherwise.

    Args:
        threshold: the setting (None, or a number).
        where: name of the setting in the error.
    """
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"{where} must be a number in (0, 1) or null, got {threshold!r}")
    t = float(threshold)
    if not (0.0 < t < 1.0) or math.isnan(t):
        raise ValueError(f"{where} must lie in (0, 1) (a sigmoid score), got {threshold}")
    return t


def kept_hits(outputs: Mapping[str, Tensor], threshold: float, key: str = FILTER_KEY) -> Tensor:
    """(N,) bool: hits whose filter score sigmoid(outputs[key]) is >= threshold.

    Args:
        outputs: the model outputs.
        threshold: score threshold in (0, 1).
        key: output holding the filter logits.
    """
    if key not in outputs:
        raise KeyError(
            f"the clustering's filter_threshold={threshold} needs model output {key!r} (a "
            f"model with a hit filter, model.hit_filter); the model gives {sorted(outputs)}. "
            "Set filter_threshold to null for a model without one."
        )
    logit = outputs[key]
    if logit.dim() != 1:
        raise ValueError(f"model output {key!r} must be (N,), got {tuple(logit.shape)}")
    # sigmoid(l) >= t  <=>  l >= logit(t): no sigmoid of every hit needed
    return logit.float() >= math.log(threshold / (1.0 - threshold))


def compact(keep: Tensor, cu_seqlens: Tensor) -> tuple[Tensor, Tensor]:
    """(rows (M,) of the kept hits in input order, their cu_seqlens (B+1,) int32).

    Args:
        keep: (N,) bool.
        cu_seqlens: (B+1,) event boundaries.
    """
    rows = torch.nonzero(keep).squeeze(1)  # (M,)
    csum = torch.zeros(keep.numel() + 1, dtype=torch.long, device=keep.device)
    csum[1:] = torch.cumsum(keep.long(), 0)
    return rows, csum[cu_seqlens.long().to(keep.device)].to(torch.int32)  # (B+1,)


def cluster_kept(
    fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, cu_seqlens: Tensor, keep: Tensor
) -> Tensor:
    """(N,) int64 labels of ``fn(x_kept, cu_kept)`` on the kept hits, -1 for the others.

    Args:
        fn: clustering of packed points, (x, cu_seqlens) -> labels.
        x: (N, d) clustering input.
        cu_seqlens: (B+1,) event boundaries.
        keep: (N,) bool hits to cluster.
    """
    rows, cu = compact(keep.to(x.device), cu_seqlens.to(x.device))
    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)  # (N,)
    if rows.numel():
        labels[rows] = fn(x[rows], cu).to(torch.long)
    return labels
