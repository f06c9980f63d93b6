"""O(N) block metadata for the fused block-sparse attention kernels, built on the GPU.

Every mask of :mod:`trackformers.attention.base` (full, cluster, window) is, in the plan's
sorted order, a union of at most two contiguous key ranges per query row, and it is symmetric
(row i attends j iff row j attends i). ONE Triton launch builds the metadata:

``rows`` (4, N) int32 — per sorted row: ``lo1, hi1, lo2, hi2``; row i attends key j iff
    ``lo1 <= j < hi1`` or ``lo2 <= j < hi2``. Range 1 is the main range (clipped to the event),
    range 2 the wrap-around part of a window (empty, lo2 == hi2, otherwise). Cluster ranges
    come from the plan's group_ptr (O(1) per row: group g is rows [ptr[g], ptr[g+1]), g =
    group_id, as cluster_plan builds them) or, without it, from two binary searches over
    group_id inside the event (O(log n) per row; ids may then skip values).
``tiles`` (T, 8) int32 — per query tile of ``block_m`` consecutive rows of ONE event:
    ``q_start, q_end, a_lo, f_lo, f_hi, a_hi, b_lo, b_hi``. The kernel visits keys
    ``[a_lo, a_hi)`` and ``[b_lo, b_hi)`` (disjoint); inside ``[f_lo, f_hi)`` every key is
    attended by every row of the tile, so whole key blocks there skip the element mask.
    T = ceil(N / block_m) + B is an upper bound known without a device sync; unused tiles are
    all zeros (empty) and their programs exit after loading 8 integers.

A second tile size (the backward's) costs one more launch that reads ``rows``.
Because the masks are symmetric, the same metadata drives the backward dK/dV kernel with the
roles of queries and keys swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

KIND_CODES = {"full": 0, "cluster": 1, "window": 2}
_CLUSTER_PTR = 3  # cluster with group_ptr: O(1) per row instead of two binary searches
_ROW_BLOCK = 256


@triton.jit
def _ranges(i, valid, start, end, GID, PTR, ROW_STEPS, ADJ, WINDOW, KIND: tl.constexpr):
    """Key ranges (lo1, hi1, lo2, hi2) of sorted rows i of the event [start, end)."""
    empty = tl.zeros_like(i)
    if KIND == 3:  # group g is rows [PTR[g], PTR[g + 1]); groups clipped to the row's event
        g = tl.load(GID + i, mask=valid, other=0)
        g_first = tl.load(GID + (start + empty), mask=valid, other=0)
        g_last = tl.load(GID + (end + empty - 1), mask=valid, other=0)
        lo1 = tl.load(PTR + tl.maximum(g - ADJ, g_first), mask=valid, other=0)
        hi1 = tl.load(PTR + tl.minimum(g + ADJ, g_last) + 1, mask=valid, other=0)
        lo2 = empty
        hi2 = empty
    elif KIND == 0:
        lo1 = start + empty
        hi1 = end + empty
        lo2 = empty
        hi2 = empty
    elif KIND == 1:
        g = tl.load(GID + i, mask=valid, other=0)
        # binary searches in the event: first row with gid >= g - ADJ, first with gid > g + ADJ
        a = start + empty
        b = end + empty
        c2 = start + empty
        d2 = end + empty
        for _ in range(0, ROW_STEPS):
            m1 = (a + b) // 2
            g1 = tl.load(GID + m1, mask=valid & (m1 < b), other=0)
            up1 = (m1 < b) & (g1 < g - ADJ)
            a = tl.where(up1, m1 + 1, a)
            b = tl.where(up1 | (m1 >= b), b, m1)
            m2 = (c2 + d2) // 2
            g2 = tl.load(GID + m2, mask=valid & (m2 < d2), other=0)
            up2 = (m2 < d2) & (g2 <= g + ADJ)
            c2 = tl.where(up2, m2 + 1, c2)
            d2 = tl.where(up2 | (m2 >= d2), d2, m2)
        lo1 = a
        hi1 = c2
        lo2 = empty
        hi2 = empty
    else:
        start = start + empty
        end = end + empty
        n = end - start
        full = n <= 2 * WINDOW + 1
        lo1 = tl.where(full, start, tl.maximum(i - WINDOW, start))
        hi1 = tl.where(full, end, tl.minimum(i + WINDOW + 1, end))
        left = tl.where(full, 0, tl.maximum(start - (i - WINDOW), 0))  # wraps to the event end
        right = tl.where(full, 0, tl.maximum(i + WINDOW + 1 - end, 0))  # wraps to its start
        lo2 = tl.where(left > 0, end - left, tl.where(right > 0, start, 0))
        hi2 = tl.where(left > 0, end, tl.where(right > 0, start + right, 0))
    return lo1, hi1, lo2, hi2


@triton.jit(do_not_specialize=["N", "NUM_EVENTS", "EV_STEPS", "ROW_STEPS", "ADJ", "WINDOW"])
def _row_meta_kernel(
    CU,  # (B+1,) int32 event boundaries
    GID,  # (N,) int32 group id per sorted row (cluster only)
    PTR,  # (G+1,) int32 group boundaries (cluster with group_ptr only)
    ROWS,  # (4, N) int32 output
    N,
    NUM_EVENTS,
    EV_STEPS,  # binary-search steps over cu_seqlens
    ROW_STEPS,  # binary-search steps inside one event (cluster)
    ADJ,
    WINDOW,
    KIND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    i = pid * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) sorted rows
    valid = i < N
    # event of every row: largest e with cu[e] <= i (binary search over B+1 boundaries)
    lo = tl.zeros([BLOCK], dtype=tl.int32)
    hi = tl.zeros([BLOCK], dtype=tl.int32) + NUM_EVENTS
    for _ in range(0, EV_STEPS):
        mid = (lo + hi + 1) // 2
        c = tl.load(CU + mid, mask=valid, other=0)
        go = c <= i
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid - 1)
    start = tl.load(CU + lo, mask=valid, other=0)
    end = tl.load(CU + lo + 1, mask=valid, other=0)
    lo1, hi1, lo2, hi2 = _ranges(i, valid, start, end, GID, PTR, ROW_STEPS, ADJ, WINDOW, KIND)
    tl.store(ROWS + i, lo1, mask=valid)
    tl.store(ROWS + N + i, hi1, mask=valid)
    tl.store(ROWS + 2 * N + i, lo2, mask=valid)
    tl.store(ROWS + 3 * N + i, hi2, mask=valid)


@triton.jit(do_not_specialize=["N", "NUM_EVENTS", "ROW_STEPS", "ADJ", "WINDOW"])
def _tile_meta_kernel(
    CU,  # (B+1,) int32
    GID,  # (N,) int32 (cluster with COMPUTE_ROWS only)
    PTR,  # (G+1,) int32 (cluster with group_ptr and COMPUTE_ROWS only)
    ROWS,  # (4, N) int32: written when COMPUTE_ROWS, else read
    TILES,  # (T, 8) int32 output
    N,
    NUM_EVENTS,
    ROW_STEPS,
    ADJ,
    WINDOW,
    KIND: tl.constexpr,
    COMPUTE_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    t = tl.program_id(0)
    # which event holds tile t: walk the events counting ceil(n_e / BLOCK_M) tiles each
    acc = t * 0
    q_start = t * 0
    q_end = t * 0
    ev_start = t * 0
    ev_end = t * 0
    for e in range(0, NUM_EVENTS):
        s = tl.load(CU + e)
        n_e = tl.load(CU + e + 1) - s
        c = (n_e + BLOCK_M - 1) // BLOCK_M
        hit = (t >= acc) & (t < acc + c)
        q_start = tl.where(hit, s + (t - acc) * BLOCK_M, q_start)
        q_end = tl.where(hit, tl.minimum(s + (t - acc + 1) * BLOCK_M, s + n_e), q_end)
        ev_start = tl.where(hit, s, ev_start)
        ev_end = tl.where(hit, s + n_e, ev_end)
        acc += c
    r = q_start + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of this tile (one event)
    rmask = r < q_end
    if COMPUTE_ROWS:
        lo1, hi1, lo2, hi2 = _ranges(
            r, rmask, ev_start, ev_end, GID, PTR, ROW_STEPS, ADJ, WINDOW, KIND
        )
        tl.store(ROWS + r, lo1, mask=rmask)
        tl.store(ROWS + N + r, hi1, mask=rmask)
        tl.store(ROWS + 2 * N + r, lo2, mask=rmask)
        tl.store(ROWS + 3 * N + r, hi2, mask=rmask)
    else:
        lo1 = tl.load(ROWS + r, mask=rmask, other=0)
        hi1 = tl.load(ROWS + N + r, mask=rmask, other=0)
        lo2 = tl.load(ROWS + 2 * N + r, mask=rmask, other=0)
        hi2 = tl.load(ROWS + 3 * N + r, mask=rmask, other=0)
    big = 2147483647
    # union of range 1 over the rows, and the keys that every row attends (intersection)
    nonempty = q_end > q_start
    a_lo = tl.where(nonempty, tl.min(tl.where(rmask, lo1, big), axis=0), 0)
    a_hi = tl.where(nonempty, tl.max(tl.where(rmask, hi1, -1), axis=0), 0)
    full_lo = tl.max(tl.where(rmask, lo1, -1), axis=0)
    full_hi = tl.min(tl.where(rmask, hi1, big), axis=0)
    has2 = rmask & (hi2 > lo2)
    b_lo = tl.min(tl.where(has2, lo2, big), axis=0)
    b_hi = tl.max(tl.where(has2, hi2, -1), axis=0)
    has_b = b_hi > b_lo
    # a wrap range touching the main range is merged into it (hull; the element mask is exact)
    merge = has_b & (b_lo <= a_hi) & (a_lo <= b_hi)
    a_lo2 = tl.where(merge, tl.minimum(a_lo, b_lo), a_lo)
    a_hi2 = tl.where(merge, tl.maximum(a_hi, b_hi), a_hi)
    keep_b = has_b & (merge == 0)
    b_lo = tl.where(keep_b, b_lo, 0)
    b_hi = tl.where(keep_b, b_hi, 0)
    f_lo = tl.minimum(tl.maximum(full_lo, a_lo2), a_hi2)
    f_hi = tl.minimum(tl.maximum(full_hi, f_lo), a_hi2)
    base = TILES + t * 8
    tl.store(base + 0, q_start)
    tl.store(base + 1, q_end)
    tl.store(base + 2, a_lo2)
    tl.store(base + 3, f_lo)
    tl.store(base + 4, f_hi)
    tl.store(base + 5, a_hi2)
    tl.store(base + 6, b_lo)
    tl.store(base + 7, b_hi)


@dataclass
class BlockMeta:
    """Metadata of one plan for one query tile size (see module docstring)."""

    rows: Tensor  # (4, N) int32
    tiles: Tensor  # (T, 8) int32
    block_m: int
    num_rows: int


def _steps(n: int) -> int:
    return max(1, int(n).bit_length() + 1)


def _check_kind(kind: str, window) -> None:
    if kind not in KIND_CODES:
        raise ValueError(f"unknown plan kind {kind!r}; expected one of {sorted(KIND_CODES)}")
    if kind == "window" and (window is None or window < 0):
        raise ValueError(f"window plan needs window >= 0, got {window!r}")


def _group_ids(kind: str, group_id: Tensor | None, n: int, cu: Tensor) -> Tensor:
    if kind != "cluster":
        return cu  # unused pointer
    if group_id is None or group_id.numel() != n:
        got = None if group_id is None else tuple(group_id.shape)
        raise ValueError(f"cluster plan needs group_id of shape ({n},), got {got}")
    return group_id.to(torch.int32).contiguous()


def _kind_and_ptr(kind: str, group_ptr: Tensor | None, cu: Tensor) -> tuple[int, Tensor]:
    """Kernel code of the plan kind; cluster plans with group_ptr take the O(1) path."""
    if kind == "cluster" and group_ptr is not None:
        return _CLUSTER_PTR, group_ptr.to(torch.int32).contiguous()
    return KIND_CODES[kind], cu  # unused pointer


def _num_tiles(n: int, num_events: int, block_m: int) -> int:
    if block_m < 1 or block_m & (block_m - 1):
        raise ValueError(f"block_m must be a power of two, got {block_m}")
    return triton.cdiv(n, block_m) + num_events


def build_row_intervals(
    kind: str,
    cu_seqlens: Tensor,
    max_seqlen: int,
    group_id: Tensor | None = None,
    adjacency: int = 1,
    window: int | None = None,
    num_rows: int | None = None,
    group_ptr: Tensor | None = None,
) -> Tensor:
    """(4, N) int32 per-row key ranges alone (tests, benchmarks): one launch.

    ``group_ptr`` (cluster, optional): group g is sorted rows [group_ptr[g], group_ptr[g+1])
    with g = group_id (as ``cluster_plan`` builds them); without it, binary searches.

    Args:
        kind: ``cluster``, ``window`` or ``full``.
        cu_seqlens: (B+1,) event boundaries.
        max_seqlen: longest event.
        group_id: (N,) group of each sorted row (cluster).
        adjacency: groups on each side (cluster).
        window: +-window rows (window).
        num_rows: N (None: from cu_seqlens, a sync).
        group_ptr: (G+1,) group boundaries (cluster).
    """
    _check_kind(kind, window)
    cu = cu_seqlens.to(torch.int32).contiguous()
    n = int(num_rows) if num_rows is not None else int(cu[-1])
    num_events = cu.numel() - 1
    rows = torch.empty((4, n), dtype=torch.int32, device=cu.device)
    if n == 0:
        return rows
    gid = _group_ids(kind, group_id, n, cu)
    code, ptr = _kind_and_ptr(kind, group_ptr, cu)
    _row_meta_kernel[(triton.cdiv(n, _ROW_BLOCK),)](
        cu,
        gid,
        ptr,
        rows,
        n,
        num_events,
        _steps(num_events),
        _steps(max_seqlen),
        int(adjacency),
        int(window or 0),
        KIND=code,
        BLOCK=_ROW_BLOCK,
    )
    return rows


def build_tiles(cu_seqlens: Tensor, rows: Tensor, block_m: int) -> Tensor:
    """(T, 8) int32 tile metadata from existing per-row ranges: one launch, O(N + T·B).

    Args:
        cu_seqlens: (B+1,) event boundaries.
        rows: (4, N) per-row ranges.
        block_m: rows per tile.
    """
    cu = cu_seqlens.to(torch.int32).contiguous()
    n = rows.shape[1]
    num_events = cu.numel() - 1
    tiles = torch.empty(
        (_num_tiles(n, num_events, block_m), 8), dtype=torch.int32, device=cu.device
    )
    if n == 0:
        return tiles.zero_()
    _tile_meta_kernel[(tiles.shape[0],)](
        cu,
        cu,
        cu,
        rows,
        tiles,
        n,
        num_events,
        1,
        0,
        0,
        KIND=0,
        COMPUTE_ROWS=False,
        BLOCK_M=block_m,
    )
    return tiles


def build_block_meta(plan, num_rows: int, block_m: int, rows: Tensor | None = None) -> BlockMeta:
    """Metadata of an AttentionPlan (sorted order, num_rows hits) for tiles of block_m rows.

    Without ``rows``, ONE launch computes the per-row ranges and the tiles together; with
    ``rows`` (from a build for another block_m) only the tiles are built. num_rows is given
    by the caller (q.shape[0]) so that no device sync is needed.

    Args:
        plan: the attention plan.
        num_rows: N.
        block_m: rows per tile.
        rows: (4, N) per-row ranges of an earlier build (None: computed here).
    """
    n = int(num_rows)
    if rows is not None:
        return BlockMeta(rows, build_tiles(plan.cu_seqlens, rows, block_m), block_m, n)
    _check_kind(plan.kind, plan.window)
    cu = plan.cu_seqlens.to(torch.int32).contiguous()
    num_events = cu.numel() - 1
    rows = torch.empty((4, n), dtype=torch.int32, device=cu.device)
    tiles = torch.empty(
        (_num_tiles(n, num_events, block_m), 8), dtype=torch.int32, device=cu.device
    )
    if n == 0:
        return BlockMeta(rows, tiles.zero_(), block_m, n)
    gid = _group_ids(plan.kind, plan.group_id, n, cu)
    code, ptr = _kind_and_ptr(plan.kind, plan.group_ptr, cu)
    _tile_meta_kernel[(tiles.shape[0],)](
        cu,
        gid,
        ptr,
        rows,
        tiles,
        n,
        num_events,
        _steps(plan.max_seqlen),
        int(plan.adjacency),
        int(plan.window or 0),
        KIND=code,
        COMPUTE_ROWS=True,
        BLOCK_M=block_m,
    )
    return BlockMeta(rows, tiles, block_m, n)
