"""TrackML scoring weights per hit, by the official phase-1 rule (DESIGN.md, trackml-library).

weight = w_pt * w_order, normalised to 1 per event:
- w_pt: 0.2 for pT <= 0.5 GeV, linear to 1 at 3 GeV, 1 above; 0 below 0.05 GeV.
- w_order: the profile [10, 8, 6, 5, 3, 3, 3, 5, 6] stretched over the particle's hits ranked
  by abs(tz - vz), normalised to 1 per particle; particles with < 4 hits and noise get 0;
  tracks longer than 20 hits use the 20-hit row, hits ranked >= 20 get 0.
"""

from __future__ import annotations

import math

import numba
import numpy as np

ORDER_PROPOSAL = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0])
ORDER_MIN_HITS = 4
ORDER_MAX_HITS = 20


def _order_matrix() -> np.ndarray:
    w = np.zeros((ORDER_MAX_HITS + 1, ORDER_MAX_HITS))
    for nhits in range(ORDER_MIN_HITS, ORDER_MAX_HITS + 1):
        supports = np.arange(len(ORDER_PROPOSAL)) * (nhits - 1) / (len(ORDER_PROPOSAL) - 1)
        row = np.interp(np.arange(nhits), supports, ORDER_PROPOSAL)
        w[nhits, :nhits] = row / row.sum()
    return w


ORDER_MATRIX = _order_matrix()  # (21, 20) indexed by (nhits, rank)


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """The pT term: 0.2 up to 0.5 GeV, linear to 1 at 3 GeV; 0 below 0.05 GeV.

    Args:
        pt: transverse momenta in GeV.

    Returns:
        The weights, same shape.
    """
    return np.interp(pt, [0.05, 0.5, 3.0], [0.2, 0.2, 1.0], left=0.0, right=1.0)


@numba.njit(cache=True)
def _rank_by_distance(pidx: np.ndarray, dz: np.ndarray, n_part: int) -> np.ndarray:
    """0-based rank of every hit among the hits of its particle ``pidx`` (0 <= pidx < n_part)
    by ``dz``, ties (and NaNs, last) in input order: the ranks np.lexsort((dz, pidx)) gives,
    from a counting sort by particle and an insertion sort of each particle's few hits."""
    n = pidx.shape[0]
    start = np.zeros(n_part + 1, np.int64)
    for i in range(n):
        start[pidx[i] + 1] += 1
    for k in range(n_part):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)  # hits grouped by particle, in input order
    for i in range(n):
        order[fill[pidx[i]]] = i
        fill[pidx[i]] += 1
    rank = np.empty(n, np.int64)
    for k in range(n_part):
        a, b = start[k], start[k + 1]
        for m in range(a + 1, b):  # stable insertion sort by dz, NaN after every number
            cur = order[m]
            key = dz[cur]
            q = m - 1
            while q >= a:
                prev = dz[order[q]]
                if not (prev > key or (math.isnan(prev) and not math.isnan(key))):
                    break
                order[q + 1] = order[q]
                q -= 1
            order[q + 1] = cur
        for m in range(a, b):
            rank[order[m]] = m - a
    return rank


def trackml_weights(
    hit_particle_id: np.ndarray,
    hit_tz: np.ndarray,
    part_particle_id: np.ndarray,
    part_vz: np.ndarray,
    part_px: np.ndarray,
    part_py: np.ndarray,
    hit_particle_index: np.ndarray | None = None,
) -> np.ndarray:
    """Per-hit TrackML weights (float64, sum 1 unless no hit qualifies, then all 0).

    Hits whose particle id is 0 or absent from ``part_particle_id`` are noise (weight 0).
    ``hit_particle_index``: the row of each hit's particle in the ``part_*`` arrays (-1 for
    noise) when the caller knows it (the simulation); it replaces the id look-up.

    Args:
        hit_particle_id: (N,) particle id of each hit, 0 = noise.
        hit_tz: (N,) true z of each hit in mm (its distance to the vertex orders the hits).
        part_particle_id: (P,) particle ids of the table.
        part_vz: (P,) production vertex z in mm.
        part_px: (P,) momentum x in GeV.
        part_py: (P,) momentum y in GeV.
        hit_particle_index: (N,) table row of each hit's particle, -1 for noise, if known.

    Returns:
        (N,) float64 weights.
    """
    hit_pid = np.asarray(hit_particle_id, dtype=np.uint64)
    n = len(hit_pid)
    w = np.zeros(n)
    if n == 0 or len(part_particle_id) == 0:
        return w
    pids = np.asarray(part_particle_id, dtype=np.uint64)
    if hit_particle_index is None:
        order = np.argsort(pids, kind="stable")
        idx = np.searchsorted(pids[order], hit_pid)
        idx = np.clip(idx, 0, len(pids) - 1)
        known = (pids[order][idx] == hit_pid) & (hit_pid != 0)
        pidx = np.where(known, order[idx], -1)  # (n,) particle row of each hit, -1 = noise
    else:
        pidx = np.asarray(hit_particle_index, np.int64)
        if pidx.shape != (n,) or (n and (pidx.min() < -1 or pidx.max() >= len(pids))):
            raise ValueError(
                f"hit_particle_index must hold {n} rows in [-1, {len(pids)}), got shape "
                f"{pidx.shape}"
            )
        known = (pidx >= 0) & (hit_pid != 0)
        pidx = np.where(known, pidx, -1)
    good = np.flatnonzero(known)
    pgood = pidx[good]
    nhits = np.bincount(pgood, minlength=len(pids))  # (npart,)
    dz = np.abs(np.asarray(hit_tz, np.float64)[good] - np.asarray(part_vz, np.float64)[pgood])
    rank = _rank_by_distance(pgood, dz, len(pids))  # by particle, then distance from the vertex
    nh = nhits[pgood]
    w_order = np.where(
        (nh >= ORDER_MIN_HITS) & (rank < ORDER_MAX_HITS),
        ORDER_MATRIX[np.minimum(nh, ORDER_MAX_HITS), np.minimum(rank, ORDER_MAX_HITS - 1)],
        0.0,
    )
    pt = np.hypot(np.asarray(part_px, np.float64), np.asarray(part_py, np.float64))
    w[good] = w_order * pt_weight(pt)[pgood]
    total = w.sum()
    return w / total if total > 0 else w
