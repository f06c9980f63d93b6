"""TrackML score: hand-built cases and equality with a port of the official library loop."""

import numpy as np
import pandas as pd
import pytest

from trackformers.metrics import analyze_tracks, match_tracks, score_event, trackml_score


def official_score(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Line-by-line port of trackml-library score._analyze_tracks + score_event."""
    particles_nhits = truth["particle_id"].value_counts(sort=False)
    total_weight = truth["weight"].sum()
    event = pd.merge(
        truth[["hit_id", "particle_id", "weight"]],
        submission[["hit_id", "track_id"]],
        on=["hit_id"],
        how="left",
        validate="one_to_one",
    )
    event = event.drop("hit_id", axis=1).sort_values(by=["track_id", "particle_id"])
    tracks = []
    rec_track_id, rec_nhits = -1, 0
    cur_particle_id, cur_nhits, cur_weight = -1, 0, 0
    maj_particle_id, maj_nhits, maj_weight = -1, 0, 0
    first = True
    for hit in event.itertuples(index=False):
        if not first and rec_track_id != hit.track_id:
            if maj_nhits < cur_nhits:
                maj_particle_id, maj_nhits, maj_weight = cur_particle_id, cur_nhits, cur_weight
            tracks.append(
                (rec_nhits, particles_nhits[maj_particle_id], maj_nhits, maj_weight / total_weight)
            )
        if first or rec_track_id != hit.track_id:
            first = False
            rec_track_id, rec_nhits = hit.track_id, 1
            cur_particle_id, cur_nhits, cur_weight = hit.particle_id, 1, hit.weight
            maj_particle_id, maj_nhits = -1, 0
            continue
        rec_nhits += 1
        if cur_particle_id != hit.particle_id:
            if maj_nhits < cur_nhits:
                maj_particle_id, maj_nhits, maj_weight = cur_particle_id, cur_nhits, cur_weight
            cur_particle_id, cur_nhits, cur_weight = hit.particle_id, 1, hit.weight
        else:
            cur_nhits += 1
            cur_weight += hit.weight
    if maj_nhits < cur_nhits:
        maj_particle_id, maj_nhits, maj_weight = cur_particle_id, cur_nhits, cur_weight
    tracks.append(
        (rec_nhits, particles_nhits[maj_particle_id], maj_nhits, maj_weight / total_weight)
    )
    t = np.array(tracks, dtype=float)
    good = (0.5 < t[:, 2] / t[:, 0]) & (0.5 < t[:, 2] / t[:, 1])
    return float(t[good, 3].sum())


def make_event(rng, n_particles=60, noise=40):
    nh = rng.integers(1, 15, n_particles)
    pid = np.concatenate([np.full(n, i + 1) for i, n in enumerate(nh)] + [np.zeros(noise, int)])
    w = rng.random(len(pid))
    w[pid == 0] = 0
    w[np.isin(pid, np.flatnonzero(nh < 4) + 1)] = 0
    truth = pd.DataFrame(
        {"hit_id": rng.permutation(len(pid)) + 1, "particle_id": pid, "weight": w / w.sum()}
    )
    return truth


def test_perfect_assignment_scores_one(rng):
    truth = make_event(rng)
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": truth.particle_id})
    assert score_event(truth, sub) == pytest.approx(1.0)


def test_all_noise_and_single_hit_tracks_score_zero(rng):
    truth = make_event(rng)
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": np.zeros(len(truth), int)})
    assert score_event(truth, sub) == 0.0  # one track of everything: no majority > 50 %
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": np.arange(len(truth))})
    assert score_event(truth, sub) == 0.0  # every hit alone: completeness <= 1/4 for weighted ones
    # array API: unassigned (-1) hits form no track
    assert (
        trackml_score(-np.ones(len(truth), int), truth.particle_id.to_numpy(), truth.weight) == 0.0
    )


@pytest.mark.parametrize("seed", range(8))
def test_equals_official_algorithm_on_random_assignments(seed):
    rng = np.random.default_rng(seed)
    truth = make_event(rng)
    # mixture: partly correct, partly random labels, with some shuffled hit order
    tid = np.where(rng.random(len(truth)) < 0.7, truth.particle_id, rng.integers(0, 80, len(truth)))
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": tid}).sample(frac=1, random_state=seed)
    assert score_event(truth, sub) == pytest.approx(official_score(truth, sub), abs=1e-12)


def test_split_and_merged_tracks():
    # particle 1: 6 hits, particle 2: 4 hits, equal weight per hit
    pid = np.array([1] * 6 + [2] * 4)
    w = np.full(10, 0.1)
    # split 1 into 4 + 2: the 4-hit part is good (4/6 > 0.5); particle 2 intact
    assert trackml_score(np.array([0] * 4 + [1] * 2 + [2] * 4), pid, w) == pytest.approx(0.8)
    # split 1 into 3 + 3: neither part holds > 50 %
    assert trackml_score(np.array([0] * 3 + [1] * 3 + [2] * 4), pid, w) == pytest.approx(0.4)
    # merge both: majority 1 with purity 0.6 and completeness 1 → 0.6
    assert trackml_score(np.zeros(10, int), pid, w) == pytest.approx(0.6)


def test_ties_take_smallest_particle_id():
    pid = np.array([7, 7, 3, 3, 5])
    m = match_tracks(np.zeros(5, int), pid)
    assert m.major_particle_id.tolist() == [3] and m.major_nhits.tolist() == [2]
    # a 50/50 track is never good
    assert trackml_score(np.zeros(4, int), np.array([1, 1, 2, 2]), np.ones(4)) == 0.0


def test_random_assignment_scores_low(rng):
    truth = make_event(rng, n_particles=500, noise=0)
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": rng.integers(0, 500, len(truth))})
    assert score_event(truth, sub) < 0.05


def test_analyze_tracks_columns(rng):
    truth = make_event(rng)
    sub = pd.DataFrame({"hit_id": truth.hit_id, "track_id": truth.particle_id})
    t = analyze_tracks(truth, sub)
    assert (t.nhits == t.major_nhits).all() and t.major_weight.sum() == pytest.approx(1.0)


def test_bad_submissions_raise(rng):
    truth = make_event(rng)
    sub = pd.DataFrame({"hit_id": truth.hit_id[1:], "track_id": 0})
    with pytest.raises(ValueError, match="missing"):
        score_event(truth, sub)
    with pytest.raises(ValueError, match="duplicate"):
        score_event(truth, pd.concat([sub, sub]))
    with pytest.raises(ValueError, match="lacks column"):
        score_event(truth, sub.rename(columns={"track_id": "tid"}))
    with pytest.raises(ValueError, match="weights must be finite"):
        trackml_score(np.zeros(2, int), np.ones(2, int), np.array([np.nan, 1.0]))
