"""Tracking efficiencies, fake and duplicate rates (DESIGN.md "Metrics", exact definitions).

Only clusters (tracks) of at least ``min_cluster_hits`` hits count as candidates.

- double majority (DM): a particle is found if a candidate has it as majority particle with
  purity > 0.5 and completeness > 0.5 (at most one candidate can hold > 50 % of its hits);
- perfect match: that candidate holds all of the particle's hits with purity > 0.99;
- LHC: some candidate has the particle as majority with purity > 0.75;
- fake rate: candidates whose majority fraction is not > 0.5 (or whose majority is noise),
  over all candidates;
- duplicate rate: candidates with purity > 0.5 and a non-noise majority ("matched"), minus
  the distinct particles they match, over the matched candidates.

Efficiencies are over reconstructable particles (``Reconstructable``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from trackformers.metrics.matching import TrackMatch


@dataclass(frozen=True)
class Reconstructable:
    """Which particles enter efficiency denominators."""

    pt_min: float = 0.9  # GeV, strict: pt > pt_min
    abs_eta_max: float = 4.0  # strict: abs(eta) < abs_eta_max
    min_hits: int = 3  # hits of the particle in the event (pixel hits when pixel_only)
    pixel_only: bool = False  # count only pixel-detector hits toward min_hits

    def select(self, pt: np.ndarray, eta: np.ndarray, nhits: np.ndarray, npix: np.ndarray):
        """(P,) bool mask of reconstructable particles.

        Args:
            pt: (P,) transverse momenta in GeV.
            eta: (P,) pseudorapidities.
            nhits: (P,) hits of each particle.
            npix: (P,) pixel hits of each particle.
        """
        hits = npix if self.pixel_only else nhits
        return (pt > self.pt_min) & (np.abs(eta) < self.abs_eta_max) & (hits >= self.min_hits)

    def to_dict(self) -> dict:
        """The thresholds as a plain dict (stored in metrics.json)."""
        return asdict(self)


@dataclass(frozen=True)
class MatchingRules:
    """Thresholds of the matching definitions (defaults are DESIGN.md's)."""

    min_cluster_hits: int = 3
    majority: float = 0.5  # DM purity and completeness, strict >
    perfect_purity: float = 0.99
    lhc_purity: float = 0.75

    def to_dict(self) -> dict:
        """The thresholds as a plain dict (stored in metrics.json)."""
        return asdict(self)


def particle_matches(match: TrackMatch, particle_id: np.ndarray, rules: MatchingRules) -> dict:
    """Per-particle match flags for the particles ``particle_id`` (P,).

    Returns arrays (P,): dm, perfect, lhc (bool), n_matched (candidates with purity > 0.5
    matching the particle), best_track (track with most of its hits among candidates, -1 if
    none; smallest label on ties), best_nhits, best_purity (hits of the particle over hits
    of that track).

    Args:
        match: the event's contingency.
        particle_id: (P,) the particles asked about.
        rules: matching thresholds.
    """
    particle_id = np.asarray(particle_id)
    n = len(particle_id)
    cand = match.track_nhits >= rules.min_cluster_hits  # (T,)
    purity = match.purity

    # particles as majority of candidate tracks
    pos_in = _lookup(particle_id, match.major_particle_id)  # (T,) index into particle_id, -1
    dm_t = cand & (purity > rules.majority) & (match.completeness > rules.majority)
    perfect_t = dm_t & (match.major_nhits == match.major_particle_nhits)
    perfect_t &= purity > rules.perfect_purity
    lhc_t = cand & (purity > rules.lhc_purity)
    matched_t = cand & (purity > rules.majority) & (match.major_particle_id != 0)

    def any_per_particle(flag_t):
        out = np.zeros(n, dtype=bool)
        sel = flag_t & (pos_in >= 0)
        out[pos_in[sel]] = True
        return out

    n_matched = np.bincount(pos_in[matched_t & (pos_in >= 0)], minlength=n)[:n]

    # best candidate per particle from the pair table
    pc = cand[match.pair_track]  # (K,)
    pair_pid = match.particle_id[match.pair_particle[pc]]
    pair_t = match.pair_track[pc]
    pair_n = match.pair_nhits[pc]
    order = np.lexsort((pair_t, -pair_n, pair_pid))  # by particle, most hits, smallest track
    pair_pid, pair_t, pair_n = pair_pid[order], pair_t[order], pair_n[order]
    first = np.r_[True, pair_pid[1:] != pair_pid[:-1]] if len(pair_pid) else np.zeros(0, bool)
    best_pos = _lookup(particle_id, pair_pid[first])
    best_track = np.full(n, -1, dtype=np.int64)
    best_nhits = np.zeros(n, dtype=np.int64)
    best_purity = np.zeros(n)
    ok = best_pos >= 0
    sel_t = pair_t[first][ok]
    best_track[best_pos[ok]] = match.track_id[sel_t]
    best_nhits[best_pos[ok]] = pair_n[first][ok]
    best_purity[best_pos[ok]] = pair_n[first][ok] / match.track_nhits[sel_t]
    return {
        "dm": any_per_particle(dm_t),
        "perfect": any_per_particle(perfect_t),
        "lhc": any_per_particle(lhc_t),
        "n_matched": n_matched,
        "best_track": best_track,
        "best_nhits": best_nhits,
        "best_purity": best_purity,
    }


def track_flags(match: TrackMatch, rules: MatchingRules) -> dict:
    """Per-track flags (T,): candidate, matched (purity > 0.5, non-noise majority), fake.

    Args:
        match: the event's contingency.
        rules: matching thresholds (candidates have >= ``min_cluster_hits`` hits).

    Returns:
        name -> (T,) bool.
    """
    cand = match.track_nhits >= rules.min_cluster_hits
    matched = cand & (match.purity > rules.majority) & (match.major_particle_id != 0)
    return {"candidate": cand, "matched": matched, "fake": cand & ~matched}


def fake_rate(match: TrackMatch, rules: MatchingRules | None = None) -> float:
    """Unmatched candidates over all candidates (nan when there are no candidates).

    Args:
        match: the event's contingency.
        rules: matching thresholds (None: the defaults).
    """
    rules = rules or MatchingRules()
    f = track_flags(match, rules)
    n = f["candidate"].sum()
    return float(f["fake"].sum() / n) if n else float("nan")


def duplicate_rate(match: TrackMatch, rules: MatchingRules | None = None) -> float:
    """(matched candidates − distinct matched particles) / matched candidates.

    Args:
        match: the event's contingency.
        rules: matching thresholds (None: the defaults).

    Returns:
        The rate (nan without matched candidates).
    """
    rules = rules or MatchingRules()
    f = track_flags(match, rules)
    n = f["matched"].sum()
    if not n:
        return float("nan")
    return float((n - len(np.unique(match.major_particle_id[f["matched"]]))) / n)


def ratio(num: np.ndarray, den: np.ndarray) -> float:
    """sum(num & den) / sum(den) as float, nan on an empty denominator.

    Args:
        num: bool numerator flags.
        den: bool denominator flags.
    """
    d = int(np.sum(den))
    return float(np.sum(num & den) / d) if d else float("nan")


def _lookup(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the unique array ``keys`` (any order), -1 where absent."""
    if len(keys) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(keys) - 1)
    return np.where(sorted_keys[pos] == values, order[pos], -1)
