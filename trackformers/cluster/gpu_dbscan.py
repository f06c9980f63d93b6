"""Exact DBSCAN in torch for packed events (GPU, also runs on CPU tensors).

1. Radius graph: points are hashed into a grid of cell size eps over (up to) three
   coordinates — the point itself when d <= 3, else its projection on the three principal
   axes (orthonormal, so no pair within eps is ever more than one cell apart) — prefixed
   by the event index so that no pair crosses events.
   Cells are sorted; for each point the candidate neighbours are the 3^(k-1) contiguous key
   ranges of the adjacent cells (the last grid axis is contiguous in key space). Candidates
   are filtered by the full-dimensional Euclidean distance <= eps. Every pair within eps lies
   in adjacent cells, so the graph is exact. Pairs are processed in chunks of at most
   ``max_pairs`` to bound memory.
2. Core points: at least ``min_samples`` neighbours, the point itself included (sklearn).
3. Clusters: connected components of the core-core graph, each labelled by its smallest
   point index; a border point takes the smallest label among its core neighbours.

sklearn's DBSCAN numbers clusters in the order of their smallest core index, and a border point
reachable from two clusters joins the one expanded first, i.e. the one with the smaller
smallest core index. Step 3 reproduces both, so labels equal sklearn's per event exactly
(up to the per-event offset that makes labels unique across the batch).

This module is the torch implementation (any device; a few host syncs per call). On CUDA,
``dbscan`` runs by default the sync-free, CUDA-graph capturable version of the same search in
``range_dbscan`` (Triton kernels walking the same grid ranges, no pair list), same labels.
"""

from __future__ import annotations

import itertools
import logging
import os

import numpy as np
import torch
from torch import Tensor

from trackformers.cluster import range_dbscan as rd
from trackformers.cluster.components import connected_components

log = logging.getLogger(__name__)
DENSE_WARN_PAIRS_PER_POINT = 2000  # candidate pairs per point above which DBSCAN warns


def _seq_index(cu_seqlens: Tensor, n: int) -> Tensor:
    lengths = cu_seqlens.diff().long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)
    if seq.numel() != n:
        raise ValueError(f"cu_seqlens covers {seq.numel()} hits but x has {n} rows")
    return seq  # (N,)


def grid_projection(x: Tensor, k: int) -> Tensor:
    """(N, min(k, d)) coordinates for the grid: x itself when d <= k, else its projection on
    the top-k principal axes (orthonormal, so projected distances never exceed true ones).

    Args:
        x: (N, d) points.
        k: grid dimensions at most.
    """
    n, d = x.shape
    if d <= k or n < 2:
        return x
    xc = x - x.mean(0)  # (N, d)
    cov = (xc.T @ xc).double().cpu()  # (d, d), tiny: decomposed on the CPU
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    basis = vecs[:, -k:].flip(1).to(device=x.device, dtype=x.dtype)  # (d, k) orthonormal
    return x @ basis  # (N, k)


def _grid_keys(p: Tensor, seq: Tensor, eps: float):
    """Cell key per point from grid coordinates p (N, k), the key strides, and k used."""
    k = p.shape[1]
    lo, hi = p.amin(0), p.amax(0)  # (k,), (k,)
    stats = torch.cat([lo, hi, seq.max().reshape(1).to(p.dtype)]).tolist()  # the one sync
    lo_l, hi_l, n_seq = stats[:k], stats[k : 2 * k], int(stats[-1]) + 1
    scale = max(max(abs(v) for v in lo_l), max(abs(v) for v in hi_l))
    cell_size = eps * (1 + 1e-4) + 1e-6 * scale  # > eps: absorbs projection rounding
    cell = torch.floor((p - lo) / cell_size).long() + 1  # (N, k), >= 1 so that cell-1 >= 0
    # cells per axis incl. padding on both sides (+1 spare against float rounding)
    sizes = [int((h - l) / cell_size) + 4 for l, h in zip(lo_l, hi_l, strict=True)]
    while k > 1 and n_seq * float(np.prod(np.array(sizes[:k], dtype=np.float64))) > 2**62:
        k -= 1  # drop the least spread axis until keys fit into int64 (still exact, slower)
    strides = [1] * k
    for j in range(k - 2, -1, -1):
        strides[j] = strides[j + 1] * sizes[j + 1]
    key = seq * (strides[0] * sizes[0])  # (N,)
    for j in range(k):
        key = key + cell[:, j] * strides[j]
    return key, strides, k


