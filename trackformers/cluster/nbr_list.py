"""Fixed-capacity eps-neighbour lists: range DBSCAN's component rounds and border rule
without re-scanning the candidate ranges.

The eps-graph of track embeddings is tiny (1.5-1.9 pairs per hit) next to the candidates a
plan's ranges hold (hundreds per hit), and every hook round and the border pass of
``range_dbscan`` would otherwise scan all candidates again. So the count pass (MODE 0 of
``passes._neighbour_kernel`` / ``tiled_ranges._tile_kernel`` with ``LIST``) also
stores each sorted row's neighbours within eps into a (N, K) int32 table ``nbr``: sorted
positions j, the row itself INCLUDED (when it lies in its own ranges, as it does for grid
and plan ranges), in order of discovery, slot = the row's running count, slots >= K not
written. ``count`` stays exact; rows with count > K are "overflow rows".

A later pass (MODE 1: min LAB[j] over neighbours with COLF[j] != 0; MODE 2: the hook, which
atomically lowers OUT at i and at i's root) then runs as

- ``_list_kernel`` over the table for rows with ROWF[i] != 0 and count <= K (their list is
  complete: the same (i, j) pairs as the kernel's own test, evaluated once by that kernel),
- the original range kernel for the overflow rows only (ROWF & overflow); the tiled kernel
  gets ``block_unions`` of the valid overflow rows, built once, so blocks without overflow
  rows have empty unions and do nothing.

Exactness: both passes are per-row min-reductions over a row's neighbour set; every row is
in exactly one of the two row sets, and a row's neighbour set in the range kernel does not
depend on which other rows are active (the per-row kernel walks the row's own ranges; in
the tiled kernel the unions of the active rows contain each active row's ranges and each
(row, key) pair is seen once). MODE 2 writes by atomic min (order-free); MODE 1 results are
combined by an elementwise min, the other pass giving "no label" for the row. So the labels
equal those of the full range-kernel passes, bit for bit. Everything is fixed-shape and
sync-free (CUDA-graph capturable); memory O(N K).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from trackformers.cluster.passes import neighbour_pass
from trackformers.cluster.tiled_ranges import block_unions
from trackformers.cluster.triton_rows import finish_rows

LIST_BLOCK = 128  # rows per program of the list kernel


@triton.jit
def _list_kernel(
    NBR,
    CNT,
    ROWF,
    COLF,
    LAB,
    OUT,
    INV,
    n,
    K,
    KP: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Rows i with ROWF[i] != 0 and CNT[i] <= K, over the listed neighbours j = NBR[i, :CNT[i]]:
    MODE 1 stores m = min LAB[j] over COLF[j] != 0 at i ("no label" for other rows), MODE 2
    atomically lowers OUT at i and at i's root INV[LAB[i]] to m (as the range kernels)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    cnt = tl.load(CNT + i, mask=ok, other=0)
    active = ok & (tl.load(ROWF + i, mask=ok, other=0) != 0) & (cnt <= K)
    s = tl.arange(0, KP)
    m = active[:, None] & (s[None, :] < cnt[:, None])  # (BLOCK, KP), slots < cnt <= K
    j = tl.load(NBR + i.to(tl.int64)[:, None] * K + s[None, :], mask=m, other=0)
    fj = tl.load(COLF + j, mask=m, other=0)
    lj = tl.load(LAB + j, mask=m & (fj != 0), other=2147483647)
    acc = tl.min(lj, 1)  # (BLOCK,)
    finish_rows(OUT, LAB, INV, i, ok, active, acc, MODE)


def list_neighbours(
    nbr: Tensor, count: Tensor, rowf, colf, lab, mode: int, out=None, inv=None
) -> Tensor:
    """(N,) int32 min flagged label (mode 1) of the rows whose list is complete; mode 2
    lowers ``out`` in place (hook). nbr (N, K) int32, count (N,) int32 of the count pass.

    Args:
        nbr: (N, K) int32 neighbour table.
        count: (N,) int32 neighbour counts.
        rowf: (N,) row flags: the rows computed.
        colf: (N,) column flags: the neighbours taken.
        lab: (N,) int32 labels.
        mode: 1 (minimum) or 2 (hook).
        out: (N,) labels lowered in place (mode 2).
        inv: (N,) root look-up of the hook (None: ``lab``).
    """
    if mode not in (1, 2):
        raise ValueError(f"list passes take mode 1 or 2, got {mode}")
    n, k = nbr.shape
    if out is None:
        out = torch.empty(n, dtype=torch.int32, device=nbr.device)
    if n == 0:
        return out
    _list_kernel[(triton.cdiv(n, LIST_BLOCK),)](
        nbr,
        count,
        rowf,
        colf,
        lab,
        out,
        lab if inv is None else inv,
        n,
        k,
        KP=max(2, triton.next_power_of_2(k)),
        MODE=mode,
        BLOCK=LIST_BLOCK,
    )
    return out


@dataclass
class NeighbourList:
    """The count pass's neighbour table and what the passes over it need."""

    nbr: Tensor  # (N, K) int32 sorted positions; slots >= min(count, K) are not set
    count: Tensor  # (N,) int32 exact neighbour count, the row itself included
    over: Tensor  # (N,) int8: count > K (overflow rows)
    unions: tuple[Tensor, Tensor] | None  # tiled: block_unions of the valid overflow rows
    core: Tensor  # (N,) int8 core flags of the state
    core_over: Tensor  # (N,) int8 core & overflow (the rounds' overflow rows)

    @classmethod
    def build(
        cls,
        nbr: Tensor,
        count: Tensor,
        lo: Tensor,
        hi: Tensor,
        valid: Tensor,
        core: Tensor,
        tiled: bool,
    ) -> NeighbourList:
        """From the count pass: valid, core (N,) int8 sorted flags; no host sync.

        Args:
            nbr: (N, K) int32 table of the count pass.
            count: (N,) int32 neighbour counts.
            lo: (N, R) range starts.
            hi: (N, R) range ends.
            valid: (N,) int8 valid flags (sorted order).
            core: (N,) int8 core flags.
            tiled: the range kernel of the overflow rows is the tiled one.

        Returns:
            The neighbour list.
        """
        over = (count > nbr.shape[1]).to(torch.int8)  # (N,)
        unions = None
        if tiled:
            unions = block_unions(lo, hi, (valid != 0) & (over != 0))  # (blocks, 3R) each
        return cls(nbr, count, over, unions, core, core * over)

    def neighbours(self, st, rowf, colf, lab, mode: int, out=None, inv=None) -> Tensor:
        """A MODE 1 / 2 pass of ``RangeState`` st: the list kernel for complete rows and the
        range kernel for the overflow rows (see the module docstring).

        Args:
            st: the run's RangeState.
            rowf: (N,) row flags.
            colf: (N,) column flags.
            lab: (N,) int32 labels.
            mode: 1 (minimum) or 2 (hook).
            out: (N,) labels lowered in place (mode 2).
            inv: (N,) root look-up of the hook.

        Returns:
            (N,) int32 result of the pass.
        """
        rover = self.core_over if rowf is self.core else rowf * self.over  # (N,) int8
        if mode == 2:
            list_neighbours(self.nbr, self.count, rowf, colf, lab, 2, out, inv)
            return neighbour_pass(
                st.xs, st.lo, st.hi, self.unions, rover, colf, lab, st.eps, 2, out, inv
            )
        m = list_neighbours(self.nbr, self.count, rowf, colf, lab, 1)  # (N,)
        mo = neighbour_pass(st.xs, st.lo, st.hi, self.unions, rover, colf, lab, st.eps, 1)  # (N,)
        return torch.minimum(m, mo)
