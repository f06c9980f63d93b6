"""All metrics of one event from the in-memory event dict and a per-hit track label array.

The event is ``dict[str, np.ndarray]`` keyed by the schema names (trackformers/data/schema.py).
``evaluate_event`` returns a flat metrics dict (counts included, so events can be summed by
``aggregate``) and a per-particle table; ``track_table`` gives the per-track view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from trackformers.data.schema import BARREL_VOLUMES, PIXEL_VOLUMES
from trackformers.metrics.efficiency import (
    MatchingRules,
    Reconstructable,
    particle_matches,
    track_flags,
)
from trackformers.metrics.matching import match_tracks
from trackformers.metrics.trackml import good_tracks

REQUIRED_HIT = ("hit_particle_id", "hit_weight", "hit_volume_id")
REQUIRED_PART = ("part_particle_id", "part_px", "part_py", "part_pz")
COUNT_KEYS = ("n_reconstructable", "n_dm", "n_perfect", "n_lhc", "n_candidates", "n_fake")
COUNT_KEYS += ("n_matched_tracks", "n_matched_particles")


def particle_kinematics(event: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pt [GeV], eta, phi of the particles of ``part_*``.

    Args:
        event: event dict with ``part_px``, ``part_py``, ``part_pz``.

    Returns:
        ``pt``, ``eta``, ``phi`` arrays (P,).
    """
    px, py, pz = (np.asarray(event[k], dtype=np.float64) for k in ("part_px", "part_py", "part_pz"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, np.sign(pz) * np.inf))
    return {"pt": pt, "eta": eta, "phi": np.arctan2(py, px)}


def _check_event(event: Mapping[str, np.ndarray], track_id: np.ndarray) -> None:
    missing = [k for k in REQUIRED_HIT + REQUIRED_PART if k not in event]
    if missing:
        raise KeyError(f"event lacks field(s) {missing}; has {sorted(event)}")
    nhit = len(event["hit_particle_id"])
    for k in REQUIRED_HIT:
        if len(event[k]) != nhit:
            raise ValueError(f"event field {k} has {len(event[k])} entries, hit_particle_id {nhit}")
    if np.shape(track_id) != (nhit,):
        raise ValueError(f"track_id has shape {np.shape(track_id)}, event has {nhit} hits")


def evaluate_event(
    event: Mapping[str, np.ndarray],
    track_id: np.ndarray,
    reconstructable: Reconstructable | None = None,
    rules: MatchingRules | None = None,
    weights: str = "truth",
) -> tuple[dict, pd.DataFrame]:
    """Metrics dict and per-particle table of one event; ``track_id`` (nhit,), -1 = no track.

    weights: "truth" uses ``hit_weight``; "official" recomputes the TrackML weights by the
    official rule from the truth (trackformers.sim.weights; needs hit_tz and part_vz).

    Args:
        event: event dict (hits and particles, schema names).
        track_id: (nhit,) track label per hit.
        reconstructable: efficiency denominator definition (None: the defaults).
        rules: matching thresholds (None: the defaults).
        weights: ``truth`` or ``official``.

    Returns:
        Counts and scores of the event, and one row per particle (kinematics, match flags).
    """
    reconstructable = reconstructable or Reconstructable()
    rules = rules or MatchingRules()
    track_id = np.asarray(track_id)
    if weights == "official":
        event = {**event, "hit_weight": official_weights(event)}
    elif weights != "truth":
        raise ValueError(f"weights must be 'truth' or 'official', got {weights!r}")
    _check_event(event, track_id)
    hit_pid = np.asarray(event["hit_particle_id"]).astype(np.int64)
    weight = np.asarray(event["hit_weight"], dtype=np.float64)
    volume = np.asarray(event["hit_volume_id"])
    part_id = np.asarray(event["part_particle_id"]).astype(np.int64)

    unknown = np.setdiff1d(hit_pid[hit_pid != 0], part_id)
    if len(unknown):
        raise ValueError(
            f"event {int(np.asarray(event.get('event_id', -1)))}: {len(unknown)} hit_particle_id "
            f"value(s) not in part_particle_id, e.g. {unknown[:5].tolist()} (events read through "
            "trackformers.data turn such hits into noise)"
        )
    if len(np.unique(part_id)) != len(part_id):
        raise ValueError("part_particle_id has duplicate ids")

    match = match_tracks(track_id, hit_pid, weight)
    kin = particle_kinematics(event)
    # per-particle hit counts (pixel, barrel) by lookup into the particle list
    order = np.argsort(part_id)
    pos = order[np.searchsorted(part_id[order], hit_pid[hit_pid != 0])]  # (n_signal_hits,)
    npart = len(part_id)
    nhits = np.bincount(pos, minlength=npart)
    npix = np.bincount(pos, weights=np.isin(volume[hit_pid != 0], PIXEL_VOLUMES), minlength=npart)
    nbar = np.bincount(pos, weights=np.isin(volume[hit_pid != 0], BARREL_VOLUMES), minlength=npart)
    pweight = np.bincount(pos, weights=weight[hit_pid != 0], minlength=npart)
    reco = reconstructable.select(kin["pt"], kin["eta"], nhits, npix.astype(np.int64))
    pm = particle_matches(match, part_id, rules)
    tf = track_flags(match, rules)

    total_w = weight.sum()
    score = (
        float(match.major_weight[good_tracks(match)].sum() / total_w) if total_w > 0 else math.nan
    )
    metrics = {
        "event_id": int(np.asarray(event.get("event_id", -1))),
        "pileup": int(np.asarray(event.get("pileup", -1))),
        "n_hits": int(len(hit_pid)),
        "n_noise_hits": int(np.sum(hit_pid == 0)),
        "n_particles": int(npart),
        "n_tracks": int(len(match.track_id)),
        "trackml_score": score,
        "n_reconstructable": int(reco.sum()),
        "n_dm": int((pm["dm"] & reco).sum()),
        "n_perfect": int((pm["perfect"] & reco).sum()),
        "n_lhc": int((pm["lhc"] & reco).sum()),
        "n_candidates": int(tf["candidate"].sum()),
        "n_fake": int(tf["fake"].sum()),
        "n_matched_tracks": int(tf["matched"].sum()),
        "n_matched_particles": int(len(np.unique(match.major_particle_id[tf["matched"]]))),
    }
    metrics.update(rates(metrics))
    particles = pd.DataFrame(
        {
            "event_id": metrics["event_id"],
            "pileup": metrics["pileup"],
            "particle_id": part_id,
            "vertex_id": _opt(event, "part_vertex_id", npart, -1),
            "pdg_id": _opt(event, "part_pdg_id", npart, 0),
            "q": _opt(event, "part_q", npart, 0),
            "pt": kin["pt"],
            "eta": kin["eta"],
            "phi": kin["phi"],
            "nhits": nhits,
            "n_pixel_hits": npix.astype(np.int64),
            "region": np.where(nhits == 0, "none", np.where(2 * nbar > nhits, "barrel", "endcap")),
            "weight": pweight,
            "reconstructable": reco,
            "dm": pm["dm"],
            "perfect": pm["perfect"],
            "lhc": pm["lhc"],
            "n_matched_tracks": pm["n_matched"],
            "best_track": pm["best_track"],
            "best_nhits": pm["best_nhits"],
            "best_purity": pm["best_purity"],
            "best_completeness": pm["best_nhits"] / np.maximum(nhits, 1),
        }
    )
    return metrics, particles


