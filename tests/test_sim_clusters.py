"""Pixel/strip cells per hit (trackformers.sim.clusters) and the cluster-shape features."""

from pathlib import Path

import numpy as np
import pytest

from trackformers.data.chunk import EventChunk
from trackformers.data.features import FeatureConfig, hit_features
from trackformers.sim.clusters import cluster_summary
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.geometry import load_geometry
from trackformers.sim.particle_id import encode_particle_id

MU_MASS = 0.1056584


@pytest.fixture(scope="module")
def geo():
    return load_geometry()


def _muons(eta, pt=10.0, seed=0):
    """Particle table of muons from the origin at pseudorapidities ``eta``."""
    eta = np.asarray(eta, float)
    n = len(eta)
    phi = np.random.default_rng(seed).uniform(-np.pi, np.pi, n)
    return {
        "particle_id": encode_particle_id(np.zeros(n), np.arange(n)),
        "pdg_id": np.full(n, 13.0),
        "vertex_id": np.zeros(n),
        "vx": np.zeros(n),
        "vy": np.zeros(n),
        "vz": np.zeros(n),
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "q": np.full(n, -1.0),
        "mass": np.full(n, MU_MASS),
    }


def _sim(geo, parts, seed=1, **cfg):
    cfg = {"scattering": False, "energy_loss": False, **cfg}
    return DetectorSim(DetectorConfig(**cfg), geo).simulate(parts, event_id=0, pileup=0, seed=seed)


def test_steeper_barrel_track_gives_longer_cluster_along_z(geo):
    sizes = {}
    for eta in (0.1, 1.0, 1.8):
        ev = _sim(geo, _muons(np.full(40, eta)))
        pix = ev["hit_volume_id"] == 8
        assert pix.sum() >= 100
        sizes[eta] = ev["hit_size_v"][pix].mean()
        # the projected path T sinh(eta) over the 56.25 um pitch, plus the partial cell
        expected = 0.15 * np.sinh(eta) / 0.05625 + 1
        assert abs(sizes[eta] - expected) < 1.0, (eta, sizes[eta], expected)
        assert np.median(ev["hit_size_u"][pix]) <= 2  # stiff track: short along r*phi
    assert sizes[0.1] < sizes[1.0] < sizes[1.8]
    # local eta falls as the cluster grows (a direction estimate independent of the vertex)
    leta = {eta: _sim(geo, _muons(np.full(20, eta)))["hit_leta"][:10].mean() for eta in (0.1, 1.8)}
    assert leta[0.1] > leta[1.8]


def test_every_hit_has_cells_with_positive_charge_noise_included(geo):
    parts = _muons(np.random.default_rng(3).uniform(-3, 3, 60), pt=1.0)
    ev = _sim(geo, parts, scattering=True, energy_loss=True, noise_fraction=0.3)
    noise = ev["hit_particle_id"] == 0
    assert noise.sum() > 10
    assert (ev["hit_ncells"] >= 1).all() and (ev["hit_charge"] > 0).all()
    assert (ev["cell_value"] > 0).all()
    assert ev["hit_ncells"][noise].max() <= 2
    # cells reference the event's hits, grouped by hit, and add up to the summary
    row = np.searchsorted(ev["hit_id"], ev["cell_hit_id"])
    assert (ev["hit_id"][row] == ev["cell_hit_id"]).all() and (np.diff(row) >= 0).all()
    assert (np.bincount(row, minlength=len(ev["hit_id"])) == ev["hit_ncells"]).all()
    charge = np.bincount(row, weights=ev["cell_value"].astype(float), minlength=len(row))
    np.testing.assert_allclose(charge[: len(ev["hit_id"])], ev["hit_charge"], rtol=1e-6)
    assert (ev["cell_ch0"] >= 0).all() and (ev["cell_ch1"] >= 0).all()
    # pixel barrel modules are at most 16.8 x 72 mm (ACTS: 336 x 1280 cells)
    pix = ev["hit_volume_id"][row] == 8
    assert ev["cell_ch0"][pix].max() < 336 and ev["cell_ch1"][pix].max() < 1280
    # strips (1.2 / 10.4 mm long) rarely span more than a few cells along v
    strip = ~np.isin(ev["hit_volume_id"], (7, 8, 9))
    assert np.median(ev["hit_size_v"][strip]) <= 2


