"""O(N) block-sparse metadata of a plan for flash-attn-4 (FA4, ``flash_attn.cute``).

FA4's block-sparse interface takes, per query block of ``block_m`` rows, the key blocks of
``block_n`` keys to visit as two ascending lists: *partial* blocks (the kernel evaluates a
``mask_mod`` per element) and *full* blocks (no mask). This module builds those lists from
the per-row key ranges of :mod:`trackformers.kernels.metadata` (``rows (4, N)``: row i
attends j iff ``lo1 <= j < hi1`` or ``lo2 <= j < hi2``), for packed events: the whole
packed batch is ONE sequence of N rows and the ranges never leave a row's event, so event
boundaries need no ``cu_seqlens`` (FA4's backward has no varlen block sparsity anyway).

Per query block [b0, b1) the visited keys are at most three intervals (hulls over the
block's rows), all O(1) reductions of the rows' ranges:

* ``H``: range 1 of every row, plus range-2 parts inside [b0, b1);
* ``A``: range-2 parts that lie before b0 (wrap-around to the start of the event the block
  starts in; they all begin at that event's start, so their union is one interval);
* ``B``: range-2 parts that end after b1 (wrap-around to the end of the block's last event).

Full blocks are the whole key blocks inside the intersection of every row's range 1, a
single interval; the last key block, when N is not a multiple of block_n, is never full
(the kernel masks keys >= N only on the first block it visits of each list, the highest).
The three intervals are merged into disjoint ascending pieces and the full interval is cut
out of them, which leaves at most six ascending partial pieces. The lists are written
``(1, 1, M, K)`` with K a bound on the visited blocks per query block known on the host
without a device sync (``max_blocks``): O(N) memory for windows and clusters.

Every mask here is symmetric, so with ``block_m == block_n`` the same lists serve the
backward pass, which FA4 indexes by key block (the transposed layout).
``aux (M * block_m, 4) int32`` repeats ``rows`` row by row (pad rows: empty ranges) for the
kernel's ``mask_mod`` (:mod:`trackformers.kernels.fa4_mask`): one 16-byte load per row.

``block_sparse_layout`` is ONE Triton launch (after the one of ``build_row_intervals``);
``block_sparse_layout_reference`` is the same algorithm in torch (CPU tests, reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

FA4_BLOCK = 128  # FA4's SM90 tile (128 x 128 at head_dim <= 128) and its backward's
_BIG = 1 << 30  # "no interval" start for the merge (larger than any block index)
_CHUNK = 32  # list positions written per loop step of the layout kernel


@dataclass
class FA4Layout:
    """Block-sparse lists of one plan (see module docstring), sorted order, N rows."""

    num_rows: int
    block_m: int
    block_n: int
    mask_cnt: Tensor  # (1, 1, M) int32 partial key blocks per query block
    mask_idx: Tensor  # (1, 1, M, K) int32, ascending; entries past the count are 0
    full_cnt: Tensor  # (1, 1, M) int32 full key blocks per query block
    full_idx: Tensor  # (1, 1, M, K) int32, ascending
    aux: Tensor  # (M * block_m, 4) int32 lo1, hi1, lo2, hi2 per row (pad rows: 0, 0, 0, 0)

    @property
    def max_blocks(self) -> int:
        """K, the length of the block lists (the bound they were built with)."""
        return self.mask_idx.shape[-1]


def max_blocks(plan, num_rows: int, block_m: int = FA4_BLOCK, block_n: int = FA4_BLOCK) -> int:
    """Upper bound K on the key blocks one query block visits, from host facts of the plan.

    Range 1 of row i lies within [i - s, i + s] (s = ``span``): window 2W (an event of
    n <= 2W + 1 hits is attended whole), cluster (2 adj + 1) * group_size (groups hold at
    most group_size hits, as ``cluster_plan`` builds them), else the longest event. The two
    wrap pieces of a window hold at most W keys each. Capped by the number of key blocks.

    Args:
        plan: the attention plan (its kind, max_seqlen, window, adjacency, group size).
        num_rows: N.
        block_m: query rows per block.
        block_n: key rows per block.
    """
    n = int(num_rows)
    nb = max(1, -(-n // block_n))
    longest = int(plan.max_seqlen)
    wrap = 0
    if plan.kind == "window":
        w = int(plan.window)
        span, wrap = min(2 * w, longest), min(w, longest)
    elif plan.kind == "cluster" and plan.extra.get("group_size") is not None:
        span = min((2 * int(plan.adjacency) + 1) * int(plan.extra["group_size"]), longest)
    else:
        span = longest
    k = -(-(block_m + 2 * span) // block_n) + 1
    if wrap:
        k += 2 * (-(-wrap // block_n) + 1)
    return max(1, min(nb, k))


def _check_rows(rows: Tensor, num_rows: int, block_m: int, block_n: int) -> None:
    if rows.ndim != 2 or rows.shape[0] != 4 or rows.shape[1] != num_rows:
        raise ValueError(f"FA4 layout needs rows of shape (4, {num_rows}), got {tuple(rows.shape)}")
    if rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"FA4 layout needs integer rows, got {rows.dtype}")
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"FA4 layout {name} must be a power of two >= 16, got {b}")


def _blocks(lo: Tensor, hi: Tensor, bn: int) -> tuple[Tensor, Tensor]:
    """Key-block interval [s, e) of the key interval [lo, hi); empty -> (_BIG, _BIG)."""
    ok = hi > lo
    s = torch.where(ok, torch.div(lo, bn, rounding_mode="floor"), _BIG)
    e = torch.where(ok, torch.div(hi - 1, bn, rounding_mode="floor") + 1, _BIG)
    return s, e


def block_sparse_layout_reference(
    rows: Tensor,
    num_rows: int,
    max_blocks: int,
    block_m: int = FA4_BLOCK,
    block_n: int = FA4_BLOCK,
) -> FA4Layout:
    """The layout in torch (any device; a reference for the Triton build and CPU tests).

    Args:
        rows: (4, N) int32/int64 per-row ranges lo1, hi1, lo2, hi2 (``build_row_intervals``).
        num_rows: N.
        max_blocks: K, the list length (``max_blocks``); a longer list raises a ValueError.
        block_m: query rows per block (a power of two >= 16).
        block_n: key rows per block (a power of two >= 16).
    """
    n = int(num_rows)
    _check_rows(rows, n, block_m, block_n)
    k_max = int(max_blocks)
    if n == 0:
        raise ValueError("FA4 layout needs at least one row")
    m = -(-n // block_m)
    pad = m * block_m - n
    r = torch.nn.functional.pad(rows.long(), (0, pad))  # (4, M * bm), pad rows empty
    lo1, hi1, lo2, hi2 = (x.view(m, block_m) for x in r)  # (M, bm) each
    i = torch.arange(m * block_m, device=rows.device).view(m, block_m)
    valid = i < n
    b0 = (torch.arange(m, device=rows.device) * block_m)[:, None]  # (M, 1)
    b1 = torch.clamp(b0 + block_m, max=n)
    has2 = valid & (hi2 > lo2)
    cls_a = has2 & (hi2 <= i) & (lo2 < b0)
    cls_b = has2 & (lo2 > i) & (hi2 > b1)
    inside = has2 & ~cls_a & ~cls_b
    big = 1 << 40

    def hull(sel_lo, lo, sel_hi, hi):
        return (torch.where(sel_lo, lo, big).amin(1), torch.where(sel_hi, hi, -1).amax(1))

    h_lo = torch.minimum(hull(valid, lo1, valid, hi1)[0], hull(inside, lo2, inside, hi2)[0])
    h_hi = torch.maximum(hull(valid, lo1, valid, hi1)[1], hull(inside, lo2, inside, hi2)[1])
    a_lo, a_hi = hull(cls_a, lo2, cls_a, hi2)
    c_lo, c_hi = hull(cls_b, lo2, cls_b, hi2)
    f_lo = torch.where(valid, lo1, -1).amax(1)
    f_hi = torch.where(valid, hi1, big).amin(1)
    pieces = [
        _blocks(a_lo, a_hi, block_n),
        _blocks(h_lo, h_hi, block_n),
        _blocks(c_lo, c_hi, block_n),
    ]
    s = torch.stack([p[0] for p in pieces], 1)  # (M, 3)
    e = torch.stack([p[1] for p in pieces], 1)
    order = torch.argsort(s, dim=1, stable=True)
    s, e = s.gather(1, order), e.gather(1, order)
    end = e[:, 0]
    for j in (1, 2):  # clip each piece to start after the previous ones: disjoint, same union
        sj = torch.maximum(s[:, j], end)
        ej = torch.maximum(e[:, j], sj)
        s[:, j], e[:, j], end = sj, ej, torch.maximum(end, ej)
    fa = torch.div(f_lo + block_n - 1, block_n, rounding_mode="floor")  # whole blocks inside
    fb = torch.div(f_hi, block_n, rounding_mode="floor")
    no_full = (f_hi <= f_lo) | (fb <= fa)
    fa = torch.where(no_full, _BIG, fa)
    fb = torch.where(no_full, _BIG, fb)
    part_s, part_e = [], []
    for j in range(3):
        left_e = torch.maximum(torch.minimum(e[:, j], fa), s[:, j])
        right_s = torch.maximum(s[:, j], fb)
        part_s += [s[:, j], right_s]
        part_e += [left_e, torch.maximum(e[:, j], right_s)]
    ps, pe = torch.stack(part_s, 1), torch.stack(part_e, 1)  # (M, 6) ascending pieces
    lens = (pe - ps).clamp_min(0)
    cnt = lens.sum(1)
    fcnt = torch.where(no_full, 0, fb - fa)
    if bool((cnt > k_max).any()) or bool((fcnt > k_max).any()):
        raise ValueError(
            f"FA4 layout: a query block visits more than max_blocks={k_max} key "
            f"blocks ({int(cnt.max())} partial, {int(fcnt.max())} full)"
        )
    t = torch.arange(k_max, device=rows.device)[None, :]  # (1, K)
    starts = torch.cumsum(lens, 1) - lens  # (M, 6) first list position of each piece
    idx = torch.zeros(m, k_max, dtype=torch.long, device=rows.device)
    for j in range(6):
        sel = (t >= starts[:, j : j + 1]) & (t < starts[:, j : j + 1] + lens[:, j : j + 1])
        idx = torch.where(sel, ps[:, j : j + 1] + t - starts[:, j : j + 1], idx)
    fidx = torch.where(t < fcnt[:, None], fa[:, None] + t, 0)
    aux = r.t().contiguous().int()  # (M * bm, 4)
    as4 = lambda x: x.int()[None, None]  # noqa: E731
    return FA4Layout(n, block_m, block_n, as4(cnt), as4(idx), as4(fcnt), as4(fidx), aux)


@triton.jit
def _interval(lo, hi, BN: tl.constexpr):
    ok = hi > lo
    s = tl.where(ok, lo // BN, 1 << 30)
    e = tl.where(ok, (hi - 1) // BN + 1, 1 << 30)
    return s, e


@triton.jit
def _swap(s0, e0, s1, e1):
    c = s1 < s0
    return tl.where(c, s1, s0), tl.where(c, e1, e0), tl.where(c, s0, s1), tl.where(c, e0, e1)


@triton.jit(do_not_specialize=["N", "K"])
def _layout_kernel(
    ROWS,  # (4, N) int32 per-row ranges
    CNT,  # (M,) int32 partial counts
    IDX,  # (M, K) int32 partial lists
    FCNT,  # (M,) int32 full counts
    FIDX,  # (M, K) int32 full lists
    AUX,  # (M * BM, 4) int32 ranges per row, pad rows empty
    OVER,  # (M,) int32: 1 where a list would exceed K (checked by tests)
    N,
    K,
    BM: tl.constexpr,
    BN: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b = tl.program_id(0)
    i = b * BM + tl.arange(0, BM)  # (BM,) rows of this query block
    valid = i < N
    lo1 = tl.load(ROWS + i, mask=valid, other=0)
    hi1 = tl.load(ROWS + N + i, mask=valid, other=0)
    lo2 = tl.load(ROWS + 2 * N + i, mask=valid, other=0)
    hi2 = tl.load(ROWS + 3 * N + i, mask=valid, other=0)
    tl.store(AUX + i * 4 + 0, lo1)
    tl.store(AUX + i * 4 + 1, hi1)
    tl.store(AUX + i * 4 + 2, lo2)
    tl.store(AUX + i * 4 + 3, hi2)
    b0 = b * BM
    b1 = tl.minimum(b0 + BM, N)
    big = 2147483647
    has2 = valid & (hi2 > lo2)
    cls_a = has2 & (hi2 <= i) & (lo2 < b0)
    cls_b = has2 & (lo2 > i) & (hi2 > b1)
    inside = has2 & ~cls_a & ~cls_b
    h_lo = tl.minimum(tl.min(tl.where(valid, lo1, big), 0), tl.min(tl.where(inside, lo2, big), 0))
    h_hi = tl.maximum(tl.max(tl.where(valid, hi1, -1), 0), tl.max(tl.where(inside, hi2, -1), 0))
    a_lo = tl.min(tl.where(cls_a, lo2, big), 0)
    a_hi = tl.max(tl.where(cls_a, hi2, -1), 0)
    c_lo = tl.min(tl.where(cls_b, lo2, big), 0)
    c_hi = tl.max(tl.where(cls_b, hi2, -1), 0)
    f_lo = tl.max(tl.where(valid, lo1, -1), 0)
    f_hi = tl.min(tl.where(valid, hi1, big), 0)
    s0, e0 = _interval(a_lo, a_hi, BN)
    s1, e1 = _interval(h_lo, h_hi, BN)
    s2, e2 = _interval(c_lo, c_hi, BN)
    # sort the three intervals by start (stable), then clip each to start after the previous
    s0, e0, s1, e1 = _swap(s0, e0, s1, e1)
    s1, e1, s2, e2 = _swap(s1, e1, s2, e2)
    s0, e0, s1, e1 = _swap(s0, e0, s1, e1)
    end = e0
    s1 = tl.maximum(s1, end)
    e1 = tl.maximum(e1, s1)
    end = tl.maximum(end, e1)
    s2 = tl.maximum(s2, end)
    e2 = tl.maximum(e2, s2)
    fa = (f_lo + BN - 1) // BN
    fb = f_hi // BN
    no_full = (f_hi <= f_lo) | (fb <= fa)
    fa = tl.where(no_full, 1 << 30, fa)
    fb = tl.where(no_full, 1 << 30, fb)
    # six ascending partial pieces: each merged interval minus the full blocks [fa, fb)
    p0s = s0
    p0e = tl.maximum(tl.minimum(e0, fa), s0)
    p1s = tl.maximum(s0, fb)
    p1e = tl.maximum(e0, p1s)
    p2s = s1
    p2e = tl.maximum(tl.minimum(e1, fa), s1)
    p3s = tl.maximum(s1, fb)
    p3e = tl.maximum(e1, p3s)
    p4s = s2
    p4e = tl.maximum(tl.minimum(e2, fa), s2)
    p5s = tl.maximum(s2, fb)
    p5e = tl.maximum(e2, p5s)
    c1 = p0e - p0s
    c2 = c1 + p1e - p1s
    c3 = c2 + p2e - p2s
    c4 = c3 + p3e - p3s
    c5 = c4 + p4e - p4s
    cnt = c5 + p5e - p5s
    fcnt = tl.where(no_full, 0, fb - fa)
    tl.store(CNT + b, cnt)
    tl.store(FCNT + b, fcnt)
    tl.store(OVER + b, ((cnt > K) | (fcnt > K)).to(tl.int32))
    for t0 in range(0, K, CHUNK):
        t = t0 + tl.arange(0, CHUNK)
        idx = tl.where(
            t < c1,
            p0s + t,
            tl.where(
                t < c2,
                p1s + t - c1,
                tl.where(
                    t < c3,
                    p2s + t - c2,
                    tl.where(t < c4, p3s + t - c3, tl.where(t < c5, p4s + t - c4, p5s + t - c5)),
                ),
            ),
        )
        idx = tl.where(t < cnt, idx, 0)
        tl.store(IDX + b * K + t, idx, mask=t < K)
        tl.store(FIDX + b * K + t, tl.where(t < fcnt, fa + t, 0), mask=t < K)


def block_sparse_layout(
    rows: Tensor,
    num_rows: int,
    max_blocks: int,
    block_m: int = FA4_BLOCK,
    block_n: int = FA4_BLOCK,
    check: bool = False,
) -> FA4Layout:
    """The layout in ONE Triton launch (no device sync unless ``check``).

    Args:
        rows: (4, N) int32/int64 per-row ranges lo1, hi1, lo2, hi2 (``build_row_intervals``).
        num_rows: N.
        max_blocks: K, the list length (``max_blocks``).
        block_m: query rows per block (a power of two >= 16).
        block_n: key rows per block (a power of two >= 16).
        check: sync once and raise a ValueError when a list is longer than K.
    """
    n = int(num_rows)
    _check_rows(rows, n, block_m, block_n)
    if n == 0:
        raise ValueError("FA4 layout needs at least one row")
    k_max = int(max_blocks)
    m = triton.cdiv(n, block_m)
    dev = rows.device
    cnt, fcnt, over = (torch.empty(m, dtype=torch.int32, device=dev) for _ in range(3))
    idx, fidx = (torch.empty(m, k_max, dtype=torch.int32, device=dev) for _ in range(2))
    aux = torch.empty(m * block_m, 4, dtype=torch.int32, device=dev)
    _layout_kernel[(m,)](
        rows.to(torch.int32).contiguous(),
        cnt,
        idx,
        fcnt,
        fidx,
        aux,
        over,
        n,
        k_max,
        BM=block_m,
        BN=block_n,
        CHUNK=_CHUNK,
    )
    if check and bool(over.any()):
        raise ValueError(
            f"FA4 layout: a query block visits more than max_blocks={k_max} key "
            f"blocks ({int(cnt.max())} partial, {int(fcnt.max())} full)"
        )
    as4 = lambda x: x[None, None]  # noqa: E731
    return FA4Layout(n, block_m, block_n, as4(cnt), as4(idx), as4(fcnt), as4(fidx), aux)


def expand_mask(layout: FA4Layout) -> Tensor:
    """(N, N) bool mask that the layout makes the kernel apply: full blocks attended whole,
    partial blocks through the per-row ranges in ``aux``. O(N^2): tests only.

    Args:
        layout: the block lists of one plan.
    """
    n, bm, bn = layout.num_rows, layout.block_m, layout.block_n
    m = layout.mask_cnt.shape[-1]
    visit = torch.zeros(m, -(-n // bn), dtype=torch.int8)
    for cnt, idx, code in (
        (layout.mask_cnt, layout.mask_idx, 1),
        (layout.full_cnt, layout.full_idx, 2),
    ):
        c, ix = cnt[0, 0].cpu().long(), idx[0, 0].cpu().long()
        for qb in range(m):
            lst = ix[qb, : int(c[qb])]
            twice = len(set(lst.tolist())) != lst.numel() or bool((visit[qb, lst] != 0).any())
            if twice:
                raise AssertionError(f"query block {qb}: a key block is listed twice")
            visit[qb, lst] = code
    aux = layout.aux[:n].cpu().long()
    j = torch.arange(n)[None, :]
    ranges = ((j >= aux[:, 0:1]) & (j < aux[:, 1:2])) | ((j >= aux[:, 2:3]) & (j < aux[:, 3:4]))
    per = visit.repeat_interleave(bm, 0)[:n].repeat_interleave(bn, 1)[:, :n]  # (N, N)
    return (per == 2) | ((per == 1) & ranges)


def visited_pairs(layout: FA4Layout) -> int:
    """(query, key) pairs the kernel computes (whole blocks, pad rows and keys included).

    Args:
        layout: the block lists of one plan.
    """
    blocks = int(layout.mask_cnt.sum()) + int(layout.full_cnt.sum())
    return blocks * layout.block_m * layout.block_n


__all__ = [
    "FA4_BLOCK",
    "FA4Layout",
    "max_blocks",
    "block_sparse_layout",
    "block_sparse_layout_reference",
    "expand_mask",
    "visited_pairs",
]
