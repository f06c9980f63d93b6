"""O(N k) neighbourhoods for pairwise losses: the windowed attention neighbourhood.

Hits are sorted by phi inside each event; hit i's neighbours are the hits at sorted offsets
+-1..W with wrap-around at +-pi (the ``window`` mask of trackformers.attention.base). An
event with n <= 2W hits has all its other hits as neighbours, the rest of the row is -1.
"""

from __future__ import annotations

import torch
from torch import Tensor


def phi_sort(coords: Tensor, cu_seqlens: Tensor) -> Tensor:
    """(N,) int64 permutation sorting hits by phi inside each event (events stay in order).

    Args:
        coords: (N, >= 2) hit coordinates, x and y first.
        cu_seqlens: (B + 1,) event boundaries.
    """
    lengths = cu_seqlens.diff().long()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=coords.device), lengths)
    phi = torch.atan2(coords[:, 1].double(), coords[:, 0].double())  # (N,) in [-pi, pi]
    key = seq.double() * 8.0 + (phi + torch.pi)  # events separated by more than 2 pi
    return torch.argsort(key, stable=True)


def window_neighbours(
    cu_seqlens: Tensor, window: int, coords: Tensor | None = None, perm: Tensor | None = None
) -> Tensor:
    """(N, 2W) int64 input-row indices of each hit's window neighbours, -1 padded.

    Args:
        cu_seqlens: (B + 1,) event boundaries.
        window: W >= 1, neighbours each side in phi order.
        coords: (N, >= 2) hit coordinates, x and y first (used when ``perm`` is None).
        perm: (N,) sorted position -> input row, from an attention plan (None: sorted by
            phi from ``coords``).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if perm is None:
        if coords is None:
            raise ValueError("window_neighbours needs coords or a plan's perm")
        perm = phi_sort(coords, cu_seqlens)
    device = perm.device
    lengths = cu_seqlens.diff().long().to(device)
    starts = cu_seqlens[:-1].long().to(device)
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)
    n = lengths[seq][:, None]  # (N, 1) length of each sorted hit's event
    start = starts[seq][:, None]  # (N, 1)
    local = torch.arange(perm.numel(), device=device)[:, None] - start  # (N, 1)
    offsets = torch.cat([torch.arange(1, window + 1), -torch.arange(1, window + 1)]).to(device)
    big = n > 2 * window  # (N, 1) events with distinct +-W neighbours
    # small events: positive offsets 1..n-1 cover every other hit exactly once
    ok = torch.where(big, torch.ones_like(offsets[None, :], dtype=torch.bool), False)
    ok = ok | (~big & (offsets[None, :] > 0) & (offsets[None, :] < n))  # (N, 2W)
    pos_sorted = start + torch.remainder(local + offsets[None, :], n)  # (N, 2W) sorted index
    nbr_rows = torch.where(ok, perm[pos_sorted], -1)  # (N, 2W) input rows, by sorted hit
    out = torch.empty_like(nbr_rows)
    out[perm] = nbr_rows  # back to input order
    return out
