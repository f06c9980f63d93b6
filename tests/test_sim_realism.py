"""Realism of mu = 200 ttbar events against TrackML numbers (DESIGN.md, issue 3 point 5)."""

import numpy as np
import pytest

from trackformers.sim.events import EventFactory
from trackformers.sim.geometry import CYLINDER, load_geometry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def events():
    f = EventFactory({"process": {"name": "ttbar"}, "pileup": 200, "seed": 1})
    return [f.event(i) for i in range(4)]


def test_particle_and_hit_counts(events):
    n_part = np.mean([len(e["part_particle_id"]) for e in events])
    n_hit = np.mean([len(e["hit_id"]) for e in events])
    n_pix = np.mean([np.isin(e["hit_volume_id"], [7, 8, 9]).sum() for e in events])
    assert 9_000 <= n_part <= 11_500, n_part
    assert 100_000 <= n_hit <= 120_000, n_hit
    assert 55_000 <= n_pix <= 75_000, n_pix
    assert np.mean([e["pileup"] for e in events]) == pytest.approx(200, abs=4 * np.sqrt(200 / 4))


def test_high_pt_particles_cross_ten_layers(events):
    hits, layers = [], []
    for e in events:
        pt = np.hypot(e["part_px"], e["part_py"])
        hits.append(e["part_nhits"][pt > 0.9].mean())
        good = e["part_particle_id"][pt > 0.9]
        sel = np.isin(e["hit_particle_id"], good)
        key = np.unique(
            np.stack(
                [
                    e["hit_particle_id"][sel].astype(np.int64),
                    e["hit_volume_id"][sel],
                    e["hit_layer_id"][sel],
                ]
            ),
            axis=1,
        )
        layers.append(np.bincount(np.unique(key[0], return_inverse=True)[1]).mean())
    assert 9.5 <= np.mean(hits) <= 11.5, hits  # hits per particle (overlaps give 2 per layer)
    assert 8.5 <= np.mean(layers) <= 11.0, layers  # distinct layers crossed


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
