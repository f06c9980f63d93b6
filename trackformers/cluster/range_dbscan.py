"""Sync-free DBSCAN on candidate ranges: Triton neighbour passes, fixed shapes throughout.

Points are put in a sorted order in which the candidate neighbours of every point form at most
R contiguous ranges ``[lo, hi)`` of sorted positions:

- grid (exact DBSCAN): points sorted by eps-cell key (see ``gpu_dbscan``), R = 3^(k-1)
  ranges of adjacent cells; every pair within eps is a candidate, so the result is exact.
- plan (``dbscan_plan``): a plan's sorted order and its mask as ranges (``row_ranges``):
  the cluster plan's groups within +-adjacency (R = 1), a phi window +-W with its
  wrap-around part (R = 2); these wide ranges run through the tiled kernel of
  ``tiled_ranges`` (tensor-core distance tiles per block of rows).

One Triton neighbour pass (``passes``: a per-row kernel, or the tiled one of
``tiled_ranges``) walks the ranges of each point and either counts the neighbours within eps
(core test, the point itself included as in sklearn) or takes the minimum label over the
flagged neighbours within eps. Nothing N x N or E-sized is stored (memory O(N), O(N K) with
the neighbour list below), nothing waits for the host: every size is known from the
inputs, so the whole clustering can be captured in a CUDA graph.

Clusters are connected components of the core graph, found by ``rounds`` fixed rounds of
hooking (each core point's root takes the minimum label among the core neighbours) and two
pointer jumps; the fixed point labels every component by its smallest input index, so the
numbering (and the border rule: a border point joins the reachable cluster with the smallest
root) is sklearn's, as in ``gpu_dbscan``. ``rounds`` fixed rounds may stop before the fixed
point; the returned ``pending`` flag (a device bool, no sync) says so and ``finish`` runs the
remaining rounds (with host syncs) so the result is always exact.

Neighbour list (``list_capacity`` K > 0, the default): the count pass also stores each
row's first K eps-neighbours in an (N, K) table, and the rounds and the border rule run over
that table instead of the ranges; only rows with more than K neighbours are scanned again
(``nbr_list``: same labels, memory O(N K)).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from trackformers.attention.plans import row_ranges
from trackformers.cluster.nbr_list import NeighbourList
from trackformers.cluster.passes import neighbour_pass
from trackformers.cluster.tiled_ranges import block_unions

BIG = 2**31 - 1  # "no label" (int32)
# plan ranges through the tiled kernel (default) or the per-row one (TRACKFORMERS_PLAN_KERNEL=rows)
PLAN_TILED = os.environ.get("TRACKFORMERS_PLAN_KERNEL", "tiled") != "rows"
LIST_CAPACITY = 16  # default neighbour-list capacity K of dbscan_ranges (0: no list)


@triton.jit
def _jump_kernel(NEW, INV, CORE, LAB, OUT, FLAG, n, BLOCK: tl.constexpr):
    """OUT = NEW followed three times through itself (pointer jumping) on core rows; FLAG
    is raised when OUT differs from the round's input labels LAB."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    c = ok & (tl.load(CORE + i, mask=ok, other=0) != 0)
    lab = tl.load(NEW + i, mask=ok, other=0)
    for _ in tl.static_range(3):
        pos = tl.load(INV + lab, mask=c, other=0)
        lab = tl.where(c, tl.load(NEW + pos, mask=c, other=0), lab)
    tl.store(OUT + i, lab, mask=ok)
    old = tl.load(LAB + i, mask=ok, other=0)
    tl.atomic_max(FLAG, tl.max((ok & (lab != old)).to(tl.int32), 0))


# ---- candidate ranges ------------------------------------------------------------------------
_BASES: dict[tuple, Tensor] = {}


