"""Soft particles and material secondaries: loop protection, p_min, photon conversions, nuclear
interactions, secondary truth (ids, parents, process) and its round trip through ROOT."""

import numpy as np
import pytest

from trackformers.data import schema
from trackformers.data.reader import read_events
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.geometry import CYLINDER, load_geometry
from trackformers.sim.interactions import (
    PROCESS_CONVERSION,
    PROCESS_NUCLEAR,
    conversion_products,
    nuclear_products,
    transport,
)
from trackformers.sim.particle_id import (
    decode_generation,
    decode_vertex_id,
    encode_particle_id,
)
from trackformers.sim.propagate import (
    C_LIGHT,
    CONVERSION,
    ELECTRON,
    HADRON,
    KAON,
    NUCLEAR,
    NUCLEON,
    OTHER,
    PHOTON,
    PION,
    absorption_scale,
    pair_production_fraction,
    propagate,
    species_of,
)
from trackformers.sim.writer import write_events

PI_MASS = 0.13957


@pytest.fixture(scope="module")
def geo():
    return load_geometry()


def _particles(p_t, eta=0.0, n=1, q=1.0, pdg=211, mass=PI_MASS, vertex_id=0):
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    p_t = np.full(n, float(p_t))
    return {
        "particle_id": encode_particle_id(np.full(n, vertex_id), np.arange(n)),
        "pdg_id": np.full(n, pdg),
        "vertex_id": np.full(n, vertex_id),
        "vx": np.zeros(n),
        "vy": np.zeros(n),
        "vz": np.zeros(n),
        "px": p_t * np.cos(phi),
        "py": p_t * np.sin(phi),
        "pz": p_t * np.sinh(eta),
        "q": np.full(n, q),
        "mass": np.full(n, mass),
    }


def _run(geo, t, **kw):
    kw = {"efficiency": 1.0, "scattering": False, "energy_loss": False, "seed": 3, **kw}
    vtx = np.stack([t["vx"], t["vy"], t["vz"]], 1)
    mom = np.stack([t["px"], t["py"], t["pz"]], 1)
    return propagate(geo, vtx, mom, t["q"], t["mass"], t["pdg_id"], **kw)


def test_soft_particle_stops_after_the_loop_fraction(geo):
    t = _particles(0.15, eta=0.0)
    free = _run(geo, t, loop_fraction=0.0)
    half = _run(geo, t, loop_fraction=0.5)
    assert len(free["particle"]) > 20  # a looper crosses its layers again and again
    assert 3 <= len(half["particle"]) <= 7  # pixel layers + the strip layers within 2 R
    # every kept crossing lies within half a turn: on the way out, radius growing
    r = np.hypot(half["pos"][:, 0], half["pos"][:, 1])
    assert np.all(np.diff(r) > 0)
    radius = 0.15 / (C_LIGHT * geo.field_tesla)
    assert r.max() <= 2 * radius
    # the free looper reaches no further out (same helix), but keeps crossing
    np.testing.assert_allclose(free["pos"][: len(r)], half["pos"])


def test_hard_particle_is_unchanged_by_loop_protection(geo):
    t = _particles(1.0, eta=0.5, n=20)
    a = _run(geo, t, loop_fraction=0.0, scattering=True, energy_loss=True)
    b = _run(geo, t, loop_fraction=0.5, scattering=True, energy_loss=True)
    np.testing.assert_array_equal(a["particle"], b["particle"])
    np.testing.assert_array_equal(a["pos"], b["pos"])


def test_particles_below_p_min_are_not_simulated(geo):
    t = _particles(0.15, eta=0.0, n=10)
    assert len(_run(geo, t, p_min=0.2)["particle"]) == 0
    assert len(_run(geo, t, p_min=0.1)["particle"]) > 0


def _radial_material(geo):
    """Sum of x/X0 of the cylinders a straight line at eta = 0 from the origin crosses."""
    cyl = (geo.kind == CYLINDER) & (geo.lo <= 0) & (geo.hi >= 0) & ~geo.kill
    return float(geo.x_over_x0[cyl].sum())


@pytest.mark.parametrize("energy", [0.2, 1.0, 20.0])
def test_photon_conversion_rate_follows_7_9_x_over_x0_times_tsai(geo, energy):
    n = 20000
    t = _particles(energy, eta=0.0, n=n, q=0.0, pdg=22, mass=0.0)
    out = _run(geo, t, conversions=True, loop_fraction=0.5)
    assert len(out["particle"]) == 0  # photons leave no hits
    assert np.all(out["int_kind"] == CONVERSION)
    expect = -np.expm1(-7 / 9 * pair_production_fraction(energy) * _radial_material(geo))
    got = len(out["int_kind"]) / n
    assert abs(got - expect) < 4 * np.sqrt(expect * (1 - expect) / n)
    r = np.hypot(out["int_pos"][:, 0], out["int_pos"][:, 1])
    assert set(np.round(r, 6)) <= set(np.round(geo.pos[geo.kind == CYLINDER], 6))
    assert len(_run(geo, t, conversions=False)["int_kind"]) == 0


