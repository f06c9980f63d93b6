"""DBSCAN within attention neighbourhoods: the radius graph is searched only among the hits a
cluster plan lets attend each other (a hit's group and the ± adjacency groups), which is
O(N · group size) instead of a search over the whole event.

Hits of one track project onto nearby points of the Part-2 surface, so they share or
neighbour groups; pairs in distant groups are never linked. The result is exactly sklearn's
DBSCAN on the precomputed sparse distance graph of the plan-allowed pairs (tested), and equals
full DBSCAN whenever every eps-pair of the event lies within the plan's neighbourhoods.

Torch implementation: distances are computed group-blocked, queries of group g (padded to the
largest group) against the keys of groups g-a..g+a (padded), as one batched matmul per chunk
of groups. On CUDA the default is the sync-free Triton version in ``range_dbscan`` (same
pairs, same labels). Measured on a synthetic 60 k-hit event (BENCHMARKS.md), only 63 % of
hits get the same cluster as full DBSCAN with groups +-1: prefer ``dbscan`` for low-dimensional
outputs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from trackformers.attention.base import AttentionPlan
from trackformers.cluster.gpu_dbscan import dbscan_from_graph, uses_triton


def plan_radius_graph(x: Tensor, plan: AttentionPlan, eps: float, max_elems: int = 1 << 24):
    """Pairs (i, j), i != j, allowed by the cluster plan with ||x_i - x_j|| <= eps, input rows.

    x: (N, d) in input order. Returns src, dst (E,) int64, both directions present.
    """
    if plan.kind != "cluster" or plan.group_ptr is None:
        raise ValueError(f"plan_radius_graph needs a cluster plan, got kind {plan.kind!r}")
    n = x.shape[0]
    dev = x.device
    perm = plan.perm if plan.perm is not None else torch.arange(n, device=dev)
    xs = x[perm].float()  # (N, d) in plan order
    ptr = plan.group_ptr.long()  # (G+1,)
    g = ptr.numel() - 1
    size = ptr.diff()  # (G,)
    # group range of the event of each group (adjacency never crosses events)
    cu = plan.cu_seqlens.long()
    ev = torch.searchsorted(cu, ptr[:-1], right=True) - 1  # (G,) event of each group
    gfirst = torch.searchsorted(ptr, cu[ev], right=False)  # (G,) first group of that event
    glast = torch.searchsorted(ptr, cu[ev + 1], right=False) - 1  # (G,)
    gi = torch.arange(g, device=dev)
    a = plan.adjacency
    klo = ptr[torch.maximum(gi - a, gfirst)]  # (G,) key range start (sorted rows)
    khi = ptr[torch.minimum(gi + a, glast) + 1]  # (G,)
    qm = int(size.max().item()) if g else 0
    km = int((khi - klo).max().item()) if g else 0
    sq = (xs * xs).sum(1)  # (N,)
    eps2 = eps * eps
    srcs, dsts = [], []
    step = max(1, max_elems // max(qm * km, 1))
    ar_q = torch.arange(qm, device=dev)
    ar_k = torch.arange(km, device=dev)
    for c0 in range(0, g, step):
        c1 = min(g, c0 + step)
        qrow = ptr[c0:c1, None] + ar_q[None]  # (C, qm) sorted row of each query slot
        qok = ar_q[None] < size[c0:c1, None]
        krow = klo[c0:c1, None] + ar_k[None]  # (C, km)
        kok = krow < khi[c0:c1, None]
        qrow = torch.where(qok, qrow, 0)
        krow = torch.where(kok, krow, 0)
        q, k = xs[qrow], xs[krow]  # (C, qm, d), (C, km, d)
        d2 = sq[qrow][:, :, None] + sq[krow][:, None, :] - 2 * torch.bmm(q, k.transpose(1, 2))
        hit = (d2 <= eps2) & qok[:, :, None] & kok[:, None, :]  # (C, qm, km)
        hit &= qrow[:, :, None] != krow[:, None, :]
        c, i, j = torch.nonzero(hit, as_tuple=True)
        srcs.append(perm[qrow[c, i]])
        dsts.append(perm[krow[c, j]])
    if not srcs:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    return torch.cat(srcs), torch.cat(dsts)


def dbscan_in_plan(x: Tensor, plan: AttentionPlan, eps: float, min_samples: int = 5,
                   max_elems: int = 1 << 24, adjacency: int | None = None, impl: str = "auto",
                   rounds: int = 4) -> Tensor:  # fmt: skip
    """(N,) int64 DBSCAN labels on the plan-restricted radius graph; -1 = noise.

    Labels are unique across the batch, numbered by each cluster's smallest input row.
    ``adjacency``: groups searched around a hit's group (default: the plan's own).
    impl: "torch" (group-blocked matmuls, any device), "triton" (sync-free range kernel,
    CUDA), "auto" (triton on CUDA, else torch); same labels.
    """
    if plan.kind != "cluster" or plan.group_id is None:
        raise ValueError(f"dbscan_in_plan needs a cluster plan, got kind {plan.kind!r}")
    n = plan.group_id.numel()
    if x.dim() != 2 or x.shape[0] != n:
        raise ValueError(f"x must be (N, d) with N = {n}, got {tuple(x.shape)}")
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"dbscan_plan impl must be auto, torch or triton, got {impl!r}")
    if impl == "triton" or (impl == "auto" and uses_triton(x)):
        from trackformers.cluster import range_dbscan as rd

        st = rd.start_plan(x, plan, eps, min_samples, adjacency, rounds)
        return rd.complete(st)
    if not torch.isfinite(x).all():
        raise ValueError("dbscan input contains non-finite values")
    if adjacency is not None and adjacency != plan.adjacency:
        plan = dataclasses.replace(plan, adjacency=int(adjacency))
    src, dst = plan_radius_graph(x, plan, eps, max_elems)
    return dbscan_from_graph(src, dst, x.shape[0], min_samples)
