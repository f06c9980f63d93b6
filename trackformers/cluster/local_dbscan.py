"""DBSCAN within attention neighbourhoods: the radius graph is searched only among the hits
an attention plan lets attend each other, O(N * neighbourhood) instead of a search over the
whole event ("radius graph within attention neighbourhoods + connected components").

The neighbourhood (``neighbourhood_plan``) is the model's own plan (a cluster plan's group
+- adjacency, a window plan's +-W phi positions) or a clustering-only plan built from the hit
coordinates, independent of the model's attention: a phi-sorted window of +-W hits
(``neighbourhood: window``; wraps around at +-pi, never crosses events) or a Part-2 cluster
plan. Hits of one track lie close in phi (and on the Part-2 surface), so pairs far apart are
never linked. The result is exactly sklearn's DBSCAN on the precomputed sparse distance graph
of the plan-allowed pairs (tested), and equals full DBSCAN whenever every eps-pair of the
event lies within the neighbourhoods (e.g. a window covering the whole event).

Torch implementation (``ranges_radius_graph``): the candidates of every sorted row are
gathered from the plan's ranges in chunks of rows. On CUDA the default is the sync-free
tiled Triton version in ``range_dbscan`` / ``tiled_ranges`` (same pairs, same labels).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from trackformers.attention import plans
from trackformers.attention.base import AttentionPlan
from trackformers.cluster import range_dbscan as rd
from trackformers.cluster.gpu_dbscan import dbscan_from_graph, uses_triton
from trackformers.data.batch import PackedBatch


def plan_radius_graph(x: Tensor, plan: AttentionPlan, eps: float, max_elems: int = 1 << 24):
    """Pairs (i, j), i != j, allowed by the cluster plan with ||x_i - x_j|| <= eps, input rows.

    Args:
        x: (N, d) points in input order.
        plan: a cluster plan.
        eps: radius.
        max_elems: gathered coordinates per chunk.

    Returns:
        src, dst (E,) int64, both directions present.
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


NEIGHBOURHOODS = ("model", "window", "cluster")


def neighbourhood_plan(
    plan: AttentionPlan | None,
    coords: Tensor | None,
    cu_seqlens: Tensor,
    neighbourhood: str = "model",
    window: int | None = None,
    adjacency: int | None = None,
    group_size: int = 128,
    sector_size: int = 4096,
    max_seqlen: int | None = None,
    sync: bool | None = None,
) -> AttentionPlan:
    """The plan whose mask restricts the radius graph of ``dbscan_in_plan``.

    neighbourhood "model": ``plan`` (the model's own attention plan, any kind), with
    ``adjacency`` / ``window`` overriding a cluster / window plan's; "window": a phi-sorted
    window plan of +-``window`` hits built from ``coords`` (N, 3), independent of the model's
    attention; "cluster": a Part-2 cluster plan (group_size, sector_size, adjacency, default
    1) from ``coords``. ``max_seqlen``: longest event (computed when None, one host sync);
    ``sync``: passed to the plan builder (False inside a CUDA-graph capture).

    Args:
        plan: the model's attention plan (neighbourhood ``model``).
        coords: (N, 3) hit positions (``window`` and ``cluster``).
        cu_seqlens: (B+1,) event boundaries.
        neighbourhood: ``model``, ``window`` or ``cluster``.
        window: +-window hits.
        adjacency: groups on each side.
        group_size: hits per group (``cluster``).
        sector_size: hits per phi sector (``cluster``).
        max_seqlen: longest event.
        sync: passed to the plan builder.

    Raises:
        ValueError: an unknown neighbourhood, or a missing plan or coords.
    """
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(
            f"dbscan_plan neighbourhood must be one of {NEIGHBOURHOODS}, got {neighbourhood!r}"
        )
    if neighbourhood == "model":
        if plan is None:
            raise ValueError(
                "method 'dbscan_plan' with neighbourhood 'model' needs the batch's "
                "attention plan, got None"
            )
        changes: dict = {}
        if adjacency is not None and plan.kind == "cluster":
            changes["adjacency"] = int(adjacency)
        if window is not None and plan.kind == "window":
            changes["window"] = int(window)
        return dataclasses.replace(plan, **changes) if changes else plan
    if coords is None or coords.dim() != 2 or coords.shape[1] != 3:
        shape = None if coords is None else tuple(coords.shape)
        raise ValueError(
            f"dbscan_plan neighbourhood {neighbourhood!r} needs hit coords (N, 3), got {shape}"
        )
    if max_seqlen is None:
        max_seqlen = int(cu_seqlens.diff().max()) if cu_seqlens.numel() > 1 else 0
    batch = PackedBatch(x=coords, cu_seqlens=cu_seqlens, max_seqlen=int(max_seqlen), coords=coords)
    if neighbourhood == "window":
        if window is None or int(window) < 0:
            raise ValueError(f"dbscan_plan neighbourhood 'window' needs window >= 0, got {window}")
        return plans.window_plan(batch, int(window), sync=sync)
    adj = 1 if adjacency is None else int(adjacency)
    return plans.cluster_plan(batch, group_size, sector_size, adj, sync=sync)