def official_weights(event: Mapping[str, np.ndarray]) -> np.ndarray:
    """(nhit,) TrackML hit weights by the official rule (pT and hit-order terms, sum 1).

    Args:
        event: event dict with the hit and particle truth.
    """
    from trackformers.sim.weights import trackml_weights

    need = ("hit_particle_id", "hit_tz", "part_particle_id", "part_vz", "part_px", "part_py")
    missing = [k for k in need if k not in event]
    if missing:
        raise KeyError(f"official TrackML weights need event field(s) {missing}")
    return trackml_weights(*(event[k] for k in need))


def rates(counts: Mapping[str, float]) -> dict[str, float]:
    """Efficiencies and rates from summed counts (nan on empty denominators).

    Args:
        counts: summed ``n_*`` counts of events.

    Returns:
        name -> rate.
    """

    def div(a, b):
        return float(counts[a] / counts[b]) if counts[b] else math.nan

    dup = (
        (counts["n_matched_tracks"] - counts["n_matched_particles"]) / counts["n_matched_tracks"]
        if counts["n_matched_tracks"]
        else math.nan
    )
    return {
        "dm_efficiency": div("n_dm", "n_reconstructable"),
        "perfect_efficiency": div("n_perfect", "n_reconstructable"),
        "lhc_efficiency": div("n_lhc", "n_reconstructable"),
        "fake_rate": div("n_fake", "n_candidates"),
        "duplicate_rate": float(dup),
    }


def aggregate(per_event: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dataset metrics: TrackML score averaged over events (official), rates from summed counts.

    Args:
        per_event: metrics dicts of :func:`evaluate_event`.

    Returns:
        ``n_events``, summed counts, mean TrackML score and the rates.

    Raises:
        ValueError: no events.
    """
    per_event = list(per_event)
    if not per_event:
        raise ValueError("aggregate() got no events")
    sums = {k: sum(m[k] for m in per_event) for k in COUNT_KEYS + ("n_hits", "n_tracks")}
    scores = [m["trackml_score"] for m in per_event if not math.isnan(m["trackml_score"])]
    out = {"n_events": len(per_event), **sums}
    out["trackml_score"] = float(np.mean(scores)) if scores else math.nan
    out.update(rates(sums))
    return out


def track_table(event: Mapping[str, np.ndarray], track_id: np.ndarray, rules=None):
    """Per-track table: size, majority particle, purity, completeness, flags, mean eta of hits.

    Args:
        event: event dict.
        track_id: (nhit,) track label per hit.
        rules: matching thresholds (None: the defaults).

    Returns:
        A DataFrame, one row per track.
    """
    rules = rules or MatchingRules()
    track_id = np.asarray(track_id)
    _check_event(event, track_id)
    hit_pid = np.asarray(event["hit_particle_id"]).astype(np.int64)
    match = match_tracks(track_id, hit_pid, np.asarray(event["hit_weight"], dtype=np.float64))
    tf = track_flags(match, rules)
    keep = track_id != -1
    _, inv = np.unique(track_id[keep], return_inverse=True)
    eta = np.zeros(len(match.track_id))
    if all(k in event for k in ("hit_x", "hit_y", "hit_z")):
        x, y, z = (
            np.asarray(event[k], dtype=np.float64)[keep] for k in ("hit_x", "hit_y", "hit_z")
        )
        theta = np.arctan2(np.hypot(x, y), z)
        h_eta = -np.log(np.tan(theta / 2))
        eta = np.bincount(inv, weights=h_eta, minlength=len(eta)) / np.maximum(match.track_nhits, 1)
    return pd.DataFrame(
        {
            "track_id": match.track_id,
            "nhits": match.track_nhits,
            "major_particle_id": match.major_particle_id,
            "purity": match.purity,
            "completeness": match.completeness,
            "eta": eta,
            **tf,
        }
    )


def _opt(event, key, n, fill):
    return np.asarray(event[key]) if key in event else np.full(n, fill)
