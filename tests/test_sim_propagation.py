"""Helix propagation and digitisation physics: curvature, loopers, scattering, energy loss,
efficiency, displaced starts, resolution in the module frame, noise, module ids."""

import numpy as np
import pytest

from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.geometry import CYLINDER, load_geometry, module_ids
from trackformers.sim.particle_id import encode_particle_id
from trackformers.sim.propagate import SI_DEDX_PER_X0, SI_XI_PER_X0, propagate

MU_MASS = 0.105658


@pytest.fixture(scope="module")
def geo():
    return load_geometry()


def _muons(pt, eta, phi=0.0, q=1, vertex=(0.0, 0.0, 0.0)):
    pt, eta = np.broadcast_arrays(np.atleast_1d(pt).astype(float), np.atleast_1d(eta))
    n = len(pt)
    phi = np.broadcast_to(phi, (n,))
    mom = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
    vtx = np.tile(np.asarray(vertex, float), (n, 1))
    q = np.broadcast_to(np.asarray(q, float), (n,)).copy()
    return vtx, mom, q, np.full(n, MU_MASS), (-13 * q).astype(int)


def _ideal(geo, *args, **kw):
    kw = {"efficiency": 1.0, "scattering": False, "energy_loss": False, "seed": 0, **kw}
    return propagate(geo, *args, **kw)


def test_helix_curvature_and_charge_sign(geo):
    for q in (1, -1):
        h = _ideal(geo, *_muons(1.0, 0.3, q=q))
        barrel = geo.kind[h["surface"]] == CYLINDER
        r = np.hypot(h["pos"][barrel, 0], h["pos"][barrel, 1])
        np.testing.assert_allclose(r, [32, 72, 116, 172, 260, 360, 500, 660, 820, 1020], atol=1e-6)
        rho = 1000 * 1.0 / (0.299792458 * 2.0)  # 1667.8 mm for pT = 1 GeV in 2 T
        phi = np.arctan2(h["pos"][barrel, 1], h["pos"][barrel, 0])
        # a positive track bends clockwise (phi decreases) in Bz > 0
        np.testing.assert_allclose(phi, -q * np.arcsin(r / (2 * rho)), atol=1e-9)
        s = 2 * rho * np.arcsin(r / (2 * rho))  # transverse path length
        np.testing.assert_allclose(h["pos"][barrel, 2], s * np.sinh(0.3), atol=1e-6)
        np.testing.assert_allclose(np.hypot(h["mom"][:, 0], h["mom"][:, 1]), 1.0, atol=1e-12)


def test_forward_track_hits_endcap_disks_in_z_order(geo):
    h = _ideal(geo, *_muons(5.0, 2.8))
    z = h["pos"][:, 2]
    assert np.all(np.diff(z) > 0)
    assert geo.volume_id[h["surface"]].tolist()[:3] == [8, 9, 9]  # one barrel layer, then disks
    np.testing.assert_allclose(
        z[geo.kind[h["surface"]] != CYLINDER],
        geo.pos[h["surface"][geo.kind[h["surface"]] != CYLINDER]],
    )


def test_loopers_leave_repeated_hits_until_energy_is_lost(geo):
    args = _muons(0.12, 0.05)  # R = 200 mm: curls inside the short-strip barrel
    free = _ideal(geo, *args, max_crossings=400, max_hits=400)
    r = np.hypot(free["pos"][:, 0], free["pos"][:, 1])
    assert (np.abs(r - 32) < 1e-6).sum() >= 5  # crosses the first layer again and again
    lossy = _ideal(geo, *args, energy_loss=True, max_crossings=5000, max_hits=5000)
    assert 10 < len(lossy["particle"]) < len(free["particle"])
    p = np.linalg.norm(lossy["mom"], axis=1)
    assert np.all(np.diff(p) < 0)  # loses momentum at every crossing


