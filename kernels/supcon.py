"""Fused supervised-contrastive (SupCon) statistics of packed events: flash-style, O(N) memory.

Embeddings e (N, D) of events packed by ``cu_seqlens``; candidates of row i are the other
valid hits of its event, positives the candidates with i's label (label 0 = noise: never
positive). With s_ij = e_i . e_j / tau the FORWARD kernel computes per row, in one pass over
the key blocks of the row's event only (work O(sum n_e^2), never an (N, N) object):

    lse_i    = logsumexp_{j in cand(i)} s_ij     (online, fp32; -inf without candidates)
    possum_i = sum_{j in pos(i)} e_i . e_j       (raw dots; 0 for noise / invalid rows)
    npos_i   = |pos(i)|

The loss itself (mean over anchors, npos > 0, of lse - possum / (tau npos)) is O(N) torch
(``supcon_loss``), so any function of the row statistics can be differentiated.

BACKWARD. Given a = dL/dlse / tau and b = dL/dpossum per row,

    dL/de_i = sum_j G_ij e_j,   G_ij = a_i p_ij + a_j p_ji + (b_i + b_j) pos_ij,
    p_ij = exp(s_ij - lse_i),

because s, cand and pos are symmetric: pair (i, j) reaches e_i through row i's softmax AND
through row j's. Flash-attention's backward needs a second pass over key tiles (dK/dV) or
atomic adds, since dK_j sums over queries i quantities only row i knows (dO_i, delta_i).
Here the column term a_j p_ji needs only per-key scalars (lse_j, a_j, b_j) stored by the
forward, so ONE kernel over row tiles gives the full gradient of its own rows: no atomics
(deterministic), each score block recomputed once, two exponentials per pair. Rejected:
(1) a separate key-tile pass: the same work twice (scores recomputed and keys reloaded);
(2) upper-triangle tiles with atomic adds into dE_j: half the score products, but every
(row tile, key tile) pair issues BLOCK_N x D fp32 atomics (~1e9 at one 65 k-hit event) and
the result depends on their order.

Precision: fp32 accumulation and statistics; fp32/bf16/fp16 inputs. fp32 products follow
``torch.get_float32_matmul_precision()``: "highest" -> 3xTF32 (about fp32 accuracy on the
tensor cores), else TF32; ``precision="ieee"`` forces plain fp32 FMAs. bf16/fp16 inputs:
products in that dtype, the backward's G rounded to it for the G @ E product (as dS in
flash attention). Embedding dims 1..128 (padded to a power of two >= 16 with masks).

Row tiles never cross events: grid (ceil(max_seqlen / BLOCK_M), events); a program visits
the keys before its tile and after it in whole unmasked blocks, and masks only the blocks
holding its own rows (the diagonal j == i) and the event's last partial block.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from trackformers.kernels.ops import interpreting

LOG2E = 1.4426950408889634
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_DIM = 128
PRECISIONS = ("auto", "ieee", "tf32", "tf32x3")

# Tile sizes (BLOCK_M must be a multiple of BLOCK_N); benchmarks/supcon_kernel.py sweeps them.
# Compiled for sm_90 (triton 3.9, no GPU here), D = 32: 64 x 32 tiles need 91-158 registers
# in the forward and 128-202 in the backward, no spills; 64 x 64 reach 192-255.
BLOCK_M = 64
BLOCK_N = 32
NUM_WARPS = 4
NUM_STAGES = 3


@triton.jit
def _load_rows(E, offs, ok, D: tl.constexpr, DP: tl.constexpr, MASKED: tl.constexpr):
    """(len(offs), DP) rows of E (N, D); zero beyond D and, if MASKED, outside ``ok``."""
    offs_d = tl.arange(0, DP)
    ptr = E + offs.to(tl.int64)[:, None] * D + offs_d[None, :]
    if MASKED:
        return tl.load(ptr, mask=ok[:, None] & (offs_d < D)[None, :], other=0.0)
    if DP == D:
        return tl.load(ptr)
    return tl.load(ptr, mask=(offs_d < D)[None, :], other=0.0)


@triton.jit
def _load_keys(
    offs_m,
    offs_n,
    ke,
    E,
    LAB,
    VAL,
    D: tl.constexpr,
    DP: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_INVALID: tl.constexpr,
):
    """Keys offs_n: rows (BN, DP), labels (BN,), in-event mask (BN,) and candidate mask
    (BM, BN) or (1, BN): valid keys, inside the event and j != i (the last two if MASKED)."""
    inb = offs_n < ke
    k = _load_rows(E, offs_n, inb, D, DP, MASKED)
    if MASKED:
        lab = tl.load(LAB + offs_n, mask=inb, other=0)
        ok = inb
        if HAS_INVALID:
            ok = ok & (tl.load(VAL + offs_n, mask=inb, other=0) != 0)
        cand = ok[None, :] & (offs_n[None, :] != offs_m[:, None])
    else:
        lab = tl.load(LAB + offs_n)
        if HAS_INVALID:
            cand = (tl.load(VAL + offs_n) != 0)[None, :]
        else:
            cand = inb[None, :]  # all True (unused)
    return k, lab, inb, cand


@triton.jit
def _fwd_block(
    m_i,
    l_i,
    ps,
    npos,
    q,
    lab_i,
    offs_m,
    j0,
    ke,
    E,
    LAB,
    VAL,
    scale2,
    D: tl.constexpr,
    DP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_INVALID: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online log-sum-exp and positive sums of the rows with the keys [j0, j0 + BLOCK_N)."""
    offs_n = j0 + tl.arange(0, BLOCK_N)
    k, lab_j, inb, cand = _load_keys(offs_m, offs_n, ke, E, LAB, VAL, D, DP, MASKED, HAS_INVALID)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BM, BN) raw dots, fp32
    same = lab_j[None, :] == lab_i[:, None]  # (BM, BN)
    if MASKED or HAS_INVALID:
        same = same & cand
        s_c = tl.where(cand, s, float("-inf"))
    else:
        s_c = s
    m_new = tl.maximum(m_i, tl.max(s_c, 1) * scale2)  # log2 units
    p = tl.math.exp2(s_c * scale2 - m_new[:, None])
    l_i = l_i * tl.math.exp2(m_i - m_new) + tl.sum(p, 1)
    ps += tl.sum(tl.where(same, s, 0.0), 1)
    npos += tl.sum(same.to(tl.float32), 1)
    return m_new, l_i, ps, npos


