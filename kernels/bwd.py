"""Backward kernels of block-sparse varlen attention (FlashAttention-2 style, no atomics).

``delta_kernel``: delta = rowsum(dO * O) per (row, head), stored (H, N) float32.
``attention_bwd_dq_kernel``: one program per (query tile, head), loops over its key ranges.
``attention_bwd_dkdv_kernel``: one program per (key tile, head), loops over the queries that
attend it. The masks are symmetric, so the query set of a key tile is given by exactly the
same tile metadata and per-row ranges as the key set of a query tile.
"""

from __future__ import annotations

import triton
import triton.language as tl
from trackformers.kernels.fwd import _allowed


@triton.jit(do_not_specialize=["NH", "N"])
def delta_kernel(O, DO, DELTA, NH, H, N, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat (row, head) index
    rm = r < NH
    offs = r.to(tl.int64)[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(O + offs, mask=rm[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=rm[:, None], other=0.0).to(tl.float32)
    d = tl.sum(o * do, 1)  # (BLOCK,)
    row = r // H
    head = r % H
    tl.store(DELTA + head.to(tl.int64) * N + row, d, mask=rm)


@triton.jit
def _dq_segment(
    dq, q, do, lse, delta, K, V, start, end, lo1, hi1, lo2, hi2, stride_n, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    offs_d = tl.arange(0, HEAD_DIM)
    for s in range(start, end, BLOCK_N):
        offs_n = s + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key rows
        kv_off = offs_n.to(tl.int64)[:, None] * stride_n + offs_d[None, :]
        if MASKED:
            inb = (offs_n < end)[:, None]
            k = tl.load(K + kv_off, mask=inb, other=0.0)  # (BLOCK_N, D)
            v = tl.load(V + kv_off, mask=inb, other=0.0)  # (BLOCK_N, D)
        else:
            k = tl.load(K + kv_off)
            v = tl.load(V + kv_off)
        qk = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.math.exp2(qk - lse[:, None])
        if MASKED:
            p = tl.where(_allowed(offs_n, end, lo1, hi1, lo2, hi2), p, 0.0)
        dp = tl.dot(do, tl.trans(v))  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit(do_not_specialize=["N"])
def attention_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, TILES, ROWS, N, H, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)
    tb = TILES + t * 8
    q_start = tl.load(tb + 0)
    q_end = tl.load(tb + 1)
    a_lo = tl.load(tb + 2)
    f_lo = tl.load(tb + 3)
    f_hi = tl.load(tb + 4)
    a_hi = tl.load(tb + 5)
    b_lo = tl.load(tb + 6)
    b_hi = tl.load(tb + 7)
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
    lo2 = tl.load(ROWS + 2 * N + offs_m, mask=mvalid, other=0)
    hi2 = tl.load(ROWS + 3 * N + offs_m, mask=mvalid, other=0)
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    Kh = K + head
    Vh = V + head
    f_end = f_lo + ((f_hi - f_lo) // BLOCK_N) * BLOCK_N
    dq = _dq_segment(dq, q, do, lse, delta, Kh, Vh, a_lo, f_lo, lo1, hi1, lo2, hi2, stride_n,
                     qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dq = _dq_segment(dq, q, do, lse, delta, Kh, Vh, f_lo, f_end, lo1, hi1, lo2, hi2, stride_n,
                     qk_scale, HEAD_DIM, BLOCK_N, False)  # fmt: skip
    dq = _dq_segment(dq, q, do, lse, delta, Kh, Vh, f_end, a_hi, lo1, hi1, lo2, hi2, stride_n,
                     qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dq = _dq_segment(dq, q, do, lse, delta, Kh, Vh, b_lo, b_hi, lo1, hi1, lo2, hi2, stride_n,
                     qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dq = dq * sm_scale
    tl.store(DQ + head + row_off, dq.to(DQ.dtype.element_ty), mask=mvalid[:, None])


@triton.jit
def _dkdv_segment(
    dk, dv, k, v, Q, DO, LSE, DELTA, start, end, lo1, hi1, lo2, hi2, stride_n, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    offs_d = tl.arange(0, HEAD_DIM)
    for s in range(start, end, BLOCK_N):
        offs_n = s + tl.arange(0, BLOCK_N)  # (BLOCK_N,) query rows
        q_off = offs_n.to(tl.int64)[:, None] * stride_n + offs_d[None, :]
        if MASKED:
            inb = offs_n < end
            q = tl.load(Q + q_off, mask=inb[:, None], other=0.0)  # (BLOCK_N, D)
            do = tl.load(DO + q_off, mask=inb[:, None], other=0.0)  # (BLOCK_N, D)
            lse = tl.load(LSE + offs_n, mask=inb, other=0.0)
            delta = tl.load(DELTA + offs_n, mask=inb, other=0.0)
        else:
            q = tl.load(Q + q_off)
            do = tl.load(DO + q_off)
            lse = tl.load(LSE + offs_n)
            delta = tl.load(DELTA + offs_n)
        qkT = tl.dot(k, tl.trans(q)) * qk_scale  # (BLOCK_M, BLOCK_N) keys x queries
        pT = tl.math.exp2(qkT - lse[None, :])
        if MASKED:
            pT = tl.where(_allowed(offs_n, end, lo1, hi1, lo2, hi2), pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        dpT = tl.dot(v, tl.trans(do))  # (BLOCK_M, BLOCK_N)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk)
    return dk, dv


@triton.jit(do_not_specialize=["N"])
def attention_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, TILES, ROWS, N, H, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)
    tb = TILES + t * 8
    k_start = tl.load(tb + 0)
    k_end = tl.load(tb + 1)
    a_lo = tl.load(tb + 2)
    f_lo = tl.load(tb + 3)
    f_hi = tl.load(tb + 4)
    a_hi = tl.load(tb + 5)
    b_lo = tl.load(tb + 6)
    b_hi = tl.load(tb + 7)
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
    lo2 = tl.load(ROWS + 2 * N + offs_m, mask=mvalid, other=0)
    hi2 = tl.load(ROWS + 3 * N + offs_m, mask=mvalid, other=0)
    qk_scale = sm_scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    Qh = Q + head
    DOh = DO + head
    hN = h.to(tl.int64) * N
    LSEh = LSE + hN
    DELTAh = DELTA + hN
    f_end = f_lo + ((f_hi - f_lo) // BLOCK_N) * BLOCK_N
    dk, dv = _dkdv_segment(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, a_lo, f_lo, lo1, hi1, lo2, hi2,
                           stride_n, qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dk, dv = _dkdv_segment(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, f_lo, f_end, lo1, hi1, lo2, hi2,
                           stride_n, qk_scale, HEAD_DIM, BLOCK_N, False)  # fmt: skip
    dk, dv = _dkdv_segment(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, f_end, a_hi, lo1, hi1, lo2, hi2,
                           stride_n, qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dk, dv = _dkdv_segment(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, b_lo, b_hi, lo1, hi1, lo2, hi2,
                           stride_n, qk_scale, HEAD_DIM, BLOCK_N, True)  # fmt: skip
    dk = dk * sm_scale
    tl.store(DK + head + row_off, dk.to(DK.dtype.element_ty), mask=mvalid[:, None])
    tl.store(DV + head + row_off, dv.to(DV.dtype.element_ty), mask=mvalid[:, None])


def bwd_configs(block_m: int) -> list[triton.Config]:
    """Autotune space for both backward kernels (key: HEAD_DIM and the dtypes)."""
    space = [(64, 4, 2), (32, 4, 2), (64, 8, 2), (32, 4, 3)]
    return [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s) for bn, w, s in space]
