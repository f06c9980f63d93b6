"""Attention-mask / cluster views: which hits a plan lets attend each other, and whether
hits of the same track can see each other (the recall of the mask).

Works from ``AttentionPlan`` + ``row_ranges`` (O(N) ranges, never an N x N matrix).
"""

from __future__ import annotations

import numpy as np
import torch

from trackformers.attention.base import AttentionPlan
from trackformers.attention.plans import row_ranges, surface_coordinates
from trackformers.viz.style import label_colours, plt


def _sorted_view(plan: AttentionPlan, n: int) -> np.ndarray:
    """(N,) input row of every sorted position."""
    return np.arange(n) if plan.perm is None else plan.perm.cpu().numpy()


def same_track_coverage(plan: AttentionPlan, particle_id) -> np.ndarray:
    """(N,) per hit in input order: fraction of the other hits of its particle inside its
    attention range; nan for noise hits and particles with a single hit.

    Args:
        plan: the attention plan.
        particle_id: (N,) particle id per hit, input order.
    """
    pid = np.asarray(particle_id.cpu() if isinstance(particle_id, torch.Tensor) else particle_id)
    pid = pid.astype(np.int64)
    n = len(pid)
    perm = _sorted_view(plan, n)
    cu = plan.cu_seqlens.cpu().numpy().astype(np.int64)
    seq = np.repeat(np.arange(len(cu) - 1), np.diff(cu))  # (N,) event of each sorted row
    ps = pid[perm]  # (N,) particle per sorted row
    _, prank = np.unique(np.stack([seq, ps], 1), axis=0, return_inverse=True)
    prank = prank.reshape(-1).astype(np.int64)  # (N,) (event, particle) rank
    keys = np.sort(prank * n + np.arange(n))  # (N,) sorted (particle, position)
    lo, hi = (t.cpu().numpy().astype(np.int64) for t in row_ranges(plan))  # (N, R)
    inside = np.zeros(n, dtype=np.int64)
    for r in range(lo.shape[1]):
        a = np.searchsorted(keys, prank * n + lo[:, r])
        b = np.searchsorted(keys, prank * n + hi[:, r])
        inside += b - a
    total = np.bincount(prank)[prank]  # (N,) hits of the particle
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.where((ps != 0) & (total > 1), (inside - 1) / (total - 1), np.nan)
    out = np.empty(n)
    out[perm] = cov
    return out


def mask_density(plan: AttentionPlan, event: int = 0, bins: int = 128) -> np.ndarray:
    """(bins, bins) fraction of allowed (query, key) pairs, sorted order, one event.

    Args:
        plan: the attention plan.
        event: the event of the batch.
        bins: pixels per side.
    """
    cu = plan.cu_seqlens.cpu().numpy().astype(np.int64)
    a, b = cu[event], cu[event + 1]
    m = b - a
    if m == 0:
        raise ValueError(f"event {event} of the plan has no hits")
    bins = min(bins, m)
    lo, hi = (t.cpu().numpy().astype(np.int64)[a:b] - a for t in row_ranges(plan))  # (m, R)
    edges = np.linspace(0, m, bins + 1)
    row_bin = np.minimum((np.arange(m) * bins) // m, bins - 1)  # (m,)
    dens = np.zeros((bins, bins))
    for r in range(lo.shape[1]):
        # overlap of [lo, hi) with every key bin: (m, bins)
        ov = np.clip(
            np.minimum(hi[:, r, None], edges[None, 1:])
            - np.maximum(lo[:, r, None], edges[None, :-1]),
            0,
            None,
        )
        np.add.at(dens, row_bin, ov)
    rows_per_bin = np.bincount(row_bin, minlength=bins)[:, None]
    return dens / (rows_per_bin * np.diff(edges)[None, :])


def plot_attention(
    coords, plan: AttentionPlan, particle_id, event: int = 0, max_hits: int = 20_000
):
    """Three panels for one event: hits on the projection surface coloured by attention group
    (or by sorted position), the mask density in sorted order, and the same-track coverage.

    Args:
        coords: (N, 3) hit positions in mm.
        plan: the attention plan of the batch.
        particle_id: (N,) particle id per hit.
        event: the event of the batch.
        max_hits: hits drawn at most.

    Returns:
        The figure.
    """
    coords_t = torch.as_tensor(np.asarray(coords), dtype=torch.float32)
    n = coords_t.shape[0]
    cu = plan.cu_seqlens.cpu().numpy().astype(np.int64)
    a, b = cu[event], cu[event + 1]
    perm = _sorted_view(plan, n)
    rows = perm[a:b]  # input rows of this event in sorted order
    phi, s = (t.numpy() for t in surface_coordinates(coords_t[torch.as_tensor(rows)]))
    if plan.group_id is not None:
        colour = label_colours(plan.group_id.cpu().numpy()[a:b])
        what = f"{len(np.unique(plan.group_id.cpu().numpy()[a:b]))} groups"
    else:
        colour = plt.get_cmap("twilight")(np.linspace(0, 1, b - a))
        what = "sorted position"
    cov = same_track_coverage(plan, particle_id)[rows]
    sel = np.arange(b - a)
    if len(sel) > max_hits:
        sel = np.sort(np.random.default_rng(0).choice(len(sel), max_hits, replace=False))
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    ax[0].scatter(phi[sel], s[sel], c=colour[sel], s=2, linewidths=0)
    ax[0].set(
        xlabel=r"$\phi$", ylabel="s (unrolled surface) [mm]", title=f"{plan.kind} plan: {what}"
    )
    im = ax[1].imshow(mask_density(plan, event), origin="upper", cmap="magma", vmin=0, vmax=1)
    ax[1].set(xlabel="key (sorted)", ylabel="query (sorted)", title="allowed pair fraction")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    ok = np.isfinite(cov)
    ax[2].hist(cov[ok], bins=np.linspace(0, 1, 21), color="tab:green")
    mean = float(np.mean(cov[ok])) if ok.any() else float("nan")
    ax[2].set(
        xlabel="fraction of same-track hits attended",
        ylabel="hits",
        title=f"same-track coverage (mean {mean:.3f})",
    )
    fig.tight_layout()
    return fig