def device_projection(x: Tensor, k: int) -> Tensor:
    """(N, min(k, d)) grid coordinates: x itself when d <= k, else x times an orthonormal
    (d, k) basis near the top-k principal axes, found on the device without a sync (subspace
    iteration with the 4th power of the covariance, Gram-Schmidt, float64). Any orthonormal
    basis keeps every eps-pair within adjacent cells; a good one only speeds up the search.

    Args:
        x: (N, d) points.
        k: grid dimensions at most.
    """
    n, d = x.shape
    if d <= k:
        return x
    key = (d, k, str(x.device))
    if key not in _BASES:  # fixed start basis, made once (outside any graph capture)
        g = torch.Generator().manual_seed(0)
        _BASES[key] = torch.randn(d, k, generator=g, dtype=torch.float64).to(x.device)
    xc = (x - x.mean(0)).double()  # (N, d)
    c = xc.T @ xc  # (d, d)
    c = c / c.diagonal().sum().clamp_min(1e-300)
    c = c @ c
    c = c @ c  # c^4
    v = _BASES[key]  # (d, k)
    for _ in range(2):  # subspace iteration: c^4 per step, re-orthonormalised
        cols: list[Tensor] = []
        for col in (c @ v).unbind(1):
            for _ in range(2):  # Gram-Schmidt twice against rounding
                for b in cols:
                    col = col - (col @ b) * b
                col = col / col.norm().clamp_min(1e-300)
            cols.append(col)
        v = torch.stack(cols, 1)  # (d, k) orthonormal
    basis = v.to(x.dtype)  # (d, k)
    return x @ basis  # (N, k)


def _combos(k: int, device) -> Tensor:
    """(3^(k-1), k-1) offsets in {-1, 0, 1}, cached per device (no copy inside a graph)."""
    key = (k, str(device))
    if key not in _BASES:
        combos = list(itertools.product((-1, 0, 1), repeat=k - 1))
        _BASES[key] = torch.tensor(combos, dtype=torch.long).reshape(len(combos), k - 1).to(device)
    return _BASES[key]


def grid_ranges(x: Tensor, seq: Tensor, num_events: int, eps: float, max_dims: int = 3):
    """Sort order and candidate ranges of exact DBSCAN, with no host sync.

    Returns order (N,) sorted position -> input row, lo, hi (N, R) int64 ranges of sorted
    positions, and ``overflow`` (device bool): the cell keys did not fit into int64 (then the
    ranges are wrong and the caller must use the eager ``gpu_dbscan``).

    Args:
        x: (N, d) points, packed events.
        seq: (N,) event index of each point.
        num_events: B.
        eps: radius (the grid cell size).
        max_dims: grid dimensions at most.
    """
    p = device_projection(x, max_dims)  # (N, k)
    k = p.shape[1]
    lo, hi = p.amin(0), p.amax(0)  # (k,), (k,)
    scale = torch.maximum(lo.abs().max(), hi.abs().max())
    cell_size = eps * (1 + 1e-4) + 1e-6 * scale  # > eps: absorbs projection rounding
    cell = torch.floor((p - lo) / cell_size).long() + 1  # (N, k) >= 1
    sizes = torch.floor((hi - lo) / cell_size).long() + 4  # (k,) cells per axis incl. padding
    span = torch.flip(torch.cumprod(torch.flip(sizes, [0]), 0), [0])  # (k,) prod sizes[j:]
    strides = torch.cat([span[1:], torch.ones(1, dtype=torch.long, device=x.device)])  # (k,)
    overflow = num_events * span[0].double() > 2.0**62
    key = seq * span[0] + (cell * strides).sum(1)  # (N,)
    order = torch.argsort(key)  # (N,)
    skey = key[order]  # (N,)
    off = (_combos(k, x.device) * strides[:-1]).sum(1)  # (R,) key offsets of adjacent cells
    base = skey[:, None] + off[None, :]  # (N, R)
    start = torch.searchsorted(skey, base - 1)  # (N, R) last axis -1..+1 is contiguous
    end = torch.searchsorted(skey, base + 1, right=True)  # (N, R)
    return order, start, end, overflow


def plan_ranges(plan, adjacency: int | None = None, window: int | None = None):
    """lo, hi (N, R) int64 of sorted rows: the plan's own mask as ``row_ranges`` gives it
    (any kind: a cluster plan's groups within +-adjacency inside the event, R = 1; a phi
    window of +-window positions and its wrap-around part, R = 2; the whole event).
    ``adjacency`` / ``window`` override a cluster / window plan's own setting.

    Args:
        plan: any attention plan.
        adjacency: overrides a cluster plan's.
        window: overrides a window plan's.
    """
    changes: dict = {}
    if adjacency is not None:
        if plan.kind != "cluster":
            raise ValueError(f"adjacency={adjacency} needs a cluster plan, got {plan.kind!r}")
        changes["adjacency"] = int(adjacency)
    if window is not None:
        if plan.kind != "window":
            raise ValueError(f"window={window} needs a window plan, got {plan.kind!r}")
        changes["window"] = int(window)
    if changes:
        plan = dataclasses.replace(plan, **changes)
    if plan.kind == "cluster":  # from group_id alone: static plans of a graph keep no group_ptr
        return _cluster_ranges(plan)
    return row_ranges(plan)