def test_pair_production_fraction_follows_tsai():
    # ATLAS Fatras' fit to Tsai (1974): 0.70 of the high-energy cross section at 0.1 GeV,
    # 0.93 at 1 GeV, 0.99 at 10 GeV, rising with the energy and never above 1
    assert pair_production_fraction(0.1) == pytest.approx(0.695, abs=2e-3)
    assert pair_production_fraction(1.0) == pytest.approx(0.930, abs=2e-3)
    assert pair_production_fraction(10.0) == pytest.approx(0.988, abs=2e-3)
    f = [pair_production_fraction(e) for e in np.geomspace(0.05, 1e4, 50)]
    assert np.all(np.diff(f) >= 0) and max(f) <= 1.0 and min(f) >= 0.0


def test_species_and_their_absorption_length():
    pdg = np.array([211, -211, 111, 2212, -2212, 2112, 321, 130, 310, 3222, 22, 11, 13])
    want = [PION] * 3 + [NUCLEON] * 3 + [KAON] * 3 + [HADRON, PHOTON, ELECTRON, OTHER]
    np.testing.assert_array_equal(species_of(pdg), want)
    # Fatras: nucleons 0.7 lambda_I, pions 0.9, half of that (kaons: half) at the Delta(1232)
    # resonance (p = 0.27 GeV), other hadrons lambda_I
    assert absorption_scale(NUCLEON, 5.0) == pytest.approx(0.7)
    assert absorption_scale(PION, 5.0) == pytest.approx(0.9)
    assert absorption_scale(PION, 0.27) == pytest.approx(0.45)
    assert absorption_scale(KAON, 0.27) == pytest.approx(0.5)
    assert absorption_scale(KAON, 5.0) == pytest.approx(1.0)
    assert absorption_scale(HADRON, 0.27) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("pdg", "mass", "scale"), [(211, PI_MASS, 0.9), (2212, 0.938272, 0.7), (3222, 1.18937, 1.0)]
)
def test_nuclear_interaction_rate_follows_lambda(geo, pdg, mass, scale):
    n = 20000
    t = _particles(5.0, eta=0.0, n=n, pdg=pdg, mass=mass)
    flat = _run(geo, t, nuclear=True, lambda_over_x0=2.0)
    per_species = _run(geo, t, nuclear=True, lambda_over_x0=2.0, nuclear_per_species=True)
    for out, lam in ((flat, 2.0), (per_species, 2.0 * scale)):
        assert np.all(out["int_kind"] == NUCLEAR)
        expect = -np.expm1(-_radial_material(geo) / lam)
        got = len(out["int_kind"]) / n
        assert abs(got - expect) < 4 * np.sqrt(expect * (1 - expect) / n)
    # a muon does not interact
    mu = _particles(5.0, n=2000, pdg=13, mass=0.1057)
    assert len(_run(geo, mu, nuclear=True, lambda_over_x0=2.0)["int_kind"]) == 0


def test_default_detector_has_no_photon_conversions_as_trackml(geo):
    """TrackML's Fatras had no photon conversions, so the default detector makes none; the
    option turns them on."""
    photons = _particles(2.0, eta=0.5, n=3000, q=0.0, pdg=22, mass=0.0)
    ev = DetectorSim(geometry=geo).simulate(photons, event_id=0, pileup=0, seed=1)
    assert len(ev["part_particle_id"]) == 0 and len(ev["hit_id"]) == 0
    ev = DetectorSim(DetectorConfig(conversions=True), geo).simulate(
        photons, event_id=0, pileup=0, seed=1
    )
    assert (ev["part_process"] == PROCESS_CONVERSION).sum() > 500


def test_conversion_products_conserve_momentum_and_charge():
    rng = np.random.default_rng(0)
    mom = rng.normal(0, 2.0, (500, 3))
    prod = conversion_products(mom, rng)
    assert len(prod["p"]) == 1000
    np.testing.assert_array_equal(prod["q"].reshape(-1, 2), [[-1.0, 1.0]] * 500)
    total = prod["p"].reshape(500, 2, 3).sum(1)
    np.testing.assert_allclose(total, mom, atol=5e-3)  # opening angles of order m_e / E