def test_cells_are_reproducible_and_depend_on_the_seed(geo):
    parts = _muons(np.linspace(-2, 2, 20))
    a, b, c = _sim(geo, parts, 5), _sim(geo, parts, 5), _sim(geo, parts, 6)
    for k in ("cell_hit_id", "cell_ch0", "cell_ch1", "cell_value", "hit_charge"):
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["cell_value"], c["cell_value"])


def test_clusters_can_be_switched_off(geo):
    ev = _sim(geo, _muons([0.5]), clusters=False)
    assert "hit_ncells" not in ev and "cell_hit_id" not in ev


def test_cluster_summary_of_hand_made_cells():
    row = np.array([0, 0, 0, 2])
    ch0 = np.array([10, 10, 11, 5])
    ch1 = np.array([20, 22, 21, 7])
    val = np.array([0.01, 0.02, 0.03, 0.05], np.float32)
    pitch = np.full(3, 0.05)
    out = cluster_summary(row, ch0, ch1, val, 3, pitch, pitch, np.full(3, 0.15))
    assert out["hit_ncells"].tolist() == [3, 0, 1]
    assert out["hit_size_u"].tolist() == [2, 0, 1] and out["hit_size_v"].tolist() == [3, 0, 1]
    np.testing.assert_allclose(out["hit_charge"], [0.06, 0.0, 0.05], rtol=1e-6)
    np.testing.assert_allclose(out["hit_leta"][0], np.arcsinh(0.15 / np.hypot(0.1, 0.15)))
    np.testing.assert_allclose(out["hit_lphi"][0], np.arctan2(0.15, 0.1), rtol=1e-6)
    assert out["hit_leta"][1] == 0 and out["hit_lphi"][1] == 0
    with pytest.raises(ValueError, match="grouped by hit"):
        cluster_summary(row[::-1], ch0, ch1, val, 3, pitch, pitch, np.full(3, 0.15))
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 2\), got 0..2"):
        cluster_summary(row, ch0, ch1, val, 2, pitch[:2], pitch[:2], np.full(2, 0.15))


def test_cluster_features_are_selectable_with_their_scales(geo):
    cfg = FeatureConfig(features=("z", "ncells", "size_v", "leta", "lphi", "charge"))
    assert {"hit_ncells", "hit_size_v", "hit_leta", "hit_lphi", "hit_charge"} <= set(
        cfg.hit_fields()
    )
    ev = _sim(geo, _muons(np.linspace(-1, 1, 10)))
    chunk = EventChunk.from_events([ev])
    x = hit_features(chunk.hits, cfg)  # (N, 6)
    np.testing.assert_allclose(x[:, 1], ev["hit_ncells"] * 0.1, rtol=1e-6)
    np.testing.assert_allclose(x[:, 2], ev["hit_size_v"] * 0.1, rtol=1e-6)
    np.testing.assert_allclose(x[:, 4], ev["hit_lphi"] * 2 / np.pi, rtol=1e-6)
    assert 0 <= x[:, 4].min() and x[:, 4].max() <= 1
    np.testing.assert_allclose(x[:, 5], ev["hit_charge"] * 10, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown hit feature"):
        FeatureConfig(features=("ncell",))


def test_cluster_features_read_from_native_files(tmp_path):
    from trackformers.data import reader
    from trackformers.data.errors import DataError
    from trackformers.data.synthetic import helix_events
    from trackformers.sim.writer import write_events

    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "gun"
    cfg = FeatureConfig(features=("x", "ncells", "leta"))
    chunk = next(reader.iter_chunks(sample, hit_fields=cfg.hit_fields()))
    x = hit_features(chunk.hits, cfg)  # (N, 3)
    assert (x[:, 1] >= 0.1).all() and np.isfinite(x).all()
    # a file without cells names the missing branch
    write_events(tmp_path / "plain.root", helix_events(1, seed=1, first_id=0), {})
    with pytest.raises(DataError, match="hit_ncells"):
        next(reader.iter_chunks(tmp_path / "plain.root", hit_fields=cfg.hit_fields()))
