"""Neighbour passes of range DBSCAN over *plan* ranges as tiles on tensor cores.

Plan ranges (a cluster plan's group neighbourhood, a phi window of +-W with its wrap-around
part, ...; see ``trackformers.attention.plans.row_ranges``) are wide (hundreds to a few
thousand candidates per point) but nearly the same for consecutive sorted rows. So a block
of BM consecutive rows is compared with the UNION of its rows' ranges, BN keys at a time, as
one (BM, D) x (D, BN) matrix product (``tl.dot``, fp32 accuracy through 3 tf32 products on a
GPU) and a per-element mask "key j lies in row i's own range r"; the per-row kernel of
``passes`` walks the candidates of every point one by one instead (right for the grid
ranges of exact DBSCAN, whose rows have different cells).

Unions are taken per block, per range r and per side of the range relative to the row
(before the row / containing it / after it). A phi window's wrap-around part lies before its
row at the event's end and after it at the event's start, so the rows of a block that
straddles two events never make one union spanning both events. Each (row, key) pair is seen
in exactly one union (ranges of a row are disjoint and each has one side), so counts are exact.

Squared distances are ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j (and 0 for i = j, so a point always
counts itself, as in sklearn); the torch path of ``local_dbscan`` computes the same pairs by
differences, which can differ only for pairs within float32 rounding of eps.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from trackformers.cluster.triton_rows import finish_rows, list_rows, load_rows, start_rows

BM = 64  # rows per block (one program)
BN = 64  # keys per tile
SIDES = 3  # union sides per range: before the row, containing it, after it
NO_LABEL = 2**31 - 1


@triton.jit
def _tile_kernel(
    X,
    LO,
    HI,
    ULO,
    UHI,
    ROWF,
    COLF,
    LAB,
    OUT,
    INV,
    NBR,
    n,
    R,
    U,
    K,
    eps2,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MODE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    PREC: tl.constexpr,
    LIST: tl.constexpr,
):
    """Rows i of block b with ROWF[i] != 0, over keys j of the block's unions [ULO, UHI)
    that lie in i's range r of the union's side with ||X_i - X_j||^2 <= eps2 and COLF[j] != 0:
    MODE 0 counts them, MODE 1 takes m = min LAB[j], MODE 2 (hook) atomically lowers OUT
    at i and at i's root INV[LAB[i]] to m (as ``passes._neighbour_kernel``).
    LIST (MODE 0): also store the first K such j (i itself included) in NBR (N, K), slot =
    the row's count before the tile plus the running count within the tile."""
    b = tl.program_id(0)
    i = b * BM + tl.arange(0, BM)
    ok, active, xi = load_rows(X, ROWF, i, n, D, BLOCK_D)
    dd = tl.arange(0, BLOCK_D)
    dmask = dd < D
    sqi = tl.sum(xi * xi, 1)  # (BM,)
    acc = start_rows(MODE, BM)
    for u in range(0, U):
        r = u // 3
        side = u % 3
        a = tl.load(ULO + b * U + u)
        e = tl.load(UHI + b * U + u)
        lo = tl.load(LO + i * R + r, mask=active, other=0)  # (BM,)
        hi = tl.load(HI + i * R + r, mask=active, other=0)
        s = tl.where(lo > i, 2, tl.where(hi <= i, 0, 1))  # the side of i's range r
        mine = active & (s == side) & (hi > lo)  # (BM,)
        for k0 in range(a, e, BN):
            j = k0 + tl.arange(0, BN)  # (BN,)
            jm = j < e
            xj = tl.load(
                X + j[:, None] * D + dd[None, :], mask=jm[:, None] & dmask[None, :], other=0.0
            )
            sqj = tl.sum(xj * xj, 1)  # (BN,)
            dot = tl.dot(xi, tl.trans(xj), input_precision=PREC)  # (BM, BN)
            d2 = sqi[:, None] + sqj[None, :] - 2.0 * dot
            d2 = tl.where(i[:, None] == j[None, :], 0.0, d2)
            inr = (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])
            near = mine[:, None] & jm[None, :] & inr & (d2 <= eps2)  # (BM, BN)
            if MODE == 0:  # only flagged columns count (hits a filter dropped do not)
                fj = tl.load(COLF + j, mask=jm, other=0)
                near = near & (fj != 0)[None, :]
                hits = near.to(tl.int32)  # (BM, BN)
                per_row = tl.sum(hits, 1)  # (BM,)
                if LIST:
                    if tl.max(per_row, 0) > 0:  # most tiles hold no pair within eps
                        slot = acc[:, None] + tl.cumsum(hits, 1) - 1  # (BM, BN)
                        list_rows(NBR, K, i[:, None], slot, j[None, :], near)
                acc += per_row
            else:
                fj = tl.load(COLF + j, mask=jm, other=0)
                lj = tl.load(LAB + j, mask=jm & (fj != 0), other=2147483647)
                cand = tl.where(near & (fj != 0)[None, :], lj[None, :], 2147483647)
                acc = tl.minimum(acc, tl.min(cand, 1))
    finish_rows(OUT, LAB, INV, i, ok, active, acc, MODE)