def test_energy_loss_per_layer_matches_bethe_mean_with_landau_spread(geo):
    n = 4000
    h = _ideal(geo, *_muons(np.full(n, 1.0), np.zeros(n)), energy_loss=True, seed=2)
    first = geo.layer_id[h["surface"]] == 2  # hits on layers 2 and 4 of the pixel barrel
    second = (geo.layer_id[h["surface"]] == 4) & (geo.volume_id[h["surface"]] == 8)
    e = np.hypot(np.linalg.norm(h["mom"], axis=1), MU_MASS)
    first &= geo.volume_id[h["surface"]] == 8
    assert np.array_equal(h["particle"][first], h["particle"][second])
    de = e[first] - e[second]  # loss in layer 1 only (normal incidence, 1.7 % X0)
    beta2 = 1 / (1 + (MU_MASS / np.linalg.norm(h["mom"][first], axis=1)) ** 2)
    mean = SI_DEDX_PER_X0 * 0.017 / beta2
    assert de.mean() == pytest.approx(mean.mean(), rel=0.02)
    xi = SI_XI_PER_X0 * 0.017 / beta2.mean()
    assert np.std(de) == pytest.approx(xi * np.pi / np.sqrt(2), rel=0.15)  # Moyal width
    assert np.median(de) < de.mean()  # Landau-like: long tail to high losses
    assert de.min() > 0


@pytest.mark.parametrize("eta", [0.0, 1.5])
def test_multiple_scattering_follows_highland_with_incidence(geo, eta):
    n = 4000
    args = _muons(np.full(n, 2.0), np.full(n, eta))
    ideal = _ideal(geo, *args)
    msc = _ideal(geo, *args, scattering=True, seed=3)

    # polar-angle change between the hits on layers 1 and 2 comes from layer-1 material
    def theta_l2(h):
        sel = (geo.volume_id[h["surface"]] == 8) & (geo.layer_id[h["surface"]] == 4)
        m = h["mom"][sel]
        return np.arctan2(np.hypot(m[:, 0], m[:, 1]), m[:, 2]), h["particle"][sel]

    t0, i0 = theta_l2(ideal)
    t1, i1 = theta_l2(msc)
    assert np.array_equal(i0, i1)
    d = t1 - t0
    p = 2.0 * np.cosh(eta)
    beta = p / np.hypot(p, MU_MASS)
    x_bp = 0.00227 * np.cosh(eta)  # beam pipe, thickness along the path
    x_l1 = 0.017 * np.cosh(eta)

    def highland(x):
        return 0.0136 / (beta * p) * np.sqrt(x) * (1 + 0.038 * np.log(x / beta**2))

    expected = np.hypot(highland(x_bp), highland(x_l1))
    assert np.std(d) == pytest.approx(expected, rel=0.08)


def test_efficiency_and_displaced_start(geo):
    n = 3000
    h = propagate(
        geo,
        *_muons(np.full(n, 3.0), np.zeros(n)),
        seed=1,
        efficiency=0.9,
        scattering=False,
        energy_loss=False,
    )
    frac = len(h["particle"]) / (10 * n)
    assert frac == pytest.approx(0.9, abs=0.01)
    d = _ideal(geo, *_muons(3.0, 0.0, vertex=(50.0, 0.0, 0.0)))
    r = np.hypot(d["pos"][:, 0], d["pos"][:, 1])
    assert r.min() == pytest.approx(72.0)  # starts beyond the first layer: no hit at r = 32