def radius_graph(
    x: Tensor, cu_seqlens: Tensor, eps: float, max_pairs: int = 1 << 24, max_dims: int = 3
) -> tuple[Tensor, Tensor]:
    """All ordered pairs (i, j), i != j, of one event with ||x_i - x_j|| <= eps.

    Args:
        x: (N, d) points.
        cu_seqlens: (B+1,) event boundaries.
        eps: radius.
        max_pairs: candidate pairs per chunk.
        max_dims: grid dimensions at most.

    Returns:
        src, dst (E,) int64, both directions present.
    """
    n = x.shape[0]
    seq = _seq_index(cu_seqlens, n)
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty
    key, strides, k = _grid_keys(grid_projection(x, max_dims), seq, eps)
    order = torch.argsort(key)  # (N,)
    skey = key[order]  # (N,) sorted keys
    xs = x[order]  # (N, d) points in key order
    # contiguous candidate ranges: all offsets in the first k-1 axes, last axis -1..+1
    offsets = [
        sum(o * s for o, s in zip(off, strides[:-1], strict=True))
        for off in itertools.product((-1, 0, 1), repeat=k - 1)
    ]
    off = torch.tensor(offsets, device=x.device, dtype=torch.long)  # (R,)
    base = skey[:, None] + off[None, :]  # (N, R)
    start = torch.searchsorted(skey, base - strides[-1])  # (N, R) first candidate position
    end = torch.searchsorted(skey, base + strides[-1], right=True)  # (N, R)
    count = (end - start).reshape(-1)  # (N*R,)
    per_point = (end - start).sum(1)  # (N,)
    cum = torch.cumsum(per_point, 0)  # (N,)
    # chunk query points so that each chunk holds at most max_pairs candidates
    bounds = [0]
    total = int(cum[-1].item())
    if total > DENSE_WARN_PAIRS_PER_POINT * n:
        log.warning(
            "DBSCAN: %d candidate pairs for %d points (%.0f per point) at eps=%g: the points "
            "are crowded (an untrained or collapsed embedding?), so clustering is slow and "
            "near-quadratic; lower eps, or use method dbscan_plan to stay within attention "
            "neighbourhoods",
            total,
            n,
            total / n,
            eps,
        )
    if total > max_pairs:
        cuts = torch.arange(max_pairs, total, max_pairs, device=x.device)
        bounds += torch.searchsorted(cum, cuts, right=True).tolist()
    bounds.append(n)
    eps2 = eps * eps
    srcs, dsts = [], []
    r = off.numel()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b <= a:
            continue
        cnt = count[a * r : b * r]  # (M*R,)
        st = start[a:b].reshape(-1)  # (M*R,)
        m = total if len(bounds) == 2 else int(cnt.sum().item())  # one chunk: known
        row = torch.repeat_interleave(
            torch.arange(a * r, b * r, device=x.device), cnt, output_size=m
        )
        first = torch.cumsum(cnt, 0) - cnt  # (M*R,) offset of each range in the flat pair list
        pos = st[row - a * r] + (torch.arange(m, device=x.device) - first[row - a * r])  # (m,)
        q = torch.div(row, r, rounding_mode="floor")  # (m,) query position in key order
        d2 = (xs[q] - xs[pos]).pow(2).sum(1)  # (m,)
        keep = (d2 <= eps2) & (q != pos)
        idx = torch.nonzero(keep).squeeze(1)  # (E_chunk,) one sync for both ends
        srcs.append(order[q[idx]])
        dsts.append(order[pos[idx]])
    return torch.cat(srcs), torch.cat(dsts)