@triton.jit(do_not_specialize=["N"])
def supcon_fwd_kernel(
    E,
    LAB,
    VAL,
    CU,
    STATS,
    N,
    scale2,
    D: tl.constexpr,
    DP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_INVALID: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (row tile, event); STATS (3, N) float32 = lse, possum, npos."""
    ks = tl.load(CU + tl.program_id(1))
    ke = tl.load(CU + tl.program_id(1) + 1)
    rs = ks + tl.program_id(0) * BLOCK_M
    if rs < ke:
        offs_m = rs + tl.arange(0, BLOCK_M)  # (BM,) rows
        mrow = offs_m < ke
        q = _load_rows(E, offs_m, mrow, D, DP, True)  # (BM, DP)
        lab_i = tl.load(LAB + offs_m, mask=mrow, other=0)
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        ps = tl.zeros([BLOCK_M], dtype=tl.float32)
        npos = tl.zeros([BLOCK_M], dtype=tl.float32)
        d_end = tl.minimum(rs + BLOCK_M, ke)  # blocks [rs, d_end) hold the diagonal
        f_end = d_end + ((ke - d_end) // BLOCK_N) * BLOCK_N  # whole blocks after the tile
        for j0 in range(ks, rs, BLOCK_N):
            m_i, l_i, ps, npos = _fwd_block(
                m_i,
                l_i,
                ps,
                npos,
                q,
                lab_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                scale2,
                D,
                DP,
                BLOCK_N,
                False,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(rs, d_end, BLOCK_N):
            m_i, l_i, ps, npos = _fwd_block(
                m_i,
                l_i,
                ps,
                npos,
                q,
                lab_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                scale2,
                D,
                DP,
                BLOCK_N,
                True,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(d_end, f_end, BLOCK_N):
            m_i, l_i, ps, npos = _fwd_block(
                m_i,
                l_i,
                ps,
                npos,
                q,
                lab_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                scale2,
                D,
                DP,
                BLOCK_N,
                False,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(f_end, ke, BLOCK_N):  # the event's last partial block
            m_i, l_i, ps, npos = _fwd_block(
                m_i,
                l_i,
                ps,
                npos,
                q,
                lab_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                scale2,
                D,
                DP,
                BLOCK_N,
                True,
                HAS_INVALID,
                PRECISION,
            )
        has = l_i > 0.0
        keep = lab_i != 0
        if HAS_INVALID:
            ok_i = tl.load(VAL + offs_m, mask=mrow, other=0) != 0
            has = has & ok_i
            keep = keep & ok_i
        lse = tl.where(
            has, (m_i + tl.math.log2(tl.where(has, l_i, 1.0))) / 1.4426950408889634, float("-inf")
        )
        tl.store(STATS + offs_m, lse, mask=mrow)
        tl.store(STATS + N + offs_m, tl.where(keep, ps, 0.0), mask=mrow)
        tl.store(STATS + 2 * N + offs_m, tl.where(keep, npos, 0.0), mask=mrow)


@triton.jit
def _bwd_block(
    acc,
    q,
    lab_i,
    l2_i,
    a_i,
    b_i,
    ok_i,
    offs_m,
    j0,
    ke,
    E,
    LAB,
    VAL,
    ROW,
    N,
    scale2,
    D: tl.constexpr,
    DP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_INVALID: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """acc += G[rows, keys] @ E[keys] for the keys [j0, j0 + BLOCK_N) (module docstring)."""
    offs_n = j0 + tl.arange(0, BLOCK_N)
    k, lab_j, inb, cand = _load_keys(offs_m, offs_n, ke, E, LAB, VAL, D, DP, MASKED, HAS_INVALID)
    if MASKED:
        l2_j = tl.load(ROW + offs_n, mask=inb, other=float("inf"))
        a_j = tl.load(ROW + N + offs_n, mask=inb, other=0.0)
        b_j = tl.load(ROW + 2 * N + offs_n, mask=inb, other=0.0)
    else:
        l2_j = tl.load(ROW + offs_n)
        a_j = tl.load(ROW + N + offs_n)
        b_j = tl.load(ROW + 2 * N + offs_n)
    s2 = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale2  # (BM, BN) log2 units
    g = a_i[:, None] * tl.math.exp2(s2 - l2_i[:, None]) + a_j[None, :] * tl.math.exp2(
        s2 - l2_j[None, :]
    )
    g += tl.where(lab_j[None, :] == lab_i[:, None], b_i[:, None] + b_j[None, :], 0.0)
    if MASKED or HAS_INVALID:
        if HAS_INVALID:
            cand = cand & ok_i[:, None]
        g = tl.where(cand, g, 0.0)
    return tl.dot(g.to(k.dtype), k, acc, input_precision=PRECISION)  # (BM, DP)


@triton.jit(do_not_specialize=["N"])
def supcon_bwd_kernel(
    E,
    LAB,
    VAL,
    CU,
    ROW,
    DE,
    N,
    scale2,
    D: tl.constexpr,
    DP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_INVALID: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program per (row tile, event); ROW (3, N) float32 = lse (log2 units, +inf without
    candidates), a, b; DE (N, D) float32 = dL/de of the program's rows."""
    ks = tl.load(CU + tl.program_id(1))
    ke = tl.load(CU + tl.program_id(1) + 1)
    rs = ks + tl.program_id(0) * BLOCK_M
    if rs < ke:
        offs_m = rs + tl.arange(0, BLOCK_M)
        mrow = offs_m < ke
        q = _load_rows(E, offs_m, mrow, D, DP, True)
        lab_i = tl.load(LAB + offs_m, mask=mrow, other=0)
        l2_i = tl.load(ROW + offs_m, mask=mrow, other=float("inf"))
        a_i = tl.load(ROW + N + offs_m, mask=mrow, other=0.0)
        b_i = tl.load(ROW + 2 * N + offs_m, mask=mrow, other=0.0)
        if HAS_INVALID:
            ok_i = tl.load(VAL + offs_m, mask=mrow, other=0) != 0
        else:
            ok_i = mrow
        acc = tl.zeros([BLOCK_M, DP], dtype=tl.float32)
        d_end = tl.minimum(rs + BLOCK_M, ke)
        f_end = d_end + ((ke - d_end) // BLOCK_N) * BLOCK_N
        for j0 in range(ks, rs, BLOCK_N):
            acc = _bwd_block(
                acc,
                q,
                lab_i,
                l2_i,
                a_i,
                b_i,
                ok_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                ROW,
                N,
                scale2,
                D,
                DP,
                BLOCK_N,
                False,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(rs, d_end, BLOCK_N):
            acc = _bwd_block(
                acc,
                q,
                lab_i,
                l2_i,
                a_i,
                b_i,
                ok_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                ROW,
                N,
                scale2,
                D,
                DP,
                BLOCK_N,
                True,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(d_end, f_end, BLOCK_N):
            acc = _bwd_block(
                acc,
                q,
                lab_i,
                l2_i,
                a_i,
                b_i,
                ok_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                ROW,
                N,
                scale2,
                D,
                DP,
                BLOCK_N,
                False,
                HAS_INVALID,
                PRECISION,
            )
        for j0 in range(f_end, ke, BLOCK_N):
            acc = _bwd_block(
                acc,
                q,
                lab_i,
                l2_i,
                a_i,
                b_i,
                ok_i,
                offs_m,
                j0,
                ke,
                E,
                LAB,
                VAL,
                ROW,
                N,
                scale2,
                D,
                DP,
                BLOCK_N,
                True,
                HAS_INVALID,
                PRECISION,
            )
        offs_d = tl.arange(0, DP)
        ptr = DE + offs_m.to(tl.int64)[:, None] * D + offs_d[None, :]
        tl.store(ptr, acc, mask=mrow[:, None] & (offs_d < D)[None, :])


def _precision(dtype: torch.dtype, precision: str) -> str:
    """tl.dot input precision: only fp32 operands have a choice (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"supcon kernel: precision={precision!r} is not one of {PRECISIONS}")
    if dtype != torch.float32:
        return "tf32"  # ignored for 16-bit operands
    if precision == "auto":
        return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return precision


def dense_labels(labels: Tensor) -> Tensor:
    """(N,) int32 labels, equal exactly where ``labels`` are equal and 0 exactly where they are 0.

    Particle ids are 64-bit; int32 halves the kernels' per-pair label compare and the registers
    of the broadcast key labels (the int64 forward spilled at 64 x 64 tiles on sm_90). One sort,
    no device sync.

    Args:
        labels: (N,) integer labels (particle ids).
    """
    ordered, order = torch.sort(labels)  # (N,)
    new = torch.ones_like(ordered, dtype=torch.int32)
    new[1:] = (ordered[1:] != ordered[:-1]).to(torch.int32)
    rank = torch.cumsum(new, 0, dtype=torch.int32)  # (N,) 1.. in sorted order
    dense = torch.empty_like(rank).scatter_(0, order, rank)  # (N,) back in input order
    return torch.where(labels == 0, 0, dense)


def _check(emb: Tensor, labels: Tensor, valid: Tensor | None, cu_seqlens: Tensor) -> None:
    if emb.ndim != 2 or not 1 <= emb.shape[1] <= MAX_DIM:
        raise ValueError(
            f"supcon kernel: emb must be (N, D) with 1 <= D <= {MAX_DIM}, got {tuple(emb.shape)}"
        )
    if emb.dtype not in DTYPES:
        raise ValueError(f"supcon kernel: emb dtype must be one of {DTYPES}, got {emb.dtype}")
    n = emb.shape[0]
    if labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"supcon kernel: labels must be int32 or int64, got {labels.dtype}")
    if labels.shape != (n,) or (valid is not None and valid.shape != (n,)):
        raise ValueError(
            f"supcon kernel: labels {tuple(labels.shape)} and valid "
            f"{None if valid is None else tuple(valid.shape)} must be ({n},)"
        )
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"supcon kernel: cu_seqlens must be (B + 1,), got {cu_seqlens.shape}")
    if emb.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"supcon kernel runs on CUDA (got device {emb.device}); on CPU only under "
            "TRITON_INTERPRET=1 (tests); use the tiled loss on CPU"
        )


def _launch_args(emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision):
    n, d = emb.shape
    events = cu_seqlens.numel() - 1
    if BLOCK_M % BLOCK_N:
        raise ValueError(f"supcon kernel: BLOCK_M={BLOCK_M} must be a multiple of BLOCK_N")
    grid = (max(1, triton.cdiv(int(max_seqlen), BLOCK_M)), events)
    val = labels if valid is None else valid  # a placeholder pointer when all are valid
    flags = dict(
        D=d,
        DP=max(16, triton.next_power_of_2(d)),
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        HAS_INVALID=valid is not None,
        PRECISION=_precision(emb.dtype, precision),
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return grid, val, n, LOG2E / float(temperature), flags


def supcon_forward(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    cu_seqlens: Tensor,
    max_seqlen: int,
    temperature: float,
    precision: str = "auto",
    out: Tensor | None = None,
) -> Tensor:
    """(3, N) float32 row statistics lse, possum, npos (module docstring).

    Args:
        emb: (N, D) contiguous fp32/bf16/fp16 embeddings (normalise them beforehand).
        labels: (N,) int32 (``dense_labels``; int64 works, slower) contiguous, 0 = noise.
        valid: (N,) int8 contiguous, 0 = hit takes no part at all; None = all valid.
        cu_seqlens: (B + 1,) int32 event boundaries; max_seqlen: the longest event.
        temperature: tau > 0.
        precision: fp32 product precision, "auto" | "ieee" | "tf32" | "tf32x3".
        out: preallocated (3, N) float32 (tests poison it to prove every row is written).

    Returns:
        (3, N) float32.
    """
    _check(emb, labels, valid, cu_seqlens)
    stats = torch.empty((3, emb.shape[0]), dtype=torch.float32, device=emb.device)
    stats = stats if out is None else out
    if emb.shape[0] == 0:
        return stats
    grid, val, n, scale2, flags = _launch_args(
        emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision
    )
    supcon_fwd_kernel[grid](emb, labels, val, cu_seqlens, stats, n, scale2, **flags)
    return stats


def supcon_backward(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    cu_seqlens: Tensor,
    max_seqlen: int,
    temperature: float,
    lse: Tensor,
    a: Tensor,
    b: Tensor,
    precision: str = "auto",
    out: Tensor | None = None,
) -> Tensor:
    """(N, D) float32 dL/de = sum_j (a_i p_ij + a_j p_ji + (b_i + b_j) pos_ij) e_j.

    Args:
        emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision: as the forward's.
        lse: (N,) forward log-sum-exp (natural log, -inf without candidates).
        a: (N,) dL/dlse / tau, 0 where lse is -inf; b: (N,) dL/dpossum, 0 for noise/invalid.
        out: preallocated (N, D) float32.

    Returns:
        (N, D) float32.
    """
    _check(emb, labels, valid, cu_seqlens)
    grad = torch.empty(emb.shape, dtype=torch.float32, device=emb.device) if out is None else out
    if emb.shape[0] == 0:
        return grad
    lse2 = torch.where(lse > float("-inf"), lse * LOG2E, float("inf"))  # (N,) p = 0 when empty
    row = torch.stack([lse2, a.float(), b.float()]).contiguous()  # (3, N)
    grid, val, n, scale2, flags = _launch_args(
        emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision
    )
    supcon_bwd_kernel[grid](emb, labels, val, cu_seqlens, row, grad, n, scale2, **flags)
    return grad


class SupConRowStats(torch.autograd.Function):
    """(lse, possum, npos) of each row, differentiable in lse and possum (npos is a count)."""

    @staticmethod
    def forward(ctx, emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision):
        stats = supcon_forward(emb, labels, valid, cu_seqlens, max_seqlen, temperature, precision)
        ctx.save_for_backward(emb, labels, valid, cu_seqlens, stats)
        ctx.args = (max_seqlen, temperature, precision)
        lse, possum, npos = stats.unbind(0)  # (N,) each
        ctx.mark_non_differentiable(npos)
        return lse, possum, npos

    @staticmethod
    def backward(ctx, d_lse, d_possum, _d_npos):
        emb, labels, valid, cu_seqlens, stats = ctx.saved_tensors
        lse, _, npos = stats.unbind(0)
        max_seqlen, temperature, precision = ctx.args
        zero = torch.zeros_like(lse)
        d_lse = zero if d_lse is None else d_lse
        d_possum = zero if d_possum is None else d_possum
        a = torch.where(lse > float("-inf"), d_lse / temperature, 0.0)  # (N,)
        b = torch.where(npos > 0, d_possum, 0.0)  # (N,) possum of rows without positives is 0
        grad = supcon_backward(
            emb, labels, valid, cu_seqlens, max_seqlen, temperature, lse, a, b, precision
        )
        return grad.to(emb.dtype), None, None, None, None, None, None


def supcon_loss(
    emb: Tensor,
    labels: Tensor,
    cu_seqlens: Tensor,
    temperature: float,
    valid: Tensor | None = None,
    max_seqlen: int | None = None,
    precision: str = "auto",
) -> Tensor:
    """Exact all-pairs SupCon loss of packed events by the fused kernels (autograd).

    L = mean over anchors (rows with >= 1 positive) of lse_i - possum_i / (tau npos_i).

    Args:
        emb: (N, D) fp32/bf16/fp16 embeddings, normalised by the caller (in torch autograd).
        labels: (N,) integer particle labels, 0 = noise (never anchor nor positive).
        cu_seqlens: (B + 1,) event boundaries.
        temperature: tau > 0.
        valid: (N,) bool, hits that take part at all (None: all; noise="ignore" passes
            labels != 0).
        max_seqlen: longest event (None: computed, one device sync).
        precision: fp32 product precision (see the module docstring).

    Returns:
        0-dim float32 loss; 0 (graph kept) without anchors.
    """
    if isinstance(temperature, bool) or not float(temperature) > 0 or math.isinf(temperature):
        raise ValueError(f"supcon kernel: temperature must be > 0, got {temperature!r}")
    cu = cu_seqlens.to(device=emb.device, dtype=torch.int32).contiguous()
    if max_seqlen is None:
        max_seqlen = int(cu.diff().max()) if cu.numel() > 1 else 0
    val = None if valid is None else valid.to(device=emb.device, dtype=torch.int8).contiguous()
    lse, possum, npos = SupConRowStats.apply(
        emb.contiguous(),
        dense_labels(labels.to(emb.device)),
        val,
        cu,
        int(max_seqlen),
        float(temperature),
        precision,
    )
    anchor = npos > 0  # (N,)
    li = torch.where(anchor, lse - possum / (temperature * npos.clamp(min=1.0)), 0.0)  # (N,)
    return li.sum() / anchor.sum().clamp(min=1).to(li.dtype)
