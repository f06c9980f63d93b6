"""Triton helpers shared by the neighbour kernels of range DBSCAN (the per-row kernel of
``passes``, the tiled one of ``tiled_ranges`` and the list kernel of ``nbr_list``): loading a
block of rows, starting and finishing a row's accumulator, storing a found neighbour.

A neighbour pass has three modes: 0 counts the neighbours within eps of each row, 1 takes
the minimum label over flagged neighbours, 2 (hook) lowers the labels of the row and of its
root atomically to that minimum.
"""

import triton
import triton.language as tl


@triton.jit
def load_rows(X, ROWF, i, n, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """ok (i < n), active (ok and ROWF[i] != 0) and the (BLOCK, BLOCK_D) coordinates of rows
    i of a neighbour pass; inactive rows (e.g. all but the overflow rows of a list pass) read
    no coordinates (zeros).

    Args:
        X: (n, D) coordinates.
        ROWF: (n,) row flags.
        i: (BLOCK,) row indices.
        n: rows.
        D: dimensions.
        BLOCK_D: D rounded up to a power of two.
    """
    ok = i < n
    dd = tl.arange(0, BLOCK_D)
    active = ok & (tl.load(ROWF + i, mask=ok, other=0) != 0)
    xi = tl.load(
        X + i[:, None] * D + dd[None, :], mask=active[:, None] & (dd < D)[None, :], other=0.0
    )
    return ok, active, xi


@triton.jit
def start_rows(MODE: tl.constexpr, BLOCK: tl.constexpr):
    """The (BLOCK,) int32 accumulator of a neighbour pass: 0 to count (MODE 0), "no label"
    to take a minimum (MODES 1 and 2).

    Args:
        MODE: 0, 1 or 2.
        BLOCK: rows per program.
    """
    if MODE == 0:
        acc = tl.zeros((BLOCK,), dtype=tl.int32)
    else:
        acc = tl.full((BLOCK,), 2147483647, dtype=tl.int32)
    return acc


@triton.jit
def finish_rows(OUT, LAB, INV, i, ok, active, acc, MODE: tl.constexpr):
    """Write a neighbour pass's result for rows i: MODE 2 (hook) atomically lowers OUT at i
    and at i's root INV[LAB[i]] to acc; MODES 0 and 1 store acc at i.

    Args:
        OUT: (n,) output.
        LAB: (n,) labels.
        INV: (n,) root look-up.
        i: (BLOCK,) row indices.
        ok: (BLOCK,) rows inside the range.
        active: (BLOCK,) flagged rows.
        acc: (BLOCK,) the pass's accumulator.
        MODE: 0, 1 or 2.
    """
    if MODE == 2:
        own = tl.load(LAB + i, mask=active, other=0)
        root = tl.load(INV + own, mask=active, other=0)
        tl.atomic_min(OUT + root, acc, mask=active)
        tl.atomic_min(OUT + i, acc, mask=active)
    else:
        tl.store(OUT + i, acc, mask=ok)


@triton.jit
def list_rows(NBR, K, i, slot, j, near):
    """Store neighbour j of rows i at ``slot`` of the (N, K) int32 table NBR where near and
    slot < K (broadcast shapes: per-row (BLOCK,) or tiled (BM, BN)).

    Args:
        NBR: (N, K) int32 table.
        K: slots per row.
        i: row indices.
        slot: slot of each found neighbour.
        j: neighbour indices.
        near: where j is a neighbour of i.
    """
    tl.store(NBR + i.to(tl.int64) * K + slot, j.to(tl.int32), mask=near & (slot < K))
