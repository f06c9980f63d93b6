"""TrackML score by the official algorithm (Amrouche et al. 2019; trackml-library ``score``).

A reconstructed track is *good* iff more than 50 % of its hits come from its majority particle
and it holds more than 50 % of that particle's hits. The score is the summed weight of the
majority particle's hits in good tracks, divided by the total truth weight of the event
(so a perfect assignment scores 1 when weights are normalised, whatever they are).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trackformers.metrics.matching import TrackMatch, match_tracks


def good_tracks(match: TrackMatch) -> np.ndarray:
    """(T,) bool: the double-majority condition of the TrackML score (no size cut).

    Args:
        match: the event's contingency.
    """
    return (match.purity > 0.5) & (match.completeness > 0.5)


def trackml_score(
    track_id: np.ndarray,
    particle_id: np.ndarray,
    weight: np.ndarray,
    unassigned: int | None = -1,
) -> float:
    """TrackML score of one event from per-hit arrays (N,).

    Hits with ``track_id == unassigned`` (default -1) are in no track; with ``None`` every
    label is a track, as in the official library. The total weight includes every hit.

    Args:
        track_id: track label per hit.
        particle_id: truth particle per hit, 0 = noise.
        weight: TrackML weight per hit.
        unassigned: label of hits in no track (None: every label is a track).

    Returns:
        The score in [0, 1].
    """
    weight = np.asarray(weight, dtype=np.float64)
    if not np.all(np.isfinite(weight)) or np.any(weight < 0):
        bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))[:5]
        raise ValueError(f"hit weights must be finite and >= 0; bad at hit index {bad.tolist()}")
    total = weight.sum()
    if total <= 0:
        raise ValueError("total hit weight of the event is 0: cannot normalise the TrackML score")
    match = match_tracks(track_id, particle_id, weight, unassigned=unassigned)
    return float(match.major_weight[good_tracks(match)].sum() / total)


def analyze_tracks(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """Per-track table with the columns of the official ``_analyze_tracks``.

    Args:
        truth: hit_id, particle_id, weight.
        submission: hit_id, track_id.

    Returns:
        One row per track.
    """
    pid, tid, w = _merge(truth, submission)
    m = match_tracks(tid, pid, w, unassigned=None)
    return pd.DataFrame(
        {
            "track_id": m.track_id,
            "nhits": m.track_nhits,
            "major_particle_id": m.major_particle_id,
            "major_particle_nhits": m.major_particle_nhits,
            "major_nhits": m.major_nhits,
            "major_weight": m.major_weight / w.sum(),
        }
    )


def score_event(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Official-library API: truth (hit_id, particle_id, weight), submission (hit_id, track_id).

    Every truth hit must appear exactly once in the submission; every label (also negative)
    is a track, as in the official library.

    Args:
        truth: hit_id, particle_id, weight.
        submission: hit_id, track_id.

    Returns:
        The score.
    """
    pid, tid, w = _merge(truth, submission)
    return trackml_score(tid, pid, w, unassigned=None)


def _merge(truth: pd.DataFrame, submission: pd.DataFrame):
    for name, df, cols in (
        ("truth", truth, ("hit_id", "particle_id", "weight")),
        ("submission", submission, ("hit_id", "track_id")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}; has {list(df.columns)}")
        dup = df["hit_id"].duplicated()
        if dup.any():
            raise ValueError(f"{name} has duplicate hit_id(s) {df['hit_id'][dup].head(5).tolist()}")
    t_hits = truth["hit_id"].to_numpy()
    s_hits = submission["hit_id"].to_numpy()
    if len(s_hits) != len(t_hits) or not np.array_equal(np.sort(t_hits), np.sort(s_hits)):
        missing = np.setdiff1d(t_hits, s_hits)[:5].tolist()
        extra = np.setdiff1d(s_hits, t_hits)[:5].tolist()
        raise ValueError(
            f"submission hits differ from truth hits: missing {missing}, unknown {extra} "
            f"({len(s_hits)} submitted vs {len(t_hits)} truth)"
        )
    # align the submission to the truth order
    order_t = np.argsort(t_hits, kind="stable")
    order_s = np.argsort(s_hits, kind="stable")
    tid = np.empty(len(t_hits), dtype=np.int64)
    tid[order_t] = submission["track_id"].to_numpy().astype(np.int64)[order_s]
    return truth["particle_id"].to_numpy(), tid, truth["weight"].to_numpy(dtype=np.float64)
