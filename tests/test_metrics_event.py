"""Event-level metrics: DM / perfect / LHC efficiency, fake and duplicate rates, breakdowns."""

import math

import numpy as np
import pytest

from trackformers.metrics import (
    MatchingRules,
    Reconstructable,
    aggregate,
    efficiency_breakdowns,
    evaluate_event,
    fake_rate_vs_eta,
    track_table,
)


def event_from_hits(hit_pid, pt=None, eta=None, volume=None, noise_pid=0):
    """Event dict with particles 1..P, given per-hit particle ids (0 = noise)."""
    hit_pid = np.asarray(hit_pid, dtype=np.uint64)
    n_part = int(hit_pid.max()) if len(hit_pid) else 0
    pt = np.full(n_part, 2.0) if pt is None else np.asarray(pt, float)
    eta = np.zeros(n_part) if eta is None else np.asarray(eta, float)
    phi = np.linspace(-3, 3, n_part)
    n = len(hit_pid)
    w = (hit_pid != 0).astype(np.float32)
    return {
        "event_id": np.uint64(3),
        "pileup": np.int32(10),
        "hit_id": np.arange(1, n + 1, dtype=np.uint64),
        "hit_x": np.cos(np.arange(n)).astype(np.float32) * 50,
        "hit_y": np.sin(np.arange(n)).astype(np.float32) * 50,
        "hit_z": np.linspace(-100, 100, n).astype(np.float32),
        "hit_particle_id": hit_pid,
        "hit_weight": w / max(w.sum(), 1),
        "hit_volume_id": np.full(n, 8, np.int32)
        if volume is None
        else np.asarray(volume, np.int32),
        "part_particle_id": np.arange(1, n_part + 1, dtype=np.uint64),
        "part_px": pt * np.cos(phi),
        "part_py": pt * np.sin(phi),
        "part_pz": pt * np.sinh(eta),
        "part_vertex_id": np.zeros(n_part, np.int32),
    }


def test_perfect_assignment():
    pid = np.repeat(np.arange(1, 6), 5)
    m, parts = evaluate_event(event_from_hits(pid), pid.astype(np.int64))
    assert m["trackml_score"] == pytest.approx(1.0)
    for k in ("dm_efficiency", "perfect_efficiency", "lhc_efficiency"):
        assert m[k] == 1.0
    assert m["fake_rate"] == 0.0 and m["duplicate_rate"] == 0.0
    assert parts.dm.all() and (parts.best_completeness == 1).all() and len(parts) == 5


def test_all_noise_prediction():
    pid = np.repeat(np.arange(1, 6), 5)
    m, parts = evaluate_event(event_from_hits(pid), np.full(len(pid), -1))
    assert m["trackml_score"] == 0.0 and m["dm_efficiency"] == 0.0
    assert math.isnan(m["fake_rate"]) and m["n_candidates"] == 0
    assert (parts.best_track == -1).all()


def test_single_hit_tracks_are_not_candidates():
    pid = np.repeat(np.arange(1, 4), 4)
    m, _ = evaluate_event(event_from_hits(pid), np.arange(len(pid)))
    assert m["n_candidates"] == 0 and m["dm_efficiency"] == 0.0 and m["trackml_score"] == 0.0


def test_split_track_is_duplicate_and_not_perfect():
    # particle 1: 8 hits split 5 + 3 (both pure), particle 2: 4 hits intact
    pid = np.array([1] * 8 + [2] * 4)
    tid = np.array([0] * 5 + [1] * 3 + [2] * 4)
    m, parts = evaluate_event(event_from_hits(pid), tid)
    assert (
        m["dm_efficiency"] == 1.0 and m["perfect_efficiency"] == 0.5 and m["lhc_efficiency"] == 1.0
    )
    assert m["duplicate_rate"] == pytest.approx(1 / 3) and m["fake_rate"] == 0.0
    assert parts.n_matched_tracks.tolist() == [2, 1] and parts.best_nhits.tolist() == [5, 4]


def test_merged_tracks_lose_minority_and_lhc():
    # particles 1 (6 hits) and 2 (4 hits) merged: 1 is DM-found (purity 0.6), 2 is lost
    pid = np.array([1] * 6 + [2] * 4)
    m, parts = evaluate_event(event_from_hits(pid), np.zeros(10, int))
    assert parts.dm.tolist() == [True, False] and not parts.lhc.any()  # purity 0.6 < 0.75
    assert m["fake_rate"] == 0.0 and m["dm_efficiency"] == 0.5


def test_tie_track_is_fake():
    pid = np.array([1, 1, 2, 2])
    m, parts = evaluate_event(event_from_hits(pid), np.zeros(4, int))
    assert m["fake_rate"] == 1.0 and not parts.dm.any()