def _cluster_ranges(plan) -> tuple[Tensor, Tensor]:
    """lo, hi (N, 1) int64: the groups within +-adjacency of each row's group, in its event."""
    a = plan.adjacency
    gid = plan.group_id.long()  # (N,) non-decreasing within each event
    n = gid.numel()
    cu = plan.cu_seqlens.long()
    seq = torch.repeat_interleave(
        torch.arange(cu.numel() - 1, device=gid.device), cu.diff(), output_size=n
    )  # (N,)
    key = seq * 2**32 + gid  # (N,) non-decreasing over the batch
    lo = torch.maximum(torch.searchsorted(key, key - a), cu[seq])  # (N,)
    hi = torch.minimum(torch.searchsorted(key, key + a, right=True), cu[seq + 1])  # (N,)
    return lo[:, None], hi[:, None]


# ---- DBSCAN on ranges ------------------------------------------------------------------------
class RangeState:
    """Sorted points, ranges and labels of one DBSCAN run (continued by ``finish``).

    Rounds replace ``lab`` / ``pending`` (never write into the state's tensors), so a
    shallow copy continues independently."""

    def __init__(self, xs, lo, hi, order, inv, valid, core, eps, unions=None, nlist=None):
        self.xs, self.lo, self.hi, self.eps = xs, lo, hi, eps  # (N, d), (N, R), (N, R)
        self.order, self.inv = order, inv  # (N,) int32 sorted -> input, input -> sorted
        self.valid, self.core = valid, core  # (N,) int8 flags per sorted position
        self.unions = unions  # (ulo, uhi) of tiled_ranges.block_unions, or None (per row)
        self.nlist = nlist  # nbr_list.NeighbourList of the count pass, or None (no list)
        self.core_b = core != 0
        self.lab = torch.where(self.core_b, order, BIG)  # (N,) root (input row) per core point
        self.pending = torch.ones((), dtype=torch.bool, device=xs.device)

    def neighbours(self, rowf, colf, lab, mode: int, out=None, inv=None) -> Tensor:
        """One MODE 1 / 2 neighbour pass (see ``passes``): over the neighbour list
        when there is one, else by the state's range kernel.

        Args:
            rowf: (N,) row flags.
            colf: (N,) column flags.
            lab: (N,) int32 labels.
            mode: 1 (minimum) or 2 (hook).
            out: (N,) labels lowered in place (mode 2).
            inv: (N,) root look-up of the hook.

        Returns:
            (N,) int32 result of the pass.
        """
        if self.nlist is not None:
            return self.nlist.neighbours(self, rowf, colf, lab, mode, out, inv)
        return neighbour_pass(
            self.xs, self.lo, self.hi, self.unions, rowf, colf, lab, self.eps, mode, out, inv
        )


def _round(st: RangeState, lab: Tensor) -> tuple[Tensor, Tensor]:
    """One hook (each core point and its root take the min label over the point's core
    neighbours) and three pointer jumps: two kernels. Labels are input rows (int32) of points
    of the same component and never increase, so the fixed point is the component's smallest
    input row. Returns the new labels and a (1,) int32 flag: they changed."""
    n = lab.numel()
    new = lab.clone()
    st.neighbours(st.core, st.core, lab, 2, out=new, inv=st.inv)
    out = torch.empty_like(lab)
    flag = torch.zeros(1, dtype=torch.int32, device=lab.device)
    if n:
        _jump_kernel[(triton.cdiv(n, 1024),)](new, st.inv, st.core, lab, out, flag, n, BLOCK=1024)
    return out, flag