def _gun_particles(n, rng, eta=(-3.0, 3.0)):
    pt = rng.uniform(0.5, 5, n)
    eta = rng.uniform(*eta, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    q = rng.choice([-1.0, 1.0], n)
    return {
        "particle_id": encode_particle_id(np.zeros(n), np.arange(n)),
        "pdg_id": (-13 * q).astype(int),
        "vertex_id": np.zeros(n, int),
        "vx": np.zeros(n),
        "vy": np.zeros(n),
        "vz": rng.normal(0, 50, n),
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "q": q,
        "mass": np.full(n, MU_MASS),
    }


def test_hits_lie_on_surfaces_with_pitch_resolution_in_module_frame(geo):
    sim = DetectorSim(DetectorConfig(), geo)
    ev = sim.simulate(_gun_particles(3000, np.random.default_rng(0)), event_id=0, pileup=0, seed=4)
    x, y, z = (ev[f"hit_{c}"].astype(float) for c in "xyz")
    tx, ty, tz = (ev[f"hit_t{c}"].astype(float) for c in "xyz")
    vol = ev["hit_volume_id"]
    barrel = np.isin(vol, [8, 13, 17])
    r, tr = np.hypot(x, y), np.hypot(tx, ty)
    assert np.abs(r[barrel] - tr[barrel]).max() < 1e-3  # on the cylinder (float32 storage)
    np.testing.assert_array_equal(z[~barrel], tz[~barrel])  # on the disk plane
    spec = {
        8: (0.05, 0.05625),
        13: (0.08, 1.2),
        17: (0.12, 10.4),
        9: (0.05, 0.05625),
        14: (0.08, 1.2),
        18: (0.12, 10.4),
    }
    surface = {
        (v, lay): i for i, (v, lay) in enumerate(zip(geo.volume_id, geo.layer_id, strict=True))
    }
    surf = np.asarray([surface[k] for k in zip(vol, ev["hit_layer_id"], strict=True)])
    # a second hit in an overlap lies on the neighbouring module (in phi, or along z in the
    # barrel): use that module's axes
    shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    cand = [module_ids(geo, surf, tx, ty, tz, sp, shift_z=sz) for sp, sz in shifts]
    match = [m == ev["hit_module_id"] for m, _ in cand]
    assert np.all(np.any(match, axis=0))
    phi_c = np.select(match, [p for _, p in cand])
    dx, dy, dz = x - tx, y - ty, z - tz
    du = -np.sin(phi_c) * dx + np.cos(phi_c) * dy  # along the module's u axis (r*phi)
    dv = np.where(barrel, dz, np.cos(phi_c) * dx + np.sin(phi_c) * dy)  # z or r
    for v, (pu, pv) in spec.items():
        sel = vol == v
        assert sel.sum() > 300, v
        assert np.std(du[sel]) == pytest.approx(pu / np.sqrt(12), rel=0.1), v
        assert np.std(dv[sel]) == pytest.approx(pv / np.sqrt(12), rel=0.1), v


def test_module_ids_in_range_and_noise_hits(geo):
    sim = DetectorSim(DetectorConfig(noise_fraction=0.2), geo)
    ev = sim.simulate(_gun_particles(500, np.random.default_rng(1)), event_id=3, pileup=0, seed=2)
    noise = ev["hit_particle_id"] == 0
    n_true = (~noise).sum()
    assert abs(noise.sum() - 0.2 * n_true) < 4 * np.sqrt(0.2 * n_true)
    assert np.all(ev["hit_weight"][noise] == 0)
    assert ev["hit_weight"].sum() == pytest.approx(1.0, rel=1e-5)
    assert np.array_equal(ev["hit_id"], np.arange(1, len(noise) + 1))
    for v in np.unique(ev["hit_volume_id"]):
        sel = ev["hit_volume_id"] == v
        for lay in np.unique(ev["hit_layer_id"][sel]):
            s = np.flatnonzero((geo.volume_id == v) & (geo.layer_id == lay))[0]
            n_mod = (geo.n_phi[s] * geo.n_z[s]) or geo.ring_nphi[s].sum()
            mods = ev["hit_module_id"][sel & (ev["hit_layer_id"] == lay)]
            assert mods.min() >= 1 and mods.max() <= n_mod
    r = np.hypot(ev["hit_x"][noise], ev["hit_y"][noise])
    z = ev["hit_z"][noise]
    assert np.all((r > 30) & (r < 1030) & (np.abs(z) < 3000))
    # part_nhits counts each particle's hits
    counts = np.bincount(
        (ev["hit_particle_id"][~noise] - 1).astype(int), minlength=len(ev["part_nhits"])
    )
    np.testing.assert_array_equal(counts, ev["part_nhits"])


def test_module_overlaps_give_second_hit_on_neighbour(geo):
    """Crossings where modules overlap leave a second hit: in phi on a fraction
    overlap / (1 - overlap) (modules of width w, one phi bin p = w (1 - overlap) apart: the
    doubly covered share (w - p) / p of the layer), along z in the barrel within z_overlap / 2
    of the edge between two module rows; the pair sits on neighbouring modules."""
    sim = DetectorSim(DetectorConfig(efficiency=1.0, scattering=False, energy_loss=False), geo)
    ev = sim.simulate(
        _gun_particles(4000, np.random.default_rng(5), eta=(-0.8, 0.8)),
        event_id=0,
        pileup=0,
        seed=1,
    )
    z_ov = geo.z_overlaps()
    assert z_ov[geo.volume_id == 8].max() == 2.0 and z_ov[geo.volume_id == 17].max() == 5.0
    for s in np.flatnonzero((geo.kind == CYLINDER) & geo.sensitive):
        on = (ev["hit_volume_id"] == geo.volume_id[s]) & (ev["hit_layer_id"] == geo.layer_id[s])
        pid, module = ev["hit_particle_id"][on], ev["hit_module_id"][on].astype(np.int64)
        _, inverse, counts = np.unique(pid, return_inverse=True, return_counts=True)
        ov = geo.overlap[s]
        z_share = (geo.n_z[s] - 1) * z_ov[s] / (geo.hi[s] - geo.lo[s])  # inner row edges
        expected = 1 + ov / (1 - ov) + z_share  # hits per crossing
        where = (int(geo.volume_id[s]), int(geo.layer_id[s]))
        assert counts.mean() == pytest.approx(expected, abs=0.025), (where, expected)
        assert counts.max() <= 3  # a corner: phi and z neighbours
        n_phi = int(geo.n_phi[s])
        for k in np.flatnonzero(counts == 2)[:50]:
            a, b = np.sort(module[inverse == k])
            row_a, row_b = (a - 1) // n_phi, (b - 1) // n_phi
            if row_a == row_b:  # phi neighbours (wrapping at the last module of the row)
                assert b - a in (1, n_phi - 1), (where, a, b)
            else:  # z neighbours: same phi bin, next row
                assert b - a == n_phi, (where, a, b)
        pairs = [np.sort(module[inverse == k]) for k in np.flatnonzero(counts == 2)]
        n_z_pairs = sum((b - a) == n_phi for a, b in pairs)
        assert n_z_pairs / len(counts) == pytest.approx(z_share, abs=0.012), where


def test_keep_volumes_writes_pixel_hits_only(geo):
    parts = _gun_particles(300, np.random.default_rng(2))
    full = DetectorSim(DetectorConfig(), geo).simulate(parts, event_id=0, pileup=0, seed=9)
    pix = DetectorSim(DetectorConfig(keep_volumes=[7, 8, 9]), geo).simulate(
        parts, event_id=0, pileup=0, seed=9
    )
    assert set(np.unique(pix["hit_volume_id"]).tolist()) == {7, 8, 9}
    np.testing.assert_array_equal(
        pix["hit_x"], full["hit_x"][np.isin(full["hit_volume_id"], [7, 8, 9])]
    )
    counts = np.bincount((pix["hit_particle_id"] - 1).astype(int), minlength=300)
    np.testing.assert_array_equal(counts, pix["part_nhits"])
    assert pix["hit_weight"].sum() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match=r"unknown volume id\(s\) \[99\]"):
        DetectorSim(DetectorConfig(keep_volumes=[8, 99]), geo)


