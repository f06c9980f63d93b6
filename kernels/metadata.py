"""O(N) block metadata for the fused block-sparse attention kernels, built on the GPU.

Every mask of :mod:`trackformers.attention.base` (full, cluster, window) is, in the plan's
sorted order, a union of at most two contiguous key ranges per query row, and it is symmetric
(row i attends j iff row j attends i). Two Triton launches build the metadata:

``rows`` (4, N) int32 — per sorted row: ``lo1, hi1, lo2, hi2``; row i attends key j iff
    ``lo1 <= j < hi1`` or ``lo2 <= j < hi2``. Range 1 is the main range (clipped to the event),
    range 2 the wrap-around part of a window (empty, lo2 == hi2, otherwise).
``tiles`` (T, 8) int32 — per query tile of ``block_m`` consecutive rows of ONE event:
    ``q_start, q_end, a_lo, f_lo, f_hi, a_hi, b_lo, b_hi``. The kernel visits keys
    ``[a_lo, a_hi)`` and ``[b_lo, b_hi)`` (disjoint); inside ``[f_lo, f_hi)`` every key is
    attended by every row of the tile, so whole key blocks there skip the element mask.
    T = ceil(N / block_m) + B is an upper bound known without a device sync; unused tiles are
    all zeros (empty) and their programs exit after loading 8 integers.

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
_ROW_BLOCK = 256
_TILE_FIELDS = 8


@triton.jit(do_not_specialize=["N", "NUM_EVENTS", "EV_STEPS", "ROW_STEPS", "ADJ", "WINDOW"])
def _row_meta_kernel(
    CU,  # (B+1,) int32 event boundaries
    GID,  # (N,) int32 group id per sorted row (cluster only)
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
    empty = tl.zeros([BLOCK], dtype=tl.int32)
    if KIND == 0:
        lo1 = start
        hi1 = end
        lo2 = empty
        hi2 = empty
    elif KIND == 1:
        g = tl.load(GID + i, mask=valid, other=0)
        # first row of the event with gid >= g - ADJ, first row with gid > g + ADJ
        a = start
        b = end
        c2 = start
        d2 = end
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
        n = end - start
        full = n <= 2 * WINDOW + 1
        lo1 = tl.where(full, start, tl.maximum(i - WINDOW, start))
        hi1 = tl.where(full, end, tl.minimum(i + WINDOW + 1, end))
        left = tl.where(full, 0, tl.maximum(start - (i - WINDOW), 0))  # wraps to the event end
        right = tl.where(full, 0, tl.maximum(i + WINDOW + 1 - end, 0))  # wraps to its start
        lo2 = tl.where(left > 0, end - left, tl.where(right > 0, start, 0))
        hi2 = tl.where(left > 0, end, tl.where(right > 0, start + right, 0))
    tl.store(ROWS + i, lo1, mask=valid)
    tl.store(ROWS + N + i, hi1, mask=valid)
    tl.store(ROWS + 2 * N + i, lo2, mask=valid)
    tl.store(ROWS + 3 * N + i, hi2, mask=valid)


@triton.jit(do_not_specialize=["N", "NUM_EVENTS"])
def _tile_meta_kernel(
    CU,  # (B+1,) int32
    ROWS,  # (4, N) int32
    TILES,  # (T, 8) int32 output
    N,
    NUM_EVENTS,
    BLOCK_M: tl.constexpr,
):
    t = tl.program_id(0)
    # which event holds tile t: walk the events counting ceil(n_e / BLOCK_M) tiles each
    acc = t * 0
    q_start = t * 0
    q_end = t * 0
    for e in range(0, NUM_EVENTS):
        s = tl.load(CU + e)
        n_e = tl.load(CU + e + 1) - s
        c = (n_e + BLOCK_M - 1) // BLOCK_M
        hit = (t >= acc) & (t < acc + c)
        q_start = tl.where(hit, s + (t - acc) * BLOCK_M, q_start)
        q_end = tl.where(hit, tl.minimum(s + (t - acc + 1) * BLOCK_M, s + n_e), q_end)
        acc += c
    nonempty = q_end > q_start
    first = q_start
    last = tl.maximum(q_end - 1, q_start)
    r = q_start + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    rmask = r < q_end
    # range 1 bounds are monotone in the row: union and intersection from the end rows
    a_lo = tl.load(ROWS + first, mask=nonempty, other=0)
    a_hi = tl.load(ROWS + N + last, mask=nonempty, other=0)
    full_lo = tl.load(ROWS + last, mask=nonempty, other=0)
    full_hi = tl.load(ROWS + N + first, mask=nonempty, other=0)
    lo2 = tl.load(ROWS + 2 * N + r, mask=rmask, other=0)
    hi2 = tl.load(ROWS + 3 * N + r, mask=rmask, other=0)
    has2 = rmask & (hi2 > lo2)
    big = 2147483647
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


def build_row_intervals(
    kind: str,
    cu_seqlens: Tensor,
    max_seqlen: int,
    group_id: Tensor | None = None,
    adjacency: int = 1,
    window: int | None = None,
    num_rows: int | None = None,
) -> Tensor:
    """(4, N) int32 per-row key ranges on cu_seqlens' device: one launch, O(N log n)."""
    if kind not in KIND_CODES:
        raise ValueError(f"unknown plan kind {kind!r}; expected one of {sorted(KIND_CODES)}")
    cu = cu_seqlens.to(torch.int32).contiguous()
    n = int(num_rows) if num_rows is not None else int(cu[-1])
    num_events = cu.numel() - 1
    rows = torch.empty((4, n), dtype=torch.int32, device=cu.device)
    if n == 0:
        return rows
    if kind == "cluster":
        if group_id is None or group_id.numel() != n:
            got = None if group_id is None else tuple(group_id.shape)
            raise ValueError(f"cluster plan needs group_id of shape ({n},), got {got}")
        gid = group_id.to(torch.int32).contiguous()
    else:
        gid = cu  # unused pointer
    if kind == "window" and (window is None or window < 0):
        raise ValueError(f"window plan needs window >= 0, got {window!r}")
    grid = (triton.cdiv(n, _ROW_BLOCK),)
    _row_meta_kernel[grid](
        cu,
        gid,
        rows,
        n,
        num_events,
        _steps(num_events),
        _steps(max_seqlen),
        int(adjacency),
        int(window or 0),
        KIND=KIND_CODES[kind],
        BLOCK=_ROW_BLOCK,
    )
    return rows


