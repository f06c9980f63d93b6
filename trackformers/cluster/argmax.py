"""Hit→track assignment for classifier heads: each hit takes its most probable class."""

from __future__ import annotations

import torch
from torch import Tensor


def argmax_assign(
    logits: Tensor, cu_seqlens: Tensor, noise_class: int | None = None, min_prob: float = 0.0
) -> Tensor:
    """(N,) int64 track labels, unique across events; -1 for noise / low-confidence hits.

    logits: (N, C) class scores per hit; classes are track slots of an event, so event b's
    class c becomes label b * C + c. ``noise_class`` marks the "no track" class; hits whose
    softmax maximum is below ``min_prob`` are left unassigned.

    Args:
        logits: (N, C) class scores per hit.
        cu_seqlens: (B+1,) event boundaries.
        noise_class: the "no track" class (None: every class is a track slot).
        min_prob: softmax maximum below which a hit stays unassigned.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    n, c = logits.shape
    lengths = cu_seqlens.diff().long()
    if int(lengths.sum()) != n:
        raise ValueError(f"cu_seqlens covers {int(lengths.sum())} hits, logits have {n} rows")
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=logits.device), lengths)
    return argmax_labels(logits, seq, noise_class, min_prob)


def argmax_labels(
    logits: Tensor, seq: Tensor, noise_class: int | None = None, min_prob: float = 0.0
) -> Tensor:
    """``argmax_assign`` given the event index (N,) of every row: no checks, no host sync.

    Args:
        logits: (N, C) class scores per hit.
        seq: (N,) event index of every hit.
        noise_class: the "no track" class.
        min_prob: softmax maximum below which a hit stays unassigned.

    Returns:
        (N,) int64 labels.
    """
    c = logits.shape[1]
    prob, cls = torch.softmax(logits.float(), dim=-1).max(-1)  # (N,), (N,)
    label = seq * c + cls  # (N,)
    drop = prob < min_prob
    if noise_class is not None:
        drop |= cls == noise_class
    return torch.where(drop, torch.full_like(label, -1), label)
