"""Neighbour passes of range DBSCAN: the per-row Triton kernel and the choice between it and
the tiled kernel of ``tiled_ranges``.

Sorted points whose candidate neighbours lie in R contiguous ranges ``[lo, hi)`` of sorted
positions (see ``range_dbscan``): the per-row kernel walks the ranges of each point one
candidate at a time (right for the grid ranges of exact DBSCAN, whose rows have different
cells); wide ranges shared by consecutive rows (plan ranges) go through the tiled kernel.
Modes: 0 counts the neighbours within eps, 1 takes the minimum flagged label, 2 hooks
(``triton_rows``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from trackformers.cluster.tiled_ranges import tile_neighbours
from trackformers.cluster.triton_rows import finish_rows, list_rows, load_rows, start_rows

BLOCK = 64  # rows per program of the per-row kernel


@triton.jit
def _neighbour_kernel(
    X,
    LO,
    HI,
    ROWF,
    COLF,
    LAB,
    OUT,
    INV,
    NBR,
    n,
    R,
    K,
    eps2,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
    LIST: tl.constexpr,
):
    """Per sorted row i with ROWF[i] != 0, over candidates j in its R ranges with
    ||X_i - X_j||^2 <= eps2 and COLF[j] != 0: MODE 0 counts them, MODE 1 takes m = min
    LAB[j], MODE 2 (hook) atomically lowers OUT at i and at i's root INV[LAB[i]] to m.
    LIST (MODE 0): also store the first K such j (i itself included) in NBR (N, K)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok, active, xi = load_rows(X, ROWF, i, n, D, BLOCK_D)
    dd = tl.arange(0, BLOCK_D)
    dmask = dd < D
    acc = start_rows(MODE, BLOCK)
    for r in range(0, R):
        lo = tl.load(LO + i * R + r, mask=active, other=0)
        hi = tl.load(HI + i * R + r, mask=active, other=0)
        length = tl.where(active, hi - lo, 0)
        longest = tl.max(length, 0)
        for t in range(0, longest):
            m = t < length
            j = lo + t
            xj = tl.load(
                X + j[:, None] * D + dd[None, :], mask=m[:, None] & dmask[None, :], other=0.0
            )
            diff = xi - xj
            near = m & (tl.sum(diff * diff, 1) <= eps2)
            if MODE == 0:  # only flagged columns count (hits a filter dropped do not)
                near = near & (tl.load(COLF + j, mask=near, other=0) != 0)
                if LIST:
                    list_rows(NBR, K, i, acc, j, near)  # slot = the running count
                acc += near.to(tl.int32)
            else:
                fj = tl.load(COLF + j, mask=near, other=0)
                lj = tl.load(LAB + j, mask=near & (fj != 0), other=2147483647)
                acc = tl.minimum(acc, lj)
    finish_rows(OUT, LAB, INV, i, ok, active, acc, MODE)


def row_neighbours(
    xs, lo, hi, rowf, colf, lab, eps: float, mode: int, out=None, inv=None, nbr=None
):
    """(N,) int32: neighbour count (mode 0) or min flagged label (mode 1) per sorted row;
    mode 2 lowers ``out`` in place (hook, see the kernel). nbr (N, K) int32 (mode 0 only):
    filled with each row's first K neighbours (see ``nbr_list``).

    Args:
        xs: (N, d) float32 sorted points.
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        rowf: (N,) row flags: the rows computed.
        colf: (N,) column flags: the neighbours taken.
        lab: (N,) int32 labels.
        eps: radius.
        mode: 0 (count), 1 (minimum) or 2 (hook).
        out: (N,) output (mode 2: lowered in place).
        inv: (N,) root look-up of the hook (None: ``lab``).
        nbr: (N, K) neighbour table to fill (mode 0), or None.
    """
    n, d = xs.shape
    if out is None:
        out = torch.empty(n, dtype=torch.int32, device=xs.device)
    if n == 0:
        return out
    _neighbour_kernel[(triton.cdiv(n, BLOCK),)](
        xs,
        lo,
        hi,
        rowf,
        colf,
        lab,
        out,
        lab if inv is None else inv,
        out if nbr is None else nbr,
        n,
        lo.shape[1],
        0 if nbr is None else nbr.shape[1],
        float(eps) ** 2,
        D=d,
        BLOCK_D=triton.next_power_of_2(d),
        MODE=mode,
        BLOCK=BLOCK,
        LIST=nbr is not None,
    )
    return out


def neighbour_pass(
    xs, lo, hi, unions, rowf, colf, lab, eps: float, mode: int, out=None, inv=None, nbr=None
):
    """A neighbour pass by the per-row kernel (unions None) or the tiled one; nbr (N, K):
    the count pass (mode 0) also fills the neighbour table.

    Args:
        xs: (N, d) float32 sorted points.
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        unions: ``tiled_ranges.block_unions`` of the rows, or None (per-row kernel).
        rowf: (N,) row flags.
        colf: (N,) column flags.
        lab: (N,) int32 labels.
        eps: radius.
        mode: 0 (count), 1 (minimum) or 2 (hook).
        out: (N,) output (mode 2: lowered in place).
        inv: (N,) root look-up of the hook.
        nbr: (N, K) neighbour table to fill (mode 0), or None.

    Returns:
        (N,) int32 result of the pass.
    """
    if nbr is not None and mode != 0:
        raise ValueError(f"the neighbour table is filled by the count pass (mode 0), got {mode}")
    if unions is None:
        return row_neighbours(xs, lo, hi, rowf, colf, lab, eps, mode, out, inv, nbr)
    return tile_neighbours(xs, lo, hi, *unions, rowf, colf, lab, eps, mode, out, inv, nbr)
