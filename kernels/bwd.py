"""Backward kernels of block-sparse varlen attention (FlashAttention-2 style, no atomics).

``bwd_preprocess_kernel``: dO' = dO / l and delta' = rowsum(dO * O) / l per (row, head).
With the unnormalised p' = exp2(s - m) (m, l from the forward), p = p' / l, so
dV = p'^T dO', dS = p' * (dO' V^T - delta') and no 1/l appears per element; the LSE / M
pointer of the kernels below holds m.
``attention_bwd_dq_kernel``: one program per (query tile, head), loops over its key ranges.
``attention_bwd_dkdv_kernel``: one program per (key tile, head), loops over the queries that
attend it; with ATOMIC_DQ it also adds dQ = dS K into an fp32 buffer (atomics) so that the
dq kernel, which recomputes S, P and dP, is skipped (a variant under test).
The masks are symmetric, so the query set of a key tile is given by exactly the
same tile metadata and per-row ranges as the key set of a query tile.
"""

from __future__ import annotations

import triton
import triton.language as tl
from trackformers.kernels.common import (
    allowed,
    clamp_ranges,
    exp2,
    split_hull,
    tile_bounds,
    wrap_bounds,
)


@triton.jit(do_not_specialize=["NH", "N"])
def bwd_preprocess_kernel(
    O, DO, STATS, DOS, DELTA, NH, H, N, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr
):
    """dO / l (stored in dO's dtype) and delta / l = rowsum(dO * O) / l, per (row, head)."""
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat (row, head) index
    rm = r < NH
    offs = r.to(tl.int64)[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(O + offs, mask=rm[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=rm[:, None], other=0.0).to(tl.float32)
    row = r // H
    head = r % H
    hn = head.to(tl.int64) * N + row
    inv_l = 1.0 / tl.load(STATS + H * N + hn, mask=rm, other=1.0)
    tl.store(DOS + offs, (do * inv_l[:, None]).to(DOS.dtype.element_ty), mask=rm[:, None])
    tl.store(DELTA + hn, tl.sum(o * do, 1) * inv_l, mask=rm)


@triton.jit
def _dq_segment(
    dq,
    q,
    do,
    lse,
    delta,
    K,
    V,
    start,
    end,
    lo1,
    hi1,
    lo2,
    hi2,
    stride_n,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_WRAP: tl.constexpr,
    FAST_EXP: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_N)
    kv_ptr = (start + offs_b).to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    k_ptrs = K + kv_ptr
    v_ptrs = V + kv_ptr
    step = BLOCK_N * stride_n
    if MASKED:  # hi becomes the clipped range's width (common.allowed)
        lo1, hi1 = clamp_ranges(lo1, hi1, start, end)
        if HAS_WRAP:
            lo2, hi2 = clamp_ranges(lo2, hi2, start, end)
    for s in range(start, end, BLOCK_N):
        offs_n = s + offs_b  # (BLOCK_N,) key rows
        if MASKED:
            inb = (offs_n < end)[:, None]
            k = tl.load(k_ptrs, mask=inb, other=0.0)  # (BLOCK_N, D)
            v = tl.load(v_ptrs, mask=inb, other=0.0)  # (BLOCK_N, D)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N)
        p = exp2(qk * qk_scale - lse[:, None], K.dtype.element_ty, FAST_EXP)
        if MASKED:
            p = tl.where(allowed(offs_n, lo1, hi1, lo2, hi2, HAS_WRAP), p, 0.0)
        dp = tl.dot(do, tl.trans(v))  # (BLOCK_M, BLOCK_N)
        ds = p.to(tl.float32) * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
        k_ptrs += step
        v_ptrs += step
    return dq


@triton.jit(do_not_specialize=["N"])
def attention_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    LSE,
    DELTA,
    TILES,
    ROWS,
    N,
    H,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_WRAP: tl.constexpr,
    FAST_EXP: tl.constexpr,
):
    """dQ of one (query tile, head) program over the key ranges of its rows."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    q_start, q_end, a_lo, f_lo, f_hi, a_hi = tile_bounds(TILES, t)
    stride_n = H * HEAD_DIM
    head = h * HEAD_DIM
    offs_m = q_start + tl.arange(0, BLOCK_M)
    mvalid = offs_m < q_end
    offs_d = tl.arange(0, HEAD_DIM)
    row_off = offs_m.to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    q = tl.load(Q + head + row_off, mask=mvalid[:, None], other=0.0)  # (BLOCK_M, D)
    do = tl.load(DO + head + row_off, mask=mvalid[:, None], other=0.0)  # (BLOCK_M, D)
    hN = h.to(tl.int64) * N
    lse = tl.load(LSE + hN + offs_m, mask=mvalid, other=0.0)
    delta = tl.load(DELTA + hN + offs_m, mask=mvalid, other=0.0)
    lo1 = tl.load(ROWS + offs_m, mask=mvalid, other=0)
    hi1 = tl.load(ROWS + N + offs_m, mask=mvalid, other=0)
    if HAS_WRAP:
        lo2 = tl.load(ROWS + 2 * N + offs_m, mask=mvalid, other=0)
        hi2 = tl.load(ROWS + 3 * N + offs_m, mask=mvalid, other=0)
    else:
        lo2 = lo1
        hi2 = lo1
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    Kh = K + head
    Vh = V + head
    h_end, b_end = split_hull(a_lo, f_lo, f_hi, a_hi, BLOCK_N)
    dq = _dq_segment(
        dq,
        q,
        do,
        lse,
        delta,
        Kh,
        Vh,
        a_lo,
        h_end,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        HAS_WRAP,
        FAST_EXP,
    )
    dq = _dq_segment(
        dq,
        q,
        do,
        lse,
        delta,
        Kh,
        Vh,
        h_end,
        b_end,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        False,
        HAS_WRAP,
        FAST_EXP,
    )
    dq = _dq_segment(
        dq,
        q,
        do,
        lse,
        delta,
        Kh,
        Vh,
        b_end,
        a_hi,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        HAS_WRAP,
        FAST_EXP,
    )
    if HAS_WRAP:
        b_lo, b_hi = wrap_bounds(TILES, t)
        dq = _dq_segment(
            dq,
            q,
            do,
            lse,
            delta,
            Kh,
            Vh,
            b_lo,
            b_hi,
            lo1,
            hi1,
            lo2,
            hi2,
            stride_n,
            qk_scale,
            HEAD_DIM,
            BLOCK_N,
            True,
            HAS_WRAP,
            FAST_EXP,
        )
    dq = dq * sm_scale
    tl.store(DQ + head + row_off, dq.to(DQ.dtype.element_ty), mask=mvalid[:, None])


@triton.jit
def _dkdv_segment(
    dk,
    dv,
    k,
    v,
    Q,
    DO,
    LSE,
    DELTA,
    DQA,
    start,
    end,
    lo1,
    hi1,
    lo2,
    hi2,
    stride_n,
    qk_scale,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_WRAP: tl.constexpr,
    FAST_EXP: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
):
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_N)
    q_ptr = (start + offs_b).to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    q_ptrs = Q + q_ptr
    do_ptrs = DO + q_ptr
    step = BLOCK_N * stride_n
    if MASKED:  # hi becomes the clipped range's width (common.allowed)
        lo1, hi1 = clamp_ranges(lo1, hi1, start, end)
        if HAS_WRAP:
            lo2, hi2 = clamp_ranges(lo2, hi2, start, end)
    for s in range(start, end, BLOCK_N):
        offs_n = s + offs_b  # (BLOCK_N,) query rows
        if MASKED:
            inb = offs_n < end
            q = tl.load(q_ptrs, mask=inb[:, None], other=0.0)  # (BLOCK_N, D)
            do = tl.load(do_ptrs, mask=inb[:, None], other=0.0)  # (BLOCK_N, D)
            lse = tl.load(LSE + offs_n, mask=inb, other=0.0)
            delta = tl.load(DELTA + offs_n, mask=inb, other=0.0)
        else:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE + offs_n)
            delta = tl.load(DELTA + offs_n)
        qkT = tl.dot(k, tl.trans(q))  # (BLOCK_M, BLOCK_N) keys x queries
        pT = exp2(qkT * qk_scale - lse[None, :], Q.dtype.element_ty, FAST_EXP)
        if MASKED:
            pT = tl.where(allowed(offs_n, lo1, hi1, lo2, hi2, HAS_WRAP), pT, 0.0)
        dv = tl.dot(pT, do, dv)
        dpT = tl.dot(v, tl.trans(do))  # (BLOCK_M, BLOCK_N)
        dsT = pT.to(tl.float32) * (dpT - delta[None, :])
        ds16 = dsT.to(q.dtype)
        dk = tl.dot(ds16, q, dk)
        if ATOMIC_DQ:  # this key tile's share of dQ, added into an fp32 buffer
            dq_part = tl.dot(tl.trans(ds16), k) * sm_scale  # (BLOCK_N, D)
            dq_ptrs = DQA + (offs_n.to(tl.int64)[:, None] * stride_n + offs_d[None, :])
            if MASKED:
                tl.atomic_add(dq_ptrs, dq_part, mask=(offs_n < end)[:, None], sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq_part, sem="relaxed")
        q_ptrs += step
        do_ptrs += step
    return dk, dv


@triton.jit(do_not_specialize=["N"])
def attention_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    DQA,
    LSE,
    DELTA,
    TILES,
    ROWS,
    N,
    H,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_WRAP: tl.constexpr,
    FAST_EXP: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
):
    """dK and dV of one (key tile, head) program over the queries that attend it."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    k_start, k_end, a_lo, f_lo, f_hi, a_hi = tile_bounds(TILES, t)
    stride_n = H * HEAD_DIM
    head = h * HEAD_DIM
    offs_m = k_start + tl.arange(0, BLOCK_M)  # (BLOCK_M,) key rows of this tile
    mvalid = offs_m < k_end
    offs_d = tl.arange(0, HEAD_DIM)
    row_off = offs_m.to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    k = tl.load(K + head + row_off, mask=mvalid[:, None], other=0.0)  # (BLOCK_M, D)
    v = tl.load(V + head + row_off, mask=mvalid[:, None], other=0.0)  # (BLOCK_M, D)
    lo1 = tl.load(ROWS + offs_m, mask=mvalid, other=0)
    hi1 = tl.load(ROWS + N + offs_m, mask=mvalid, other=0)
    if HAS_WRAP:
        lo2 = tl.load(ROWS + 2 * N + offs_m, mask=mvalid, other=0)
        hi2 = tl.load(ROWS + 3 * N + offs_m, mask=mvalid, other=0)
    else:
        lo2 = lo1
        hi2 = lo1
    qk_scale = sm_scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    Qh = Q + head
    DOh = DO + head
    hN = h.to(tl.int64) * N
    LSEh = LSE + hN
    DELTAh = DELTA + hN
    DQAh = DQA + head
    h_end, b_end = split_hull(a_lo, f_lo, f_hi, a_hi, BLOCK_N)
    dk, dv = _dkdv_segment(
        dk,
        dv,
        k,
        v,
        Qh,
        DOh,
        LSEh,
        DELTAh,
        DQAh,
        a_lo,
        h_end,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        sm_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        HAS_WRAP,
        FAST_EXP,
        ATOMIC_DQ,
    )
    dk, dv = _dkdv_segment(
        dk,
        dv,
        k,
        v,
        Qh,
        DOh,
        LSEh,
        DELTAh,
        DQAh,
        h_end,
        b_end,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        sm_scale,
        HEAD_DIM,
        BLOCK_N,
        False,
        HAS_WRAP,
        FAST_EXP,
        ATOMIC_DQ,
    )
    dk, dv = _dkdv_segment(
        dk,
        dv,
        k,
        v,
        Qh,
        DOh,
        LSEh,
        DELTAh,
        DQAh,
        b_end,
        a_hi,
        lo1,
        hi1,
        lo2,
        hi2,
        stride_n,
        qk_scale,
        sm_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        HAS_WRAP,
        FAST_EXP,
        ATOMIC_DQ,
    )
    if HAS_WRAP:
        b_lo, b_hi = wrap_bounds(TILES, t)
        dk, dv = _dkdv_segment(
            dk,
            dv,
            k,
            v,
            Qh,
            DOh,
            LSEh,
            DELTAh,
            DQAh,
            b_lo,
            b_hi,
            lo1,
            hi1,
            lo2,
            hi2,
            stride_n,
            qk_scale,
            sm_scale,
            HEAD_DIM,
            BLOCK_N,
            True,
            HAS_WRAP,
            FAST_EXP,
            ATOMIC_DQ,
        )
    dk = dk * sm_scale
    tl.store(DK + head + row_off, dk.to(DK.dtype.element_ty), mask=mvalid[:, None])
    tl.store(DV + head + row_off, dv.to(DV.dtype.element_ty), mask=mvalid[:, None])


def bwd_configs(block_m: int) -> list[triton.Config]:
    """Autotune space for both backward kernels (key: HEAD_DIM, HAS_WRAP and the dtypes):
    key block, warps, stages, register cap (block_n = 64, 8 warps, atomics lost on the H200).

    Args:
        block_m: rows per tile.
    """
    space = [(32, 4, 3, None), (32, 4, 3, 128), (32, 4, 2, None)]
    return [
        triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s, maxnreg=r)
        for bn, w, s, r in space
    ]
