"""Attention plan builders: full, cluster (Part-2 geometric neighbourhoods), window (phi order).

Every builder runs on the batch's device, is O(N) apart from sorting and never forms an
N x N object. The mask definitions are those of :mod:`trackformers.attention.base`; in the
plan's sorted order every mask row is a union of at most two contiguous key ranges, which
:func:`row_ranges` returns and the block-sparse backends (flex, windowed, fused) consume.

Cluster plan (TrackFormers Part 2, arXiv 2509.26411): each hit is projected along the ray
from the origin onto the barrel cylinder r = R (coordinates R*phi, z) or, when that ray
leaves the cylinder beyond |z| = Z, onto the endcap plane z = +-Z (coordinates x, y). The
surface is unrolled to (phi, s) with s = z on the cylinder and s = +-(Z + R - r_plane) on
the planes (continuous at the rims). Lightweight clustering by iterative windowing:
hits of an event are cut into ``n_sectors`` phi sectors of equal hit count, each sector into
s-windows of about ``group_size`` hits; windows of consecutive sectors run in opposite s
directions (snake order) so neighbouring group ids are also geometric neighbours.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from trackformers.attention.base import AttentionPlan
from trackformers.attention.compiled import on_device

BARREL_RADIUS_MM = 91.0
ENDCAP_Z_MM = 920.0


def _event_index(cu_seqlens: Tensor, n: int) -> Tensor:
    """(n,) int64 event index of every packed row."""
    lengths = cu_seqlens.diff().long()  # (B,)
    events = torch.arange(lengths.numel(), device=lengths.device)
    return torch.repeat_interleave(events, lengths, output_size=n)  # no device sync


def _check_batch(batch) -> None:
    """Clear errors for inconsistent batches (one device sync)."""
    n = batch.x.shape[0]
    cu = batch.cu_seqlens
    if cu.ndim != 1 or cu.numel() < 2:
        raise ValueError(f"PackedBatch.cu_seqlens must be 1-D with >= 2 entries, got {cu.shape}")
    first, last, longest = torch.stack([cu[0], cu[-1], cu.diff().max()]).tolist()
    if first != 0 or last != n:
        raise ValueError(
            f"PackedBatch.cu_seqlens must run from 0 to total_hits={n}, got {cu.tolist()[:8]}..."
        )
    if longest > batch.max_seqlen:
        raise ValueError(f"PackedBatch.max_seqlen={batch.max_seqlen} < longest event ({longest})")
    if batch.coords is None or batch.coords.shape != (n, 3):
        shape = None if batch.coords is None else tuple(batch.coords.shape)
        raise ValueError(f"PackedBatch.coords must have shape ({n}, 3), got {shape}")


def _sort_within(segment: Tensor, value: Tensor, lo: float, hi: float) -> Tensor:
    """Permutation sorting by integer segment, then by value in [lo, hi], in ONE sort.

    The float64 key segment + (value - lo) / (hi - lo) * 0.5 keeps every float32 value's
    order (segments < 2^26); ties keep input order (stable).
    """
    frac = (value.double() - lo) / (2.0 * (hi - lo))  # (N,) in [0, 0.5]
    return torch.argsort(segment.double() + frac, stable=True)


def _inverse(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


@on_device
def _phi_order(seq: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
    perm = _sort_within(seq, phi, -math.pi, math.pi)  # (N,)
    return perm, _inverse(perm)


def full_plan(batch) -> AttentionPlan:
    """Every hit attends every hit of its own event; input order kept (perm None)."""
    _check_batch(batch)
    return AttentionPlan(
        kind="full",
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        extra={"n_rows": batch.x.shape[0]},
    )


def window_plan(batch, window: int) -> AttentionPlan:
    """Hits sorted by phi within each event; +-window sorted positions with wrap-around."""
    _check_batch(batch)
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    coords = batch.coords
    phi = torch.atan2(coords[:, 1], coords[:, 0])  # (N,)
    seq = _event_index(batch.cu_seqlens, coords.shape[0])  # (N,)
    perm, inv_perm = _phi_order(seq, phi)  # (N,), (N,)
    return AttentionPlan(
        kind="window",
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        perm=perm,
        inv_perm=inv_perm,
        window=int(window),
        extra={"n_rows": coords.shape[0]},
    )


def surface_coordinates(
    coords: Tensor, radius: float = BARREL_RADIUS_MM, endcap_z: float = ENDCAP_Z_MM
) -> tuple[Tensor, Tensor]:
    """Project hits along the ray from the origin onto the cylinder/endcap surface.

    Returns (phi, s), both (N,): phi = azimuth, s = unrolled longitudinal coordinate
    (z on the cylinder in [-Z, Z], +-(Z + R - r_plane) on the planes).
    """
    x, y, z = coords[:, 0], coords[:, 1], coords[:, 2]
    r = torch.hypot(x, y).clamp_min(1e-6)  # (N,)
    phi = torch.atan2(y, x)  # (N,)
    z_cyl = z * (radius / r)  # (N,) z where the ray crosses r = R
    r_plane = (r * (endcap_z / z.abs().clamp_min(1e-6))).clamp_max(radius)  # (N,)
    s_cap = torch.sign(z) * (endcap_z + radius - r_plane)  # (N,)
    s = torch.where(z_cyl.abs() <= endcap_z, z_cyl, s_cap)  # (N,)
    return phi, s


@on_device
def _cluster_order(
    coords: Tensor,
    cu_seqlens: Tensor,
    seq: Tensor,
    group_size: int,
    sector_size: int,
    max_sec: int,
    radius: float,
    endcap_z: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sort order and groups of cluster_plan: (perm, inv_perm, group_id, new_group)."""
    n = coords.shape[0]
    dev = coords.device
    cu = cu_seqlens.long()
    lengths = cu.diff()  # (B,)
    phi, s = surface_coordinates(coords.float(), radius, endcap_z)

    # phi sectors of equal hit count per event
    p1 = _sort_within(seq, phi, -math.pi, math.pi)  # (N,)
    rank = torch.arange(n, device=dev) - cu[seq[p1]]  # (N,) rank by phi within event
    n_ev = lengths[seq[p1]]  # (N,)
    n_sec = torch.clamp(torch.div(n_ev + sector_size // 2, sector_size, rounding_mode="floor"), 1)
    sector = torch.empty(n, dtype=torch.long, device=dev)
    sector[p1] = rank * n_sec // n_ev.clamp_min(1)  # (N,)

    # snake order in s inside each sector, then windows of ~group_size hits
    s_lim = endcap_z + radius
    s_key = torch.where(sector % 2 == 0, s, -s)  # (N,)
    perm = _sort_within(seq * max_sec + sector, s_key, -s_lim, s_lim)  # (N,)
    seg = (seq * max_sec + sector)[perm]  # (N,) segment key in sorted order
    rows = torch.arange(n, device=dev)
    new_seg = torch.cat([torch.ones(1, dtype=torch.bool, device=dev), seg[1:] != seg[:-1]])
    seg_start = torch.cummax(torch.where(new_seg, rows, 0), 0).values  # (N,) first row of seg
    seg_idx = torch.cumsum(new_seg.long(), 0) - 1  # (N,)
    seg_len = torch.zeros(n, dtype=torch.long, device=dev).index_add_(
        0, seg_idx, torch.ones_like(seg_idx)
    )[seg_idx]  # (N,) hits in the row's segment
    rank2 = rows - seg_start  # (N,)
    n_groups = (seg_len + group_size - 1) // group_size  # (N,) groups in this segment
    local = rank2 * n_groups // seg_len  # (N,) balanced windows
    new_local = torch.cat([torch.zeros(1, dtype=torch.bool, device=dev), local[1:] != local[:-1]])
    new_group = new_seg | new_local  # (N,)
    group_id = (torch.cumsum(new_group.long(), 0) - 1).int()  # (N,) globally non-decreasing
    return perm, _inverse(perm), group_id, new_group


def cluster_plan(
    batch,
    group_size: int = 128,
    sector_size: int = 4096,
    adjacency: int = 1,
    radius: float = BARREL_RADIUS_MM,
    endcap_z: float = ENDCAP_Z_MM,
) -> AttentionPlan:
    """Part-2 geometric groups (see module docstring); a hit attends groups within +-adjacency."""
    _check_batch(batch)
    if group_size < 1 or sector_size < 1 or adjacency < 0:
        raise ValueError(
            f"cluster_plan needs group_size>=1, sector_size>=1, adjacency>=0; got "
            f"{group_size}, {sector_size}, {adjacency}"
        )
    n = batch.coords.shape[0]
    seq = _event_index(batch.cu_seqlens, n)  # (N,)
    max_sec = batch.max_seqlen // sector_size + 2  # bound on sectors per event, no sync
    perm, inv_perm, group_id, new_group = _cluster_order(
        batch.coords, batch.cu_seqlens, seq, group_size, sector_size, max_sec, radius, endcap_z
    )
    dev = batch.coords.device
    starts = torch.nonzero(new_group).squeeze(1)  # (G,) the plan's only data-dependent size
    group_ptr = torch.cat([starts, torch.tensor([n], device=dev)]).int()  # (G+1,)
    return AttentionPlan(
        kind="cluster",
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        perm=perm,
        inv_perm=inv_perm,
        group_id=group_id,
        group_ptr=group_ptr,
        adjacency=int(adjacency),
        extra={"group_size": group_size, "sector_size": sector_size, "n_rows": n},
    )


def presorted(plan: AttentionPlan) -> AttentionPlan:
    """The same plan for tensors already in the plan's sorted order (perm = identity)."""
    return dataclasses.replace(plan, perm=None, inv_perm=None, extra=plan.extra)


def row_ranges(plan: AttentionPlan) -> tuple[Tensor, Tensor]:
    """Allowed keys of every sorted row as <= 2 disjoint half-open ranges of sorted rows.

    Returns lo, hi of shape (N, R), int64, R = 1 (full, cluster) or 2 (window: main range
    clipped to the event, then the wrap-around part, empty when there is none);
    row i attends key j iff lo[i, r] <= j < hi[i, r] for some r. Empty ranges have lo == hi.
    """
    n = plan.extra.get("n_rows") or int(plan.cu_seqlens[-1])
    seq = _event_index(plan.cu_seqlens, n)  # (N,)
    if plan.kind == "full":
        cu = plan.cu_seqlens.long()
        return cu[seq][:, None], cu[seq + 1][:, None]
    if plan.kind == "cluster":
        return _cluster_ranges(plan.cu_seqlens, seq, plan.group_id, plan.group_ptr, plan.adjacency)
    if plan.kind == "window":
        return _window_ranges(plan.cu_seqlens, seq, plan.window)
    raise ValueError(f"unknown plan kind {plan.kind!r}; expected full, cluster or window")


@on_device
def _cluster_ranges(cu_seqlens, seq, group_id, group_ptr, adjacency: int):
    cu = cu_seqlens.long()
    start, end = cu[seq], cu[seq + 1]  # (N,), (N,)
    gid = group_id.long()
    ptr = group_ptr.long()
    g_first, g_last = gid[start], gid[end - 1]  # (N,) group range of the row's event
    lo = ptr[torch.maximum(gid - adjacency, g_first)]
    hi = ptr[torch.minimum(gid + adjacency, g_last) + 1]
    return lo[:, None], hi[:, None]


@on_device
def _window_ranges(cu_seqlens, seq, w: int):
    cu = cu_seqlens.long()
    start, end = cu[seq], cu[seq + 1]  # (N,), (N,)
    rows = torch.arange(seq.shape[0], device=seq.device)
    full = (end - start) <= 2 * w + 1  # (N,)
    lo_main = torch.where(full, start, torch.maximum(rows - w, start))
    hi_main = torch.where(full, end, torch.minimum(rows + w + 1, end))
    left_over = torch.where(full, 0, (start - (rows - w)).clamp_min(0))  # wraps to the end
    right_over = torch.where(full, 0, (rows + w + 1 - end).clamp_min(0))  # wraps to start
    wraps_left = left_over > 0  # at most one side wraps when the event is not full
    lo_wrap = torch.where(wraps_left, end - left_over, start)
    hi_wrap = torch.where(wraps_left, end, start + right_over)
    lo = torch.stack([lo_main, lo_wrap], 1)  # (N, 2)
    hi = torch.stack([hi_main, hi_wrap], 1)  # (N, 2)
    return lo, hi


def dense_mask_reference(plan: AttentionPlan) -> Tensor:
    """(N, N) bool mask in sorted order straight from the definitions in base.py.

    O(N^2): a reference for tests and small N only, never used by the backends.
    """
    cu = plan.cu_seqlens.long()
    n = int(cu[-1])
    seq = _event_index(plan.cu_seqlens, n)  # (N,)
    same = seq[:, None] == seq[None, :]  # (N, N)
    if plan.kind == "full":
        return same
    if plan.kind == "cluster":
        gid = plan.group_id.long()
        return same & ((gid[:, None] - gid[None, :]).abs() <= plan.adjacency)
    if plan.kind == "window":
        pos = torch.arange(n, device=cu.device) - cu[seq]  # (N,) position inside event
        size = (cu[seq + 1] - cu[seq])[:, None]  # (N, 1)
        d = (pos[:, None] - pos[None, :]).abs()  # (N, N)
        circ = torch.minimum(d, size - d)
        return same & ((circ <= plan.window) | (size <= 2 * plan.window + 1))
    raise ValueError(f"unknown plan kind {plan.kind!r}")


def attended_pairs(plan: AttentionPlan) -> int:
    """Number of (query, key) pairs the plan allows, in O(N) (for FLOP counts)."""
    lo, hi = row_ranges(plan)
    return int((hi - lo).clamp_min(0).sum())


def expected_density(n: int, group_size: int, adjacency: int) -> float:
    """Approximate fraction of an n-hit event's pairs attended by a cluster plan."""
    return min(1.0, (2 * adjacency + 1) * group_size / max(n, 1)) if n else 0.0


__all__ = [
    "full_plan",
    "cluster_plan",
    "window_plan",
    "presorted",
    "row_ranges",
    "dense_mask_reference",
    "attended_pairs",
    "surface_coordinates",
    "expected_density",
    "BARREL_RADIUS_MM",
    "ENDCAP_Z_MM",
]
