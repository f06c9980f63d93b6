"""Realism of mu = 200 ttbar events against TrackML numbers (DESIGN.md)."""

import numpy as np
import pytest

from trackformers.sim.events import EventFactory
from trackformers.sim.geometry import CYLINDER, load_geometry
from trackformers.sim.noise import TRACKML_NOISE_FRACTION

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def events():
    f = EventFactory({"process": {"name": "ttbar"}, "pileup": 200, "seed": 1})
    return [f.event(i) for i in range(4)]


def test_particle_and_hit_counts(events):
    n_part = np.mean([len(e["part_particle_id"]) for e in events])
    # particle hits (TrackML event 1000: 103 305, plus 17 634 noise hits checked apart)
    n_hit = np.mean([(e["hit_particle_id"] != 0).sum() for e in events])
    n_pix = np.mean(
        [
            (np.isin(e["hit_volume_id"], [7, 8, 9]) & (e["hit_particle_id"] != 0)).sum()
            for e in events
        ]
    )
    n_noise = np.mean([(e["hit_particle_id"] == 0).sum() for e in events])
    assert n_noise == pytest.approx(TRACKML_NOISE_FRACTION * n_hit, rel=0.03)  # default noise
    # TrackML event 1000: 12 263 particles, 3 695 (30.1 %) of them starting >= 1 mm from the
    # beam line (decays, nuclear interactions), 103 305 particle hits; the goal is the
    # hits within 10 % and that share within a factor 1.5 (BENCHMARKS.md, "Soft particles and
    # secondaries against TrackML": these 4 events 12 277 particles, 28.8 %, 106 092 hits; with
    # photon conversions on, which TrackML's simulation lacked, 116 146 hits)
    assert 10_500 <= n_part <= 15_500, n_part
    assert 0.9 * 103_305 <= n_hit <= 1.1 * 103_305, n_hit
    displaced = np.mean([np.mean(np.hypot(e["part_vx"], e["part_vy"]) >= 1.0) for e in events])
    assert 3695 / 12263 / 1.5 <= displaced <= 3695 / 12263 * 1.5, displaced
    assert 55_000 <= n_pix <= 75_000, n_pix
    assert np.mean([e["pileup"] for e in events]) == pytest.approx(200, abs=4 * np.sqrt(200 / 4))


def _straight_line_layers(geo, eta, vz):
    """Sensitive layers a straight line from (0, 0, vz) at pseudorapidity eta crosses."""
    sh = np.sinh(eta)
    n = np.zeros(len(eta))
    for j in np.flatnonzero(geo.sensitive):
        if geo.kind[j] == CYLINDER:
            z = vz + geo.pos[j] * sh
            n += (z >= geo.lo[j]) & (z <= geo.hi[j])
        else:
            r = (geo.pos[j] - vz) / sh
            n += (r >= geo.lo[j]) & (r <= geo.hi[j])
    return n


@pytest.fixture(scope="module")
def events_without_interactions():
    """The same events with the material interactions off: a particle stops only where the
    geometry ends it, so the layer counts test the propagation alone."""
    detector = {"conversions": False, "nuclear_interactions": False}
    f = EventFactory({"process": {"name": "ttbar"}, "pileup": 200, "seed": 1, "detector": detector})
    return [f.event(i) for i in range(4)]


def test_high_pt_particles_cross_ten_layers(events_without_interactions):
    """Distinct layers of charged particles with pT > 0.9 GeV.

    The TrackML geometry (DESIGN.md) bounds this: a straight line from the beam line crosses
    10 layers at abs(eta) < 0.6, 9.4-9.5 in the barrel/endcap transition (abs(eta) 1-1.5), up
    to 10.6 at abs(eta) 2-2.5 and only pixel disks beyond abs(eta) 3.2. With the eta spectrum of
    mu = 200 ttbar (24 % of these particles at abs(eta) >= 3, 7 % displaced secondaries) the
    geometric mean is 9.07 over abs(eta) <= 4.2 and 9.93 over abs(eta) < 2.5; the simulation
    gives 8.97 and 9.77 (efficiency 0.99). Nuclear interactions, which end a hadron's track
    early as in TrackML, are switched off here (their rate is tested in test_sim_interactions).
    So: ~10 layers in abs(eta) < 2.5, ~9 over everything,
    and prompt particles must match the geometric count per eta bin (gaps, early stops and lost
    crossings would show there).
    """
    geo = load_geometry()
    hits, layers, expected, abs_eta, prompt = [], [], [], [], []
    for e in events_without_interactions:
        pt = np.hypot(e["part_px"], e["part_py"])
        sel = (pt > 0.9) & (e["part_q"] != 0)
        pid = e["part_particle_id"][sel].astype(np.int64)
        eta = np.arcsinh(e["part_pz"][sel] / pt[sel])
        hits.append(e["part_nhits"][sel])
        h = np.isin(e["hit_particle_id"].astype(np.int64), pid)
        key = np.unique(
            np.stack(
                [
                    e["hit_particle_id"][h].astype(np.int64),
                    e["hit_volume_id"][h],
                    e["hit_layer_id"][h],
                ]
            ),
            axis=1,
        )
        owner, n_layers = np.unique(key[0], return_counts=True)
        order = np.argsort(pid)
        per_part = np.zeros(len(pid))
        per_part[order[np.searchsorted(pid[order], owner)]] = n_layers
        layers.append(per_part)
        expected.append(_straight_line_layers(geo, eta, e["part_vz"][sel]))
        abs_eta.append(np.abs(eta))
        prompt.append(np.hypot(e["part_vx"][sel], e["part_vy"][sel]) < 1.0)
    hits, layers, expected, abs_eta, prompt = map(
        np.concatenate, (hits, layers, expected, abs_eta, prompt)
    )
    # hits per particle: distinct layers plus second hits where modules overlap in phi
    assert 10.0 <= hits.mean() <= 11.5, hits.mean()
    assert 8.8 <= layers.mean() <= 9.3, layers.mean()  # full detector, geometric 9.07
    central = abs_eta < 2.5
    assert 9.6 <= layers[central].mean() <= 10.1, layers[central].mean()  # geometric 9.93
    for lo in np.arange(0.0, 4.0, 0.5):
        b = prompt & (abs_eta >= lo) & (abs_eta < lo + 0.5)
        diff = layers[b].mean() - 0.99 * expected[b].mean()  # efficiency 0.99
        assert abs(diff) < 0.15, (lo, layers[b].mean(), expected[b].mean())


def test_hits_on_layer_surfaces(events):
    geo = load_geometry()
    e = events[0]
    surface = {
        (v, lay): i for i, (v, lay) in enumerate(zip(geo.volume_id, geo.layer_id, strict=True))
    }
    s = np.asarray([surface[k] for k in zip(e["hit_volume_id"], e["hit_layer_id"], strict=True)])
    cyl = geo.kind[s] == CYLINDER
    r = np.hypot(e["hit_x"], e["hit_y"])
    assert np.abs(r[cyl] - geo.pos[s[cyl]]).max() < 1e-3 * geo.pos[s[cyl]].max()
    assert np.abs(e["hit_z"][~cyl] - geo.pos[s[~cyl]]).max() < 1e-3
    assert np.all(np.abs(e["hit_z"][cyl]) <= geo.hi[s[cyl]] + 1e-3)  # inside the sensors
    assert np.all((r[~cyl] >= geo.lo[s[~cyl]] - 1e-3) & (r[~cyl] <= geo.hi[s[~cyl]] + 1e-3))
