"""Forward kernel of block-sparse varlen attention (online softmax, fp32 accumulation).

q, k, v, o: (N, H, D) contiguous in the plan's sorted order; stats: (2, H, N) float32, the
row maximum m of the scaled scores (log2 units) and the softmax denominator l = sum 2**(s - m),
kept for the backward pass (which evaluates exp2(s - m), an argument near 0 for the keys
that matter, so the packed 16-bit exp2 stays accurate there). One program per
(query tile, head); the key ranges come from :mod:`trackformers.kernels.metadata`.
Keys are visited in blocks aligned on the tile's hull start (``common.split_hull``): a masked
head, an unmasked body of whole blocks every row attends, a masked tail (+ the wrap range).
``PIPE_QK`` (a variant under test) issues the next key block's QK product before the
softmax of the current one in the unmasked body, so the tensor cores and the FP32/MUFU units
can overlap inside one warpgroup. ``PROBE`` != 0 are timing probes for the README's limit
analysis whose outputs are WRONG on purpose (1: exponential replaced by a cast, 2: the body
re-reads one K/V block, 3: no softmax at all); only the benchmark sets them.
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


@triton.jit
def _fwd_update(
    acc,
    m_i,
    l_i,
    qk,
    v,
    qk_scale,
    DT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FAST_EXP: tl.constexpr,
    ROWSUM_MMA: tl.constexpr,
    PROBE: tl.constexpr,
):
    """Online-softmax update with the scores qk (BLOCK_M, BLOCK_N) of one key block."""
    if PROBE == 3:  # timing probe: no softmax at all (products and loads only)
        p = qk.to(DT)
        alpha = tl.full(m_i.shape, 1.0, tl.float32)
        m_new = m_i
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)  # log2 units
        if PROBE == 1:  # timing probe: the exponential replaced by a cast
            p = (qk * qk_scale - m_new[:, None]).to(DT)
        else:
            p = exp2(qk * qk_scale - m_new[:, None], DT, FAST_EXP)
        alpha = tl.math.exp2(m_i - m_new)
    if ROWSUM_MMA:  # row sums on the tensor cores: (BLOCK_M, 16) accumulator
        l_i = tl.dot(p, tl.full([BLOCK_N, 16], 1.0, p.dtype), l_i * alpha[:, None])
    else:
        l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p, v, acc)
    return acc, m_new, l_i


@triton.jit
def _fwd_segment(
    acc,
    m_i,
    l_i,
    q,
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
    ROWSUM_MMA: tl.constexpr,
    PIPE_QK: tl.constexpr,
    PROBE: tl.constexpr,
):
    """Keys [start, end) in blocks of BLOCK_N from start; MASKED applies the element mask
    (masked segments may end in a partial block; unmasked ones are whole blocks)."""
    offs_d = tl.arange(0, HEAD_DIM)
    offs_b = tl.arange(0, BLOCK_N)
    kv_ptr = (start + offs_b).to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    k_ptrs = K + kv_ptr
    v_ptrs = V + kv_ptr
    step = BLOCK_N * stride_n
    if PROBE == 2 and not MASKED:  # timing probe: the body re-reads one K/V block
        step = 0
    DT = V.dtype.element_ty
    if MASKED:
        lo1, w1 = clamp_ranges(lo1, hi1, start, end)
        if HAS_WRAP:
            lo2, w2 = clamp_ranges(lo2, hi2, start, end)
        else:
            w2 = w1
        for s in range(start, end, BLOCK_N):
            offs_n = s + offs_b  # (BLOCK_N,) sorted key rows
            inb = (offs_n < end)[:, None]
            k = tl.load(k_ptrs, mask=inb, other=0.0)  # (BLOCK_N, D)
            v = tl.load(v_ptrs, mask=inb, other=0.0)  # (BLOCK_N, D)
            qk = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N)
            qk = tl.where(allowed(offs_n, lo1, w1, lo2, w2, HAS_WRAP), qk, float("-inf"))
            acc, m_i, l_i = _fwd_update(
                acc, m_i, l_i, qk, v, qk_scale, DT, BLOCK_N, FAST_EXP, ROWSUM_MMA, PROBE
            )
            k_ptrs += step
            v_ptrs += step
    elif PIPE_QK:  # the next block's QK product is issued before this block's softmax
        nb = (end - start) // BLOCK_N
        first = (offs_b < nb * BLOCK_N)[:, None]  # all False when the body is empty
        qk = tl.dot(q, tl.trans(tl.load(k_ptrs, mask=first, other=0.0)))  # (BLOCK_M, BLOCK_N)
        for i in range(0, nb):
            nxt = tl.minimum(i + 1, nb - 1)  # the last iteration recomputes its own block
            qk_next = tl.dot(q, tl.trans(tl.load(k_ptrs + nxt * step)))
            v = tl.load(v_ptrs)
            acc, m_i, l_i = _fwd_update(
                acc, m_i, l_i, qk, v, qk_scale, DT, BLOCK_N, FAST_EXP, ROWSUM_MMA, PROBE
            )
            qk = qk_next
            v_ptrs += step
    else:
        for _ in range(start, end, BLOCK_N):
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
            qk = tl.dot(q, tl.trans(k))
            acc, m_i, l_i = _fwd_update(
                acc, m_i, l_i, qk, v, qk_scale, DT, BLOCK_N, FAST_EXP, ROWSUM_MMA, PROBE
            )
            k_ptrs += step
            v_ptrs += step
    return acc, m_i, l_i


@triton.jit(do_not_specialize=["N"])
def attention_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
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
    ROWSUM_MMA: tl.constexpr,
    PIPE_QK: tl.constexpr = False,
    PROBE: tl.constexpr = 0,
):
    """Output O and log-sum-exp of one (query tile, head) program over its key ranges."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    q_start, q_end, a_lo, f_lo, f_hi, a_hi = tile_bounds(TILES, t)
    stride_n = H * HEAD_DIM
    offs_m = q_start + tl.arange(0, BLOCK_M)  # (BLOCK_M,) sorted query rows
    mvalid = offs_m < q_end
    offs_d = tl.arange(0, HEAD_DIM)
    row_off = offs_m.to(tl.int64)[:, None] * stride_n + offs_d[None, :]
    head = h * HEAD_DIM
    q = tl.load(Q + head + row_off, mask=mvalid[:, None], other=0.0)  # (BLOCK_M, D)
    lo1 = tl.load(ROWS + offs_m, mask=mvalid, other=0)
    hi1 = tl.load(ROWS + N + offs_m, mask=mvalid, other=0)
    if HAS_WRAP:
        lo2 = tl.load(ROWS + 2 * N + offs_m, mask=mvalid, other=0)
        hi2 = tl.load(ROWS + 3 * N + offs_m, mask=mvalid, other=0)
    else:
        lo2 = lo1
        hi2 = lo1
    qk_scale = sm_scale * 1.4426950408889634
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    if ROWSUM_MMA:
        l_i = tl.zeros([BLOCK_M, 16], dtype=tl.float32)
    else:
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    Kh = K + head
    Vh = V + head
    h_end, b_end = split_hull(a_lo, f_lo, f_hi, a_hi, BLOCK_N)
    acc, m_i, l_i = _fwd_segment(
        acc,
        m_i,
        l_i,
        q,
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
        ROWSUM_MMA,
        False,
        PROBE,
    )
    acc, m_i, l_i = _fwd_segment(
        acc,
        m_i,
        l_i,
        q,
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
        ROWSUM_MMA,
        PIPE_QK,
        PROBE,
    )
    acc, m_i, l_i = _fwd_segment(
        acc,
        m_i,
        l_i,
        q,
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
        ROWSUM_MMA,
        False,
        PROBE,
    )
    if HAS_WRAP:
        b_lo, b_hi = wrap_bounds(TILES, t)
        acc, m_i, l_i = _fwd_segment(
            acc,
            m_i,
            l_i,
            q,
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
            ROWSUM_MMA,
            False,
            PROBE,
        )
    if ROWSUM_MMA:
        l_i = tl.sum(l_i, 1) * 0.0625
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    o = acc / l_safe[:, None]
    tl.store(O + head + row_off, o.to(O.dtype.element_ty), mask=mvalid[:, None])
    hN = h.to(tl.int64) * N
    tl.store(LSE + hN + offs_m, m_i, mask=mvalid)
    tl.store(LSE + H * N + hN + offs_m, l_safe, mask=mvalid)


def fwd_configs(block_m: int) -> list[triton.Config]:
    """Autotune space (key: HEAD_DIM, HAS_WRAP, FAST_EXP and the dtypes): key block, row sums
    on the tensor cores or not, warps, stages, register cap (the winners of the H200 sweep in
    BENCHMARKS.md; 8 warps, block_n = 128 and 2 stages always lost).

    Args:
        block_m: rows per tile.
    """
    space = [
        (64, True, 4, 3, 128),
        (64, False, 4, 3, 128),
        (32, True, 4, 3, None),
        (64, True, 4, 3, None),
    ]
    return [
        triton.Config({"BLOCK_N": bn, "ROWSUM_MMA": rs}, num_warps=w, num_stages=s, maxnreg=r)
        for bn, rs, w, s, r in space
    ]