def test_field_map_hook(geo, tmp_path):
    import dataclasses

    r, z = np.linspace(0, 1200, 7), np.linspace(-3200, 3200, 9)
    args = _muons(np.array([1.0, 0.5]), np.array([0.3, -1.2]), q=np.array([1, -1]))
    uniform = _ideal(geo, *args)
    for b in (2.0, 4.0):
        fm = {"r": r, "z": z, "bz": np.full((7, 9), b)}
        mapped = _ideal(dataclasses.replace(geo, field_map=fm), *args)
        if b == 2.0:  # a flat 2 T map is the uniform field
            np.testing.assert_allclose(mapped["pos"], uniform["pos"], atol=1e-9)
        else:  # 4 T: half the radius of curvature
            first = mapped["pos"][0]
            rr = np.hypot(first[0], first[1])
            phi = np.arctan2(first[1], first[0])
            rho = 1000 * 1.0 / (0.299792458 * 4.0)
            assert phi == pytest.approx(-np.arcsin(rr / (2 * rho)), abs=1e-9)
    # the map is loaded from the geometry YAML, relative to it
    import yaml

    from trackformers.sim.geometry import DEFAULT_GEOMETRY, GeometryError

    np.savez(tmp_path / "bz.npz", r=r, z=z, bz=np.full((7, 9), 2.0))
    spec = yaml.safe_load(DEFAULT_GEOMETRY.read_text())
    spec["field_map"] = "bz.npz"
    (tmp_path / "geo.yaml").write_text(yaml.safe_dump(spec))
    assert load_geometry(tmp_path / "geo.yaml").field_map["bz"].shape == (7, 9)
    np.savez(tmp_path / "bz.npz", r=r, z=z, bz=np.full((9, 7), 2.0))
    with pytest.raises(GeometryError, match="bz.npz: need r"):
        load_geometry(tmp_path / "geo.yaml")