def dbscan_ranges(
    xs,
    lo,
    hi,
    order,
    valid,
    eps: float,
    min_samples: int,
    rounds: int = 4,
    tiled: bool = False,
    list_capacity: int = LIST_CAPACITY,
) -> RangeState:
    """DBSCAN of sorted points xs (N, d) whose candidates lie in ranges lo, hi (N, R).

    order (N,) sorted position -> input row; valid (N,) bool per INPUT row (False: padding,
    never clustered, never a neighbour of valid rows' ranges by construction of the ranges).
    tiled: neighbour passes by ``tiled_ranges`` (wide ranges shared by consecutive rows,
    e.g. plan ranges) instead of the per-row kernel. list_capacity K > 0: the count pass
    also stores up to K eps-neighbours per row and the rounds and the border rule run over
    that list (``nbr_list``, same labels; memory N K int32); 0: every pass scans the ranges.
    Runs ``rounds`` component rounds with no host sync; returns the state for ``finish``
    and ``number_labels``.

    Args:
        xs: (N, d) sorted points.
        lo: (N, R) range starts.
        hi: (N, R) range ends.
        order: (N,) sorted position -> input row.
        valid: (N,) bool per input row.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        rounds: component rounds run here.
        tiled: use the tiled kernel.
        list_capacity: neighbour-list slots per row (0: no list).
    """
    if isinstance(list_capacity, bool) or not isinstance(list_capacity, int) or list_capacity < 0:
        raise ValueError(
            f"list_capacity must be an int >= 0 (0: no neighbour list), got {list_capacity!r}"
        )
    if tiled and xs.is_cuda and xs.dtype == torch.float64:
        # Triton 3.6 does not compile the tiled kernel's float64 tensor-core products on the
        # GPU ("fp64 don't support largeK MMA"); float64 inputs (references, tests) take the
        # per-row kernel, which finds the same pairs
        tiled = False
    n = xs.shape[0]
    dev = xs.device
    inv = torch.empty(n, dtype=torch.int32, device=dev)
    inv[order] = torch.arange(n, dtype=torch.int32, device=dev)  # input row -> sorted position
    vs = valid[order].to(torch.int8)  # (N,) sorted
    xs, lo, hi = xs.contiguous(), lo.contiguous(), hi.contiguous()
    unions = None
    if tiled:
        unions = block_unions(lo, hi, vs != 0)  # (blocks, 3R) each
    nbr = None
    if list_capacity:
        nbr = torch.empty(n, list_capacity, dtype=torch.int32, device=dev)  # (N, K)
    count = neighbour_pass(xs, lo, hi, unions, vs, vs, vs, eps, 0, nbr=nbr)  # (N,) with itself
    core = ((count >= min_samples) & (vs != 0)).to(torch.int8)  # (N,)
    nlist = None
    if nbr is not None:
        nlist = NeighbourList.build(nbr, count, lo, hi, vs, core, tiled)
    st = RangeState(xs, lo, hi, order.to(torch.int32), inv, vs, core, eps, unions, nlist)
    for _ in range(rounds):
        st.lab, flag = _round(st, st.lab)
        st.pending = flag[0] != 0  # device bool: the last round changed labels
    return st


def finish(st: RangeState, max_iter: int = 10_000) -> None:
    """Run component rounds until the fixed point (host syncs; usually none are needed).

    Args:
        st: the run's state (updated).
        max_iter: bound on the rounds.
    """
    for _ in range(max_iter):
        if not bool(st.pending):
            return
        st.lab, flag = _round(st, st.lab)
        st.pending = flag[0] != 0
    raise RuntimeError(f"DBSCAN components did not converge in {max_iter} rounds")


def number_labels(st: RangeState) -> Tensor:
    """(N,) int64 input-order labels numbered by smallest root (sklearn's order), -1 = noise.

    Border points (valid, not core) take the smallest root among their core neighbours.

    Args:
        st: the run's state.
    """
    n = st.lab.numel()
    border = ((st.valid != 0) & ~st.core_b).to(torch.int8)  # (N,)
    m = st.neighbours(border, st.core, st.lab, 1)  # (N,)
    lab_s = torch.where(st.core_b, st.lab, m)  # (N,) per sorted position
    root = torch.empty_like(lab_s)
    root[st.order.long()] = lab_s  # (N,) input order
    rows = torch.arange(n, device=root.device, dtype=torch.int32)
    dense = torch.cumsum((root == rows).long(), 0) - 1  # (N,) cluster number of each root
    assigned = root != BIG
    return torch.where(assigned, dense[root.clamp(max=n - 1).long()], -1)  # (N,)