def build_tiles(cu_seqlens: Tensor, rows: Tensor, block_m: int) -> Tensor:
    """(T, 8) int32 tile metadata for tiles of block_m rows; one launch, O(N + T·B)."""
    cu = cu_seqlens.to(torch.int32).contiguous()
    n = rows.shape[1]
    num_events = cu.numel() - 1
    num_tiles = triton.cdiv(n, block_m) + num_events
    tiles = torch.empty((num_tiles, _TILE_FIELDS), dtype=torch.int32, device=cu.device)
    if num_tiles == 0 or n == 0:
        return tiles.zero_()
    _tile_meta_kernel[(num_tiles,)](cu, rows, tiles, n, num_events, BLOCK_M=block_m)
    return tiles


def build_block_meta(plan, num_rows: int, block_m: int, rows: Tensor | None = None) -> BlockMeta:
    """Metadata of an AttentionPlan (sorted order, num_rows hits) for tiles of block_m rows.

    num_rows is passed by the caller (q.shape[0]) so that no device sync is needed.
    """
    n = int(num_rows)
    if rows is None:
        rows = build_row_intervals(
            plan.kind,
            plan.cu_seqlens,
            plan.max_seqlen,
            group_id=plan.group_id,
            adjacency=plan.adjacency,
            window=plan.window,
            num_rows=n,
        )
    return BlockMeta(
        rows=rows,
        tiles=build_tiles(plan.cu_seqlens, rows, block_m),
        block_m=block_m,
        num_rows=rows.shape[1],
    )