def block_unions(lo: Tensor, hi: Tensor, active: Tensor, bm: int = BM) -> tuple[Tensor, Tensor]:
    """ulo, uhi (ceil(N / bm), 3 R) int32: per block of bm sorted rows, per range r and side
    (0 before the row, 1 containing it, 2 after it), the smallest lo and largest hi over the
    block's ``active`` (N,) rows whose range r is non-empty and of that side; empty unions are
    [0, 0). No host sync (capturable).

    Args:
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        active: (N,) rows taken into the unions.
        bm: rows per block.
    """
    n, r = lo.shape
    nb = triton.cdiv(max(n, 1), bm)
    pad = nb * bm - n
    rows = torch.arange(n, device=lo.device)[:, None]  # (N, 1)
    side = torch.where(lo > rows, 2, torch.where(hi <= rows, 0, 1))  # (N, R)
    use = (hi > lo) & active[:, None]  # (N, R)
    sides = torch.arange(SIDES, device=lo.device)
    sel = use[:, :, None] & (side[:, :, None] == sides)  # (N, R, 3)
    # "no row" for the minimum: exact in float64, as F.pad passes its value through a double
    # (int64's max would come back as its min and stretch a partial last block to key 0)
    big = 2**62
    ulo = torch.where(sel, lo[:, :, None], big)  # (N, R, 3)
    uhi = torch.where(sel, hi[:, :, None], -1)
    ulo = torch.nn.functional.pad(ulo, (0, 0, 0, 0, 0, pad), value=big).view(nb, bm, r * SIDES)
    uhi = torch.nn.functional.pad(uhi, (0, 0, 0, 0, 0, pad), value=-1).view(nb, bm, r * SIDES)
    ulo, uhi = ulo.amin(1), uhi.amax(1)  # (nb, 3R)
    empty = uhi < 0
    return torch.where(empty, 0, ulo).int(), torch.where(empty, 0, uhi).int()


def _precision(x: Tensor) -> str:
    """fp32 accuracy: three tf32 products on a GPU for float32, exact products otherwise."""
    return "tf32x3" if x.device.type == "cuda" and x.dtype == torch.float32 else "ieee"


def tile_neighbours(
    xs, lo, hi, ulo, uhi, rowf, colf, lab, eps: float, mode: int, out=None, inv=None, nbr=None
) -> Tensor:
    """(N,) int32 neighbour count (mode 0) / min flagged label (mode 1) per sorted row over
    the plan ranges lo, hi (N, R) int64; mode 2 lowers ``out`` in place (hook). xs (N, d)
    float32, contiguous; ulo, uhi from ``block_unions`` with the same BM. nbr (N, K) int32
    (mode 0 only): filled with each row's first K neighbours (see ``nbr_list``).

    Args:
        xs: (N, d) float32 sorted points.
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        ulo: block union starts.
        uhi: block union ends.
        rowf: (N,) row flags.
        colf: (N,) column flags.
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
    _tile_kernel[(triton.cdiv(n, BM),)](
        xs,
        lo,
        hi,
        ulo,
        uhi,
        rowf,
        colf,
        lab,
        out,
        lab if inv is None else inv,
        out if nbr is None else nbr,
        n,
        lo.shape[1],
        ulo.shape[1],
        0 if nbr is None else nbr.shape[1],
        float(eps) ** 2,
        D=d,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
        MODE=mode,
        BM=BM,
        BN=BN,
        PREC=_precision(xs),
        LIST=nbr is not None,
    )
    return out