def ranges_radius_graph(
    xs: Tensor, lo: Tensor, hi: Tensor, eps: float, max_elems: int = 1 << 24
) -> tuple[Tensor, Tensor]:
    """Pairs (i, j), i != j, of sorted rows with j in one of i's ranges lo, hi (N, R) and
    ||xs_i - xs_j|| <= eps (float differences). Rows in chunks of <= max_elems gathered
    coordinates; one host sync for the longest range. Returns src, dst (E,) int64.

    Args:
        xs: (N, d) sorted points.
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        eps: radius.
        max_elems: gathered coordinates per chunk.
    """
    n, d = xs.shape
    dev = xs.device
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    length = (hi - lo).clamp_min(0)  # (N, R)
    widths = length.amax(0).tolist()  # (R,) host ints: the one sync
    offs = [torch.arange(w, device=dev) for w in widths]
    cand_w = max(1, sum(widths))
    step = max(1, max_elems // (cand_w * max(d, 1)))
    eps2 = float(eps) ** 2
    srcs, dsts = [], []
    for c0 in range(0, n, step):
        c1 = min(n, c0 + step)
        rows = torch.arange(c0, c1, device=dev)  # (C,)
        cand = torch.cat([lo[c0:c1, r, None] + o[None] for r, o in enumerate(offs)], 1)  # (C, K)
        ok = torch.cat([o[None] < length[c0:c1, r, None] for r, o in enumerate(offs)], 1)
        ok &= cand != rows[:, None]
        cand = torch.where(ok, cand, rows[:, None])
        d2 = ((xs[cand] - xs[rows][:, None, :]) ** 2).sum(-1)  # (C, K)
        i, k = torch.nonzero(ok & (d2 <= eps2), as_tuple=True)
        srcs.append(rows[i])
        dsts.append(cand[i, k])
    return torch.cat(srcs), torch.cat(dsts)


def dbscan_in_plan(
    x: Tensor,
    plan: AttentionPlan,
    eps: float,
    min_samples: int = 5,
    max_elems: int = 1 << 24,
    adjacency: int | None = None,
    impl: str = "auto",
    rounds: int = 4,
    window: int | None = None,
) -> Tensor:
    """(N,) int64 DBSCAN labels on the plan-restricted radius graph; -1 = noise.

    Any plan kind (``range_dbscan.plan_ranges``): candidates of a hit are the keys its mask
    row allows (cluster: groups within +-adjacency; window: +-window phi positions with
    wrap-around; full: the event). Labels are unique across the batch, numbered by each
    cluster's smallest input row; a point counts itself towards min_samples (sklearn).
    ``adjacency`` / ``window``: override the plan's own (cluster / window plans).
    impl: "torch" (chunked gathers, any device), "triton" (sync-free tiled range kernel,
    CUDA), "auto" (triton on CUDA, else torch); same labels.

    Args:
        x: (N, d) points in input order.
        plan: the plan whose mask restricts the candidates.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        max_elems: gathered coordinates per chunk (torch).
        adjacency: overrides a cluster plan's.
        impl: ``torch``, ``triton`` or ``auto``.
        rounds: component rounds before the convergence check (triton).
        window: overrides a window plan's.
    """
    n = plan.extra.get("n_rows")
    n = int(plan.cu_seqlens[-1]) if n is None else int(n)
    if x.dim() != 2 or x.shape[0] != n:
        raise ValueError(f"x must be (N, d) with N = {n}, got {tuple(x.shape)}")
    if eps <= 0 or min_samples < 1:
        raise ValueError(
            f"need eps > 0 and min_samples >= 1, got eps={eps}, min_samples={min_samples}"
        )
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"dbscan_plan impl must be auto, torch or triton, got {impl!r}")
    if impl == "triton" or (impl == "auto" and uses_triton(x)):
        st = rd.start_plan(x, plan, eps, min_samples, adjacency, rounds, window=window)
        return rd.complete(st)
    if not torch.isfinite(x).all():
        raise ValueError("dbscan input contains non-finite values")
    lo, hi = rd.plan_ranges(plan, adjacency, window)  # (N, R) sorted rows
    perm = plan.perm if plan.perm is not None else torch.arange(n, device=x.device)
    src, dst = ranges_radius_graph(
        x[perm].float() if x.dtype != torch.float64 else x[perm], lo, hi, eps, max_elems
    )
    return dbscan_from_graph(perm[src], perm[dst], n, min_samples)
