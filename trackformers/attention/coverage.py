"""How much of each track an attention plan lets a hit see: same-particle pair recall.

A hit can only gather information from hits it attends (in one layer). ``pair_recall`` counts,
over all ordered pairs (i, j), i != j, of hits of the same particle, the fraction that the
plan's mask allows (query i, key j), optionally split by a per-hit label such as barrel /
endcap. It works from the plan's per-row key ranges (``row_ranges``), in O(sum of n_p^2) over
particles p, never an N x N mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackformers.attention.base import AttentionPlan
from trackformers.attention.plans import row_ranges


def same_particle_pairs(particle_id: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered pairs (a, b), a != b, of hits (input rows) with the same particle id != 0.

    Args:
        particle_id: (N,) particle id of each hit, 0 = noise.

    Returns:
        (a, b), each (P,) int64 row indices of the pairs.
    """
    rows = torch.nonzero(particle_id != 0).squeeze(1)  # (M,)
    pid = particle_id[rows]
    order = torch.argsort(pid, stable=True)
    rows, pid = rows[order], pid[order]  # grouped by particle
    _, counts = torch.unique_consecutive(pid, return_counts=True)  # (P,)
    starts = torch.cumsum(counts, 0) - counts  # (P,)
    per_hit = torch.repeat_interleave(counts, counts)  # (M,) size of the hit's particle
    first = torch.repeat_interleave(starts, counts)  # (M,) first sorted index of its particle
    a = torch.repeat_interleave(torch.arange(rows.numel()), per_hit)  # (pairs,)
    offset = torch.arange(a.numel()) - torch.repeat_interleave(
        torch.cumsum(per_hit, 0) - per_hit, per_hit
    )
    b = first[a] + offset  # (pairs,) every hit of the same particle, itself included
    keep = a != b
    return rows[a[keep]], rows[b[keep]]


def pair_recall(
    plan: AttentionPlan, particle_id: Tensor, label: Tensor | None = None
) -> dict[str, float]:
    """Fraction of same-particle hit pairs the plan attends; ``particle_id`` (N,) in input
    order, 0 = noise (ignored); ``label`` (N,) int optional: recall per label of the query
    hit, keys ``"all"`` and ``"label=<v>"``. Pairs of particles with one hit do not exist.

    Args:
        plan: the attention plan of one batch.
        particle_id: (N,) particle id per hit, input order.
        label: (N,) optional label of each hit (e.g. its volume).

    Returns:
        ``"all"`` and ``"label=<v>"`` -> fraction of pairs attended (nan without pairs).
    """
    pid = particle_id.cpu().long()
    n = pid.numel()
    a, b = same_particle_pairs(pid)  # (pairs,), (pairs,) input rows
    lo, hi = (t.cpu() for t in row_ranges(plan))  # (N, R) in sorted order
    if lo.shape[0] != n:
        raise ValueError(f"plan covers {lo.shape[0]} hits but particle_id has {n}")
    inv = torch.arange(n) if plan.inv_perm is None else plan.inv_perm.cpu()
    qa, kb = inv[a], inv[b]  # sorted positions of query and key
    seen = ((lo[qa] <= kb[:, None]) & (kb[:, None] < hi[qa])).any(1)  # (pairs,)
    out = {"all": seen.float().mean().item() if seen.numel() else float("nan")}
    if label is not None:
        lab = label.cpu().long()[a]
        for v in torch.unique(lab).tolist():
            out[f"label={v}"] = seen[lab == v].float().mean().item()
    return out


__all__ = ["pair_recall", "same_particle_pairs"]