def test_nuclear_products_share_the_incoming_momentum():
    rng = np.random.default_rng(1)
    mom = np.tile([0.0, 0.0, 10.0], (300, 1))
    prod = nuclear_products(mom, rng)
    assert np.all(np.bincount(prod["parent"], minlength=300) >= 1)
    assert set(np.abs(prod["pdg"]).tolist()) <= {211, 2212}
    assert np.all(np.abs(prod["q"]) == 1)
    p_long = np.bincount(prod["parent"], weights=prod["p"][:, 2])
    assert np.all(p_long < 10.0) and np.all(p_long > 0)


def test_transport_lists_secondaries_with_their_truth(geo):
    photons = _particles(2.0, eta=0.3, n=3000, q=0.0, pdg=22, mass=0.0, vertex_id=7)
    pions = _particles(3.0, eta=-0.3, n=3000, vertex_id=9)
    pions["particle_id"] = encode_particle_id(np.full(3000, 9), np.arange(3000))
    table = {k: np.concatenate([photons[k], pions[k]]) for k in photons}
    hits, out = transport(
        geo, table, seed=1, efficiency=1.0, loop_fraction=0.5, conversions=True, nuclear=True
    )
    assert out["particle_id"].dtype == np.uint64
    assert len(np.unique(out["particle_id"])) == len(out["particle_id"])
    assert np.all(out["q"] != 0)  # photons are followed but not listed
    n_pi = 3000
    np.testing.assert_array_equal(out["particle_id"][:n_pi], pions["particle_id"])
    sec = out["process"] > 0
    conv, nuc = out["process"] == PROCESS_CONVERSION, out["process"] == PROCESS_NUCLEAR
    assert conv.sum() > 100 and nuc.sum() > 50
    # a secondary keeps its parent's vertex, is one generation younger, starts on a surface
    assert np.all(decode_vertex_id(out["particle_id"][conv]) == 7)
    assert np.all(decode_vertex_id(out["parent_id"][conv]) == 7)
    # nuclear products come from the pions or (next generation) from earlier products
    assert set(out["parent_id"][nuc].tolist()) <= set(out["particle_id"].tolist())
    assert np.isin(out["parent_id"][nuc], pions["particle_id"]).any()
    gen = decode_generation(out["particle_id"])
    assert np.all(gen[sec] == decode_generation(out["parent_id"][sec]) + 1)
    assert np.all(out["parent_id"][~sec] == 0)
    r = np.hypot(out["vx"][sec], out["vy"][sec])
    assert r.min() >= 19.0 - 1e-6  # no interaction before the beam pipe (r = 19 mm)
    # hits index the listed table, and conversion electrons leave hits
    assert hits["particle"].max() < len(out["particle_id"])
    assert np.isin(np.flatnonzero(conv), hits["particle"]).any()


def test_particle_id_packs_generation_exactly():
    vid = np.array([0, 1, 4095, 2**31 - 1])
    pid = encode_particle_id(vid, np.array([0, 5, 2**24 - 2, 77]), np.array([0, 1, 2, 255]))
    np.testing.assert_array_equal(decode_vertex_id(pid), vid)
    np.testing.assert_array_equal(decode_generation(pid), [0, 1, 2, 255])
    assert int(pid[3]) == ((2**31 - 1) << 32) | (255 << 24) | 78  # exact, no float64
    with pytest.raises(ValueError, match="generation"):
        encode_particle_id([0], [0], [256])
    with pytest.raises(ValueError, match="index"):
        encode_particle_id([0], [2**24])


def test_secondary_truth_survives_root_round_trip(tmp_path, geo):
    sim = DetectorSim(DetectorConfig(p_min=0.01), geometry=geo)
    t = _particles(3.0, eta=0.2, n=400, vertex_id=3)
    ev = sim.simulate(t, event_id=1, pileup=3, seed=2)
    assert (ev["part_process"] == PROCESS_NUCLEAR).any()
    assert ev["part_parent_id"].dtype == schema.PARTICLE_BRANCHES["part_parent_id"]
    path = tmp_path / "s.root"
    write_events(path, [ev], {"x": 1})
    (back,) = read_events(path)
    np.testing.assert_array_equal(back["part_parent_id"], ev["part_parent_id"])
    np.testing.assert_array_equal(back["part_process"], ev["part_process"])
    np.testing.assert_array_equal(back["part_particle_id"], ev["part_particle_id"])


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="loop_fraction"):
        DetectorConfig(loop_fraction=-1).check()
    with pytest.raises(ValueError, match="lambda_over_x0"):
        DetectorConfig(lambda_over_x0=0).check()


def test_colliding_secondary_ids_are_refused(geo):
    t = _particles(3.0, n=2000)
    # an input particle already holds the id the first secondary of vertex 0 would get
    t["particle_id"][-1] = encode_particle_id([0], [0], [1])[0]
    with pytest.raises(ValueError, match="collide"):
        transport(geo, t, seed=0, nuclear=True, lambda_over_x0=0.5)