# ---- entry points ----------------------------------------------------------------------------
def start_grid(
    x,
    cu_seqlens,
    eps: float,
    min_samples: int,
    max_dims: int = 3,
    rounds: int = 4,
    valid: Tensor | None = None,
    list_capacity: int = LIST_CAPACITY,
) -> RangeState:
    """Exact DBSCAN of packed events x (N, d), no host sync; complete with ``complete``.
    list_capacity: see ``dbscan_ranges``.

    Args:
        x: (N, d) points.
        cu_seqlens: (B+1,) event boundaries.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        max_dims: grid dimensions at most.
        rounds: component rounds run here.
        valid: (N,) bool rows to cluster (None: all).
        list_capacity: neighbour-list slots per row.

    Returns:
        The run's state.
    """
    n = x.shape[0]
    cu = cu_seqlens.long()
    seq = torch.repeat_interleave(
        torch.arange(cu.numel() - 1, device=x.device), cu.diff(), output_size=n
    )  # (N,) event of each row
    xf = x if x.dtype == torch.float64 else x.float()
    finite = torch.isfinite(xf).all()
    xf = torch.where(finite, xf, 0.0)  # keep the grid finite; the flag raises in complete
    order, lo, hi, overflow = grid_ranges(xf, seq, cu.numel() - 1, eps, max_dims)
    ok = torch.ones(n, dtype=torch.bool, device=x.device) if valid is None else valid
    st = dbscan_ranges(
        xf[order], lo, hi, order, ok, eps, min_samples, rounds, list_capacity=list_capacity
    )
    st.nonfinite, st.overflow = ~finite, overflow
    return st


def start_plan(
    x,
    plan,
    eps: float,
    min_samples: int,
    adjacency: int | None = None,
    rounds: int = 4,
    valid: Tensor | None = None,
    window: int | None = None,
    list_capacity: int = LIST_CAPACITY,
) -> RangeState:
    """DBSCAN on a plan's neighbourhoods (see ``plan_ranges``; tiled kernel), no host sync.
    list_capacity: see ``dbscan_ranges``.

    Args:
        x: (N, d) points in input order.
        plan: the attention plan.
        eps: neighbourhood radius.
        min_samples: neighbours (the point included) of a core point.
        adjacency: overrides a cluster plan's.
        rounds: component rounds run here.
        valid: (N,) bool rows to cluster (None: all).
        window: overrides a window plan's.
        list_capacity: neighbour-list slots per row.

    Returns:
        The run's state.
    """
    n = x.shape[0]
    xf = x if x.dtype == torch.float64 else x.float()
    finite = torch.isfinite(xf).all()
    xf = torch.where(finite, xf, 0.0)  # the flag raises in complete
    perm = plan.perm if plan.perm is not None else torch.arange(n, device=x.device)
    lo, hi = plan_ranges(plan, adjacency, window)
    ok = torch.ones(n, dtype=torch.bool, device=x.device) if valid is None else valid
    st = dbscan_ranges(
        xf[perm],
        lo,
        hi,
        perm,
        ok,
        eps,
        min_samples,
        rounds,
        tiled=PLAN_TILED,
        list_capacity=list_capacity,
    )
    st.nonfinite, st.overflow = ~finite, torch.zeros_like(finite)
    return st


def flags(st: RangeState) -> Tensor:
    """(3,) bool on the device: components pending, non-finite input, key overflow.

    Args:
        st: the run's state.
    """
    return torch.stack([st.pending, st.nonfinite, st.overflow])


def complete(st: RangeState, labels: Tensor | None = None, fallback=None) -> Tensor:
    """Final (N,) int64 labels: ``labels`` (from ``number_labels`` in the same run, e.g. a
    graph replay) when no flag is set, else the remaining rounds / the eager ``fallback()``
    (one host sync to read the flags).

    Args:
        st: the run's state.
        labels: labels numbered in the same run (None: number them here).
        fallback: () -> labels, run when the keys overflowed.

    Raises:
        ValueError: non-finite input.
        RuntimeError: the keys overflowed and there is no fallback.
    """
    pending, nonfinite, overflow = flags(st).tolist()
    if nonfinite:
        raise ValueError("dbscan input contains non-finite values")
    if overflow:
        if fallback is None:
            raise RuntimeError("DBSCAN grid keys overflow int64 and no fallback was given")
        return fallback()
    if pending or labels is None:
        st = copy.copy(st)  # the caller's state (maybe a graph's static tensors) stays as is
        finish(st)
        return number_labels(st)
    return labels
