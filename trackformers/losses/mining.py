"""Anchor selection and hard-negative mining for the contrastive loss (HEPT-style).

* :func:`signal_labels` keeps the particle labels of "signal" hits (hits of reconstructable
  particles, ``batch.targets["signal"]``) and gives every other hit a label of its own, so it
  has no positive: it is never an anchor nor a positive, only a negative of the anchors.
* :func:`positive_table` lists each hit's same-particle hits, (N, P) with P + 1 the largest
  particle, -1 padded.
* :func:`hard_negatives` finds, for each anchor, the k most similar hits of its event that are
  not of its particle: rows in chunks against the event's keys, so the search holds
  ``tile_elems`` similarities at a time, never an (N, N) matrix; the result is (N, k).

All three run without grad; the loss gathers the listed hits with grad (pairwise_core's
``NeighbourLayout``), so its memory and time are O(N (P + k)) apart from the search.
"""

from __future__ import annotations

import torch
from torch import Tensor


def event_index(cu_seqlens: Tensor, device: torch.device) -> Tensor:
    """(N,) int64 event of each hit.

    Args:
        cu_seqlens: (B + 1,) event boundaries.
        device: the device of the result.
    """
    lengths = cu_seqlens.diff().long().to(device)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)


@torch.no_grad()
def signal_labels(labels: Tensor, signal: Tensor) -> Tensor:
    """(N,) int64 labels with non-signal hits made unique (never equal to another hit's).

    Args:
        labels: (N,) int64 particle ids, 0 = noise.
        signal: (N,) bool, hit of a signal particle (constant over a particle's hits).

    Returns:
        (N,) int64: signal hits keep one label per particle (1..M, their dense rank), every
        other hit gets M + 1 + its row: no positive, so no anchor, still a candidate.
    """
    if signal.shape != labels.shape:
        raise ValueError(
            f"targets['signal'] has shape {tuple(signal.shape)}, particle ids "
            f"{tuple(labels.shape)}: one flag per hit expected"
        )
    keep = signal.bool() & (labels != 0)  # (N,)
    _, rank = torch.unique(labels, return_inverse=True)  # (N,) in [0, N)
    unique = labels.numel() + 1 + torch.arange(labels.numel(), device=labels.device)  # (N,)
    return torch.where(keep, rank + 1, unique)


@torch.no_grad()
def positive_table(labels: Tensor, valid: Tensor, cu_seqlens: Tensor) -> Tensor:
    """(N, P) int64 rows of each hit's other valid hits of the same particle and event.

    Args:
        labels: (N,) int64 particle ids, 0 = noise (noise has no positives).
        valid: (N,) bool, hits that take part in the loss.
        cu_seqlens: (B + 1,) event boundaries.

    Returns:
        (N, P) int64, -1 padded; P = the largest particle's hit count (its own slot is -1).
    """
    n, device = labels.numel(), labels.device
    sub = torch.nonzero(valid & (labels != 0)).squeeze(1)  # (M,) hits that can have positives
    if sub.numel() == 0:
        return torch.full((n, 0), -1, dtype=torch.long, device=device)
    seq = event_index(cu_seqlens, device)
    key = torch.stack([seq[sub], labels[sub]], dim=1)  # (M, 2) (event, particle)
    _, group, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(group, stable=True)  # (M,) sorted by group
    starts = torch.cumsum(counts, 0) - counts  # (G,)
    width = int(counts.max())
    cols = torch.arange(width, device=device)  # (P,)
    slot = starts[group][:, None] + cols[None, :]  # (M, P) positions in `order`
    inside = cols[None, :] < counts[group][:, None]  # (M, P)
    members = sub[order[slot.clamp(max=sub.numel() - 1)]]  # (M, P) hit rows
    members = torch.where(inside & (members != sub[:, None]), members, -1)
    out = torch.full((n, width), -1, dtype=torch.long, device=device)
    out[sub] = members
    return out


@torch.no_grad()
def hard_negatives(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    anchors: Tensor,
    cu_seqlens: Tensor,
    k: int,
    tile_elems: int = 1 << 24,
) -> Tensor:
    """(N, K) int64 rows of each anchor's K most similar valid hits of another particle.

    Similarity is the dot product ``emb_i . emb_j`` (cosine for unit embeddings). Noise and
    other particles' hits are candidates; hits of the anchor's own particle never are.

    Args:
        emb: (N, D) embeddings.
        labels: (N,) int64 particle ids (0 = noise).
        valid: (N,) bool, hits that may be negatives.
        anchors: (N,) bool, rows to mine for (other rows stay -1).
        cu_seqlens: (B + 1,) event boundaries: negatives come from the anchor's event.
        k: negatives per anchor, >= 1.
        tile_elems: similarities held at a time (rows x event hits): the search's memory.

    Returns:
        (N, K) int64 with K = min(k, largest event), in no particular order, -1 where an
        event has fewer candidates.
    """
    if k < 1:
        raise ValueError(f"hard_negatives: k must be >= 1, got {k}")
    bounds = [int(b) for b in cu_seqlens.tolist()]
    longest = max((e - s for s, e in zip(bounds[:-1], bounds[1:], strict=True)), default=0)
    width = min(int(k), longest)
    out = torch.full((labels.numel(), width), -1, dtype=torch.long, device=emb.device)
    if width == 0:
        return out
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        n = e - s
        rows = torch.nonzero(anchors[s:e]).squeeze(1) + s  # (a,) anchor rows of the event
        if n < 2 or rows.numel() == 0:
            continue
        keys, lab_k, val_k = emb[s:e], labels[s:e], valid[s:e]  # (n, D), (n,), (n,)
        kk = min(width, n)
        chunk = max(1, int(tile_elems) // n)
        for r0 in range(0, rows.numel(), chunk):
            rr = rows[r0 : r0 + chunk]  # (c,)
            sim = emb[rr] @ keys.T  # (c, n)
            own = (labels[rr][:, None] == lab_k[None, :]) | ~val_k[None, :]  # (c, n), incl. self
            sim.masked_fill_(own, float("-inf"))
            top, idx = torch.topk(sim, kk, dim=1, sorted=False)  # (c, kk), any order
            out[rr, :kk] = torch.where(top > float("-inf"), idx + s, -1)
    return out
