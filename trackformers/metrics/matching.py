"""Track ↔ particle contingency: which particles make up each reconstructed track.

Everything is vectorised numpy over one event: hits are grouped by (track, particle) pair
with one sort, majorities are found with ``reduceat``. Tie rule (as in the official TrackML
library, which walks hits sorted by (track_id, particle_id) and replaces the majority only on
a strictly larger count): among particles with equally many hits in a track, the smallest
particle id is the majority.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrackMatch:
    """Per-track majority information and the (track, particle) pair table of one event."""

    track_id: np.ndarray  # (T,) sorted unique track labels
    track_nhits: np.ndarray  # (T,) hits in the track
    major_particle_id: np.ndarray  # (T,) majority particle (smallest id among ties)
    major_nhits: np.ndarray  # (T,) hits of the majority particle in the track
    major_weight: np.ndarray  # (T,) summed weight of those hits
    major_particle_nhits: np.ndarray  # (T,) all hits of the majority particle in the event
    particle_id: np.ndarray  # (P,) sorted unique particle ids among ALL hits of the event
    particle_nhits: np.ndarray  # (P,) hits per particle in the event
    pair_track: np.ndarray  # (K,) index into track_id of each (track, particle) pair
    pair_particle: np.ndarray  # (K,) index into particle_id
    pair_nhits: np.ndarray  # (K,) hits shared by the pair

    @property
    def purity(self) -> np.ndarray:
        """(T,) fraction of the track's hits from its majority particle."""
        return self.major_nhits / np.maximum(self.track_nhits, 1)

    @property
    def completeness(self) -> np.ndarray:
        """(T,) fraction of the majority particle's hits that are in the track."""
        return self.major_nhits / np.maximum(self.major_particle_nhits, 1)


def _check_lengths(**arrays: np.ndarray) -> int:
    sizes = {k: np.shape(v) for k, v in arrays.items()}
    n = {s[0] if len(s) == 1 else None for s in sizes.values()}
    if len(n) != 1 or None in n:
        raise ValueError(f"expected 1-d per-hit arrays of one length, got shapes {sizes}")
    return n.pop()


def match_tracks(
    track_id: np.ndarray,
    particle_id: np.ndarray,
    weight: np.ndarray | None = None,
    unassigned: int | None = -1,
) -> TrackMatch:
    """Build the track/particle contingency of one event.

    Args:
        track_id: (N,) integer label per hit.
        particle_id: (N,) truth particle per hit, 0 = noise.
        weight: (N,) TrackML hit weights (ones when None).
        unassigned: label of hits in no track (default -1, the DBSCAN noise label); None
            treats every label as a track, exactly as the official TrackML library does.

    Returns:
        The contingency (tracks, particles, shared hits and weights).
    """
    track_id = np.asarray(track_id)
    particle_id = np.asarray(particle_id)
    weight = np.ones(len(track_id)) if weight is None else np.asarray(weight, dtype=np.float64)
    _check_lengths(track_id=track_id, particle_id=particle_id, weight=weight)
    if track_id.dtype.kind not in "iu" or particle_id.dtype.kind not in "iu":
        raise TypeError(
            f"track_id and particle_id must be integer arrays, got {track_id.dtype} "
            f"and {particle_id.dtype}"
        )

    pids, p_idx = np.unique(particle_id, return_inverse=True)
    p_nhits = np.bincount(p_idx, minlength=len(pids))
    if unassigned is not None:
        keep = track_id != unassigned
        track_id, p_idx, weight = track_id[keep], p_idx[keep], weight[keep]
    tids, t_idx = np.unique(track_id, return_inverse=True)
    npart = max(len(pids), 1)
    key = t_idx.astype(np.int64) * npart + p_idx  # (N,) pair key, sorted = (track, particle)
    pair_key, pair_inv, pair_n = np.unique(key, return_inverse=True, return_counts=True)
    pair_w = np.bincount(pair_inv, weights=weight, minlength=len(pair_key))
    pair_t, pair_p = pair_key // npart, pair_key % npart

    if len(pair_key) == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        return TrackMatch(
            tids,
            empty_i,
            pids[:0],
            empty_i,
            np.zeros(0),
            empty_i,
            pids,
            p_nhits,
            empty_i,
            empty_i,
            empty_i,
        )
    starts = np.flatnonzero(np.r_[True, pair_t[1:] != pair_t[:-1]])  # (T,) first pair per track
    max_n = np.maximum.reduceat(pair_n, starts)  # (T,)
    is_max = pair_n == np.repeat(max_n, np.diff(np.r_[starts, len(pair_key)]))
    cand = np.flatnonzero(is_max)  # pairs at the maximum, sorted by (track, particle)
    first = np.r_[True, pair_t[cand][1:] != pair_t[cand][:-1]]
    maj = cand[first]  # (T,) pair index of the majority (smallest particle id among ties)
    return TrackMatch(
        track_id=tids,
        track_nhits=np.add.reduceat(pair_n, starts),
        major_particle_id=pids[pair_p[maj]],
        major_nhits=pair_n[maj],
        major_weight=pair_w[maj],
        major_particle_nhits=p_nhits[pair_p[maj]],
        particle_id=pids,
        particle_nhits=p_nhits,
        pair_track=pair_t,
        pair_particle=pair_p,
        pair_nhits=pair_n,
    )