def dbscan(
    x: Tensor,
    cu_seqlens: Tensor,
    eps: float,
    min_samples: int = 5,
    max_pairs: int = 1 << 24,
    max_dims: int = 3,
    impl: str = "auto",
    rounds: int = 4,
) -> Tensor:
    """(N,) int64 DBSCAN labels, unique across events, -1 = noise; equal to sklearn per event.

    impl: "torch" (radius graph + components, this module, any device), "triton" (the
    sync-free range kernel of ``range_dbscan``, CUDA), "auto" (triton on CUDA, else torch).
    Both give the same labels. ``rounds``: component rounds before the convergence check
    (triton). ``max_pairs``: chunking of the torch radius graph.

    Labels of event b are offset by the number of clusters in events < b, so
    ``labels - labels[event].min()`` reproduces sklearn's numbering of event b.

    Args:
        x: (N, d) points, packed events.
        cu_seqlens: (B+1,) event boundaries.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        max_pairs: candidate pairs per chunk (torch).
        max_dims: grid dimensions at most.
        impl: ``torch``, ``triton`` or ``auto``.
        rounds: component rounds before the convergence check (triton).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (N, d), got shape {tuple(x.shape)}")
    if eps <= 0 or min_samples < 1:
        raise ValueError(
            f"need eps > 0 and min_samples >= 1, got eps={eps}, min_samples={min_samples}"
        )
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"dbscan impl must be auto, torch or triton, got {impl!r}")
    if impl == "triton" or (impl == "auto" and uses_triton(x)):

        def fallback():  # cell keys overflow int64: the torch path drops grid axes
            return dbscan(x, cu_seqlens, eps, min_samples, max_pairs, max_dims, "torch")

        st = rd.start_grid(x, cu_seqlens, eps, min_samples, max_dims, rounds)
        return rd.complete(st, fallback=fallback)
    if not torch.isfinite(x).all():
        raise ValueError("dbscan input contains non-finite values")
    n = x.shape[0]
    src, dst = radius_graph(x, cu_seqlens, eps, max_pairs, max_dims)
    return dbscan_from_graph(src, dst, n, min_samples)


def uses_triton(x: Tensor) -> bool:
    """The sync-free Triton path runs on CUDA tensors (on CPU only under TRITON_INTERPRET=1).

    Args:
        x: the points to cluster.
    """
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def dbscan_from_graph(src: Tensor, dst: Tensor, n: int, min_samples: int) -> Tensor:
    """(n,) DBSCAN labels from a symmetric eps-neighbour graph (pairs i != j, both directions).

    Core: >= min_samples neighbours incl. itself; clusters = components of the core graph,
    numbered by smallest core index; a border point joins its smallest-numbered core cluster.

    Args:
        src: (E,) int64 edge sources.
        dst: (E,) int64 edge targets.
        n: number of points.
        min_samples: neighbours (the point included) of a core point.
    """
    ones = torch.ones_like(src)
    n_neigh = torch.ones(n, dtype=torch.long, device=src.device).scatter_add_(0, src, ones)  # (N,)
    core = n_neigh >= min_samples  # (N,)
    cc = torch.nonzero(core[src] & core[dst]).squeeze(1)  # (E_core,) core-core edges
    root = connected_components(src[cc], dst[cc], n)  # (N,) min index of the core component
    big = torch.iinfo(torch.long).max
    label = torch.where(core, root, torch.full_like(root, big))  # (N,)
    border = torch.nonzero(core[src] & ~core[dst]).squeeze(1)  # (E_border,) core -> non-core
    label = label.scatter_reduce(0, dst[border], root[src[border]], reduce="amin")
    assigned = label != big
    # dense numbering in root order; unassigned points (label = big) sort last and become -1
    _, dense = torch.unique(label, return_inverse=True)  # (N,)
    return torch.where(assigned, dense, torch.full_like(dense, -1))