def test_noise_majority_track_is_fake():
    pid = np.array([0, 0, 0, 1, 1, 1, 1])
    m, _ = evaluate_event(event_from_hits(pid), np.array([0, 0, 0, 0, 1, 1, 1]))
    assert m["n_candidates"] == 2 and m["n_fake"] == 1 and m["dm_efficiency"] == 1.0


def test_random_assignment_is_poor(rng):
    pid = np.repeat(np.arange(1, 201), 8)
    m, _ = evaluate_event(event_from_hits(pid), rng.integers(0, 200, len(pid)))
    assert m["dm_efficiency"] < 0.05 and m["fake_rate"] > 0.9 and m["trackml_score"] < 0.05


def test_reconstructable_definition():
    pid = np.array([1] * 5 + [2] * 5 + [3] * 2 + [4] * 5)
    ev = event_from_hits(pid, pt=[0.5, 2, 2, 2], eta=[0, 0, 0, 4.5], volume=[8] * 12 + [14] * 5)
    m, parts = evaluate_event(ev, pid.astype(int))
    assert parts.reconstructable.tolist() == [False, True, False, False]
    m, parts = evaluate_event(ev, pid.astype(int), Reconstructable(pt_min=0.0, abs_eta_max=5))
    assert parts.reconstructable.tolist() == [True, True, False, True]
    r = Reconstructable(pt_min=0.0, abs_eta_max=5, min_hits=2, pixel_only=True)
    m, parts = evaluate_event(ev, pid.astype(int), r)
    # particle 4 has no pixel hits
    assert parts.reconstructable.tolist() == [True, True, True, False]
    assert parts.region.tolist() == ["barrel"] * 3 + ["endcap"]
    # min_cluster_hits is configurable: the 2-hit track of particle 3 counts with 2
    _, parts = evaluate_event(ev, pid.astype(int), r, MatchingRules(min_cluster_hits=2))
    assert parts.dm.tolist() == [True, True, True, True]


def test_bad_event_raises():
    ev = event_from_hits(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="track_id has shape"):
        evaluate_event(ev, np.zeros(2, int))
    ev["hit_particle_id"] = np.array([1, 1, 9], np.uint64)
    with pytest.raises(ValueError, match="not in part_particle_id"):
        evaluate_event(ev, np.zeros(3, int))
    del ev["hit_weight"]
    with pytest.raises(KeyError, match="hit_weight"):
        evaluate_event(ev, np.zeros(3, int))


def test_breakdowns_and_aggregate(rng):
    pid = np.repeat(np.arange(1, 41), 5)
    pt = np.r_[np.full(20, 1.0), np.full(20, 5.0)]
    eta = np.r_[np.full(20, -2.5), np.full(20, 0.5)]
    ev = event_from_hits(pid, pt=pt, eta=eta)
    tid = np.where(pid <= 20, rng.integers(0, 1000, len(pid)), pid)  # low-pt half destroyed
    m, parts = evaluate_event(ev, tid)
    b = efficiency_breakdowns(parts)
    pt_tab = b["pt"].set_index("bin")
    assert pt_tab.loc["[0.9, 1.5)", "rate"] == 0.0 and pt_tab.loc["[5, 10)", "rate"] == 1.0
    assert pt_tab["n"].sum() == 40 and b["region"]["n"].sum() == 40
    assert b["pileup"]["lo"].tolist() == [10]
    fr = fake_rate_vs_eta(track_table(ev, tid))
    assert fr["n"].sum() == m["n_candidates"]
    agg = aggregate([m, m])
    assert agg["n_reconstructable"] == 2 * m["n_reconstructable"]
    assert agg["dm_efficiency"] == m["dm_efficiency"] == 0.5


def test_official_weights_option():
    from trackformers.data.synthetic import helix_events
    from trackformers.sim.weights import trackml_weights

    ev = helix_events(1, seed=5, n_particles=30)[0]
    pid = ev["hit_particle_id"].astype(np.int64)
    m, _ = evaluate_event(ev, pid, weights="official")
    assert m["trackml_score"] == pytest.approx(1.0)
    # splitting every track in halves by hit order: the official weights decide the score
    first = np.zeros(len(pid), bool)
    for p in np.unique(pid[pid > 0]):
        idx = np.flatnonzero(pid == p)
        first[idx[: (len(idx) + 1) // 2 + 1]] = True  # majority half (> 50 %) stays
    tid = np.where(first, pid, -1)
    w = trackml_weights(
        ev["hit_particle_id"],
        ev["hit_tz"],
        ev["part_particle_id"],
        ev["part_vz"],
        ev["part_px"],
        ev["part_py"],
    )
    good = first & np.isin(
        pid, [p for p in np.unique(pid) if p and first[pid == p].sum() * 2 > (pid == p).sum()]
    )
    m2, _ = evaluate_event(ev, tid, weights="official")
    assert m2["trackml_score"] == pytest.approx(w[good].sum())
    with pytest.raises(ValueError, match="weights must be"):
        evaluate_event(ev, pid, weights="bogus")
