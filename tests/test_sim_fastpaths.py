"""The fast paths of the detector simulation give bit for bit what the straightforward code gives.

Each fast path is checked against a plain reference (the exhaustive surface search kept in
trackformers.sim.propagate, and here numpy versions of the module frame, smearing, ring search,
hit order and TrackML weights), alone and inside a whole event: the event simulated with every
reference patched in must equal the default one in every branch, byte for byte.
"""

import math

import numpy as np
import pytest

import trackformers.sim.clusters as clusters
import trackformers.sim.detector as detector
import trackformers.sim.geometry as geometry
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.geometry import CYLINDER, DISK, load_geometry
from trackformers.sim.particle_id import encode_particle_id
from trackformers.sim.propagate import (
    C_LIGHT,
    _helix_next,
    _helix_next_sorted,
    _line_next,
    _line_next_sorted,
    _surfaces_by_position,
    propagate,
)
from trackformers.sim.weights import ORDER_MATRIX, _rank_by_distance, pt_weight, trackml_weights


@pytest.fixture(scope="module")
def geo():
    return load_geometry()


# ---------------------------------------------------------------- references (plain numpy)


def _phi_binning_reference(geo, surface, x, y, z):
    phi = np.arctan2(y, x)
    r = np.hypot(x, y)
    is_disk = geo.kind[surface] == DISK
    n_phi_b = np.maximum(geo.n_phi[surface], 1)
    n_z = np.maximum(geo.n_z[surface], 1)
    zfrac = (z - geo.lo[surface]) / (geo.hi[surface] - geo.lo[surface])
    iz = np.clip((zfrac * n_z).astype(np.int64), 0, n_z - 1)
    edges = geo.ring_edges[surface]
    ring = np.clip((r[:, None] >= edges[:, 1:]).sum(axis=1), 0, geo.ring_nphi.shape[1] - 1)
    nphi_r = np.maximum(geo.ring_nphi[surface, ring], 1)
    offset_d = (np.cumsum(geo.ring_nphi[surface], axis=1) - geo.ring_nphi[surface])[
        np.arange(len(ring)), ring
    ]
    n = np.where(is_disk, nphi_r, n_phi_b)
    pos = (phi + np.pi) / (2 * np.pi) * n
    iphi = np.clip(pos.astype(np.int64), 0, n - 1)
    offset = np.where(is_disk, offset_d, iz * n_phi_b)
    return geometry.PhiBinning(n, iphi, pos - iphi, offset)


def _smear_reference(self, surf, pos, phi_c, rng):
    geo = self.geometry
    gu = rng.standard_normal(len(surf)) * geo.sigma_u[surf]
    gv = rng.standard_normal(len(surf)) * geo.sigma_v[surf]
    cyl = geo.kind[surf] == CYLINDER
    ux, uy = -np.sin(phi_c), np.cos(phi_c)
    out = pos.copy()
    out[:, 0] += gu * ux + np.where(cyl, 0.0, gv * np.cos(phi_c))
    out[:, 1] += gu * uy + np.where(cyl, 0.0, gv * np.sin(phi_c))
    out[:, 2] += np.where(cyl, gv, 0.0)
    r = np.hypot(out[:, 0], out[:, 1])
    r_in = np.where(cyl, geo.pos[surf], np.clip(r, geo.lo[surf], geo.hi[surf]))
    scale = r_in / np.maximum(r, 1e-9)
    out[:, 0] *= scale
    out[:, 1] *= scale
    out[:, 2] = np.where(cyl, np.clip(out[:, 2], geo.lo[surf], geo.hi[surf]), out[:, 2])
    return out


def _hit_paths_reference(
    kind,
    g_pos,
    g_lo,
    g_hi,
    g_overlap,
    g_z_overlap,
    g_nphi,
    g_nz,
    ring_edges,
    ring_nphi,
    surf,
    x,
    y,
    z,
    mom,
    module,
    c,
    s,
    r,
    pu,
    pv,
    thick,
    noise,
    max_path_cells,
):
    """Module frame, path and cell counts with (n, 3) axis arrays and np.einsum."""
    cyl = kind[surf] == CYLINDER
    zero, one = np.zeros_like(c), np.ones_like(c)
    e_u = np.stack([-s, c, zero], axis=1)
    e_r = np.stack([c, s, zero], axis=1)
    e_z = np.stack([zero, zero, one], axis=1)
    e_v = np.where(cyl[:, None], e_z, e_r)
    e_w = np.where(cyl[:, None], e_r, e_z)
    ov = g_overlap[surf]
    n_phi_b = np.maximum(g_nphi[surf], 1)
    n_z = np.maximum(g_nz[surf], 1)
    dz = (g_hi[surf] - g_lo[surf]) / n_z
    iz = (module.astype(np.int64) - 1) // n_phi_b
    edges = ring_edges[surf]
    ring = np.clip((r[:, None] >= edges[:, 1:]).sum(axis=1), 0, ring_nphi.shape[1] - 1)
    rows = np.arange(len(surf))
    r_lo, r_hi = edges[rows, ring], edges[rows, ring + 1]
    n_ring = np.maximum(ring_nphi[surf, ring], 1)
    r_u = np.where(cyl, g_pos[surf], np.where(np.isfinite(r_hi), r_hi, r))
    half_u = np.pi * r_u / (np.where(cyl, n_phi_b, n_ring) * (1.0 - ov))
    u = x * e_u[:, 0] + y * e_u[:, 1] + half_u
    z_ov = g_z_overlap[surf]
    z_corner = np.where(z_ov > 0, g_lo[surf] + iz * dz - z_ov / 2, g_lo[surf] + iz * dz)
    v = np.where(cyl, z - z_corner, x * c + y * s - r_lo)
    with np.errstate(invalid="ignore"):
        len_v = np.where(
            cyl, np.where(z_ov > 0, dz + z_ov, dz), np.where(np.isfinite(r_hi), r_hi - r_lo, 1.0)
        )
    n_u = np.maximum(np.ceil(2 * half_u / pu), 1).astype(np.int64)
    n_v = np.maximum(np.ceil(len_v / pv), 1).astype(np.int64)
    p = np.linalg.norm(mom, axis=1)
    d = mom / np.maximum(p, 1e-12)[:, None]
    d_u = np.einsum("ij,ij->i", d, e_u)
    d_v = np.einsum("ij,ij->i", d, e_v)
    d_w = np.maximum(np.abs(np.einsum("ij,ij->i", d, e_w)), 1e-6)
    du, dv = thick * d_u / d_w, thick * d_v / d_w
    length = thick / d_w
    span = np.abs(du) / pu + np.abs(dv) / pv
    shrink = np.minimum(1.0, max_path_cells / np.maximum(span, 1e-12))
    return u, v, du * shrink, dv * shrink, length * shrink, n_u, n_v, noise | (p <= 0)


def _weights_reference(hit_pid, hit_tz, pids, part_vz, part_px, part_py, hit_particle_index=None):
    """TrackML weights with an id look-up and np.lexsort (ignores ``hit_particle_index``)."""
    hit_pid = np.asarray(hit_pid, np.uint64)
    w = np.zeros(len(hit_pid))
    pids = np.asarray(pids, np.uint64)
    order = np.argsort(pids, kind="stable")
    idx = np.clip(np.searchsorted(pids[order], hit_pid), 0, len(pids) - 1)
    known = (pids[order][idx] == hit_pid) & (hit_pid != 0)
    pidx = np.where(known, order[idx], -1)
    good = np.flatnonzero(known)
    nhits = np.bincount(pidx[good], minlength=len(pids))
    dz = np.abs(np.asarray(hit_tz, np.float64)[good] - np.asarray(part_vz, np.float64)[pidx[good]])
    srt = np.lexsort((dz, pidx[good]))
    grp = pidx[good][srt]
    rank = np.empty(len(good), np.int64)
    rank[srt] = np.arange(len(good)) - np.searchsorted(grp, grp, side="left")
    nh = nhits[pidx[good]]
    w_order = np.where(
        (nh >= 4) & (rank < 20), ORDER_MATRIX[np.minimum(nh, 20), np.minimum(rank, 19)], 0.0
    )
    pt = np.hypot(np.asarray(part_px, np.float64), np.asarray(part_py, np.float64))
    w[good] = w_order * pt_weight(pt)[pidx[good]]
    return w / w.sum() if w.sum() > 0 else w


def _cell_sums_reference(row, ch0, ch1, value, n_hits):
    """Cells per hit, summed value, extents with np.bincount and ufunc.reduceat."""
    ncells = np.bincount(row, minlength=n_hits)
    charge = np.bincount(row, weights=value, minlength=n_hits)
    size_u, size_v = np.zeros(n_hits, np.int64), np.zeros(n_hits, np.int64)
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    hits = row[starts]
    size_u[hits] = np.maximum.reduceat(ch0, starts) - np.minimum.reduceat(ch0, starts) + 1
    size_v[hits] = np.maximum.reduceat(ch1, starts) - np.minimum.reduceat(ch1, starts) + 1
    return ncells, charge, size_u, size_v


# ---------------------------------------------------------------- particles


def _mixed_particles(n=400, seed=3):
    """Charged particles of every kind the simulation meets (stiff and soft, central and
    forward, displaced and pointing inwards) plus photons and neutrons."""
    rng = np.random.default_rng(seed)
    pt = np.exp(rng.uniform(np.log(0.08), np.log(50.0), n))
    eta = rng.uniform(-4.2, 4.2, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    vtx = np.zeros((n, 3))
    vtx[:, 2] = rng.normal(0, 5.5, n)
    displaced = rng.random(n) < 0.25  # start on a circle up to 700 mm out, any direction
    r0, a0 = rng.uniform(20, 700, n), rng.uniform(-np.pi, np.pi, n)
    start = np.stack([r0 * np.cos(a0), r0 * np.sin(a0), rng.uniform(-1500, 1500, n)], axis=1)
    vtx[displaced] = start[displaced]
    pdg = rng.choice([13, -13, 211, -211, 11, -11, 2212, 22, 22, 2112], n)
    q = np.where(np.isin(pdg, [22, 2112]), 0.0, np.sign(pdg) * np.where(np.abs(pdg) == 11, -1, 1))
    q = np.where(np.abs(pdg) == 13, -np.sign(pdg), q).astype(float)
    mass = {13: 0.1057, 211: 0.1396, 11: 0.000511, 2212: 0.9383, 22: 0.0, 2112: 0.9396}
    return {
        "particle_id": encode_particle_id(np.zeros(n), np.arange(1, n + 1)),
        "pdg_id": pdg.astype(float),
        "vertex_id": np.zeros(n),
        "vx": vtx[:, 0],
        "vy": vtx[:, 1],
        "vz": vtx[:, 2],
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "q": q,
        "mass": np.array([mass[abs(int(p))] for p in pdg]),
    }


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), f"{k} differs"


# ---------------------------------------------------------------- tests


def test_nearest_first_search_equals_exhaustive_search_per_state(geo):
    """Random helices and lines, many starting exactly on a surface (as after a crossing)."""
    rng = np.random.default_rng(0)
    cyl, cyl_r, disk, disk_z = _surfaces_by_position(geo)
    args = (geo.kind, geo.pos, geo.lo, geo.hi)
    n_checked = 0
    for i in range(20000):
        j = rng.integers(geo.n_surfaces)
        a = rng.uniform(-np.pi, np.pi)
        if geo.kind[j] == CYLINDER and i % 2:  # on a cylinder
            r, z = geo.pos[j], rng.uniform(geo.lo[j], geo.hi[j])
        elif i % 2:  # on a disk
            r, z = rng.uniform(geo.lo[j], geo.hi[j]), geo.pos[j]
        else:
            r, z = rng.uniform(0, 1100), rng.uniform(-3000, 3000)
        x, y = r * math.cos(a), r * math.sin(a)
        phi0 = rng.uniform(-np.pi, np.pi)
        pt = math.exp(rng.uniform(math.log(0.03), math.log(2000.0)))
        kappa = rng.choice([-1, 1]) * 2.0 * C_LIGHT / pt
        tanl = math.sinh(rng.uniform(-5, 5)) if i % 7 else 0.0
        want = _helix_next(x, y, z, phi0, kappa, tanl, *args)
        got = _helix_next_sorted(x, y, z, phi0, kappa, tanl, *args[1:], cyl, cyl_r, disk, disk_z)
        assert got == want, (i, x, y, z, phi0, kappa, tanl, want, got)
        d = np.array([math.cos(phi0), math.sin(phi0), tanl]) / math.hypot(1.0, tanl)
        want = _line_next(x, y, z, *d, *args)
        got = _line_next_sorted(x, y, z, *d, *args[1:], cyl, cyl_r, disk, disk_z)
        assert got == want, (i, x, y, z, d, want, got)
        n_checked += want[1] >= 0
    assert n_checked > 15000  # most states do cross something


@pytest.mark.parametrize("loop_fraction", [0.0, 0.5])
def test_propagation_equals_exhaustive_search(geo, loop_fraction):
    p = _mixed_particles()
    kw = dict(
        seed=4,
        p_min=0.05,
        loop_fraction=loop_fraction,
        conversions=True,
        nuclear=True,
        nuclear_per_species=True,
        max_crossings=400,
        max_hits=200,
    )
    args = (
        geo,
        np.stack([p["vx"], p["vy"], p["vz"]], axis=1),
        np.stack([p["px"], p["py"], p["pz"]], axis=1),
        p["q"],
        p["mass"],
        p["pdg_id"],
    )
    fast = propagate(*args, **kw)
    ref = propagate(*args, **kw, exhaustive_search=True)
    _assert_same(fast, ref)
    assert len(fast["particle"]) > 2000 and len(fast["int_kind"]) > 10


def test_rank_by_distance_equals_lexsort_with_ties_and_nan():
    rng = np.random.default_rng(1)
    pidx = rng.integers(0, 300, 5000)
    dz = rng.integers(0, 8, 5000).astype(float)  # many ties
    dz[rng.random(5000) < 0.02] = np.nan
    srt = np.lexsort((dz, pidx))
    grp = pidx[srt]
    want = np.empty(5000, np.int64)
    want[srt] = np.arange(5000) - np.searchsorted(grp, grp, side="left")
    np.testing.assert_array_equal(_rank_by_distance(pidx, dz, 300), want)


def test_weights_with_known_particle_rows_equal_the_id_look_up(geo):
    ev = DetectorSim(DetectorConfig(noise_fraction=0.2), geo).simulate(
        _mixed_particles(), event_id=0, pileup=0, seed=5
    )
    args = [ev[k] for k in ("hit_particle_id", "hit_tz", "part_particle_id", "part_vz")]
    args += [ev["part_px"], ev["part_py"]]
    row = {int(p): i for i, p in enumerate(ev["part_particle_id"])}
    index = np.array([row.get(int(p), -1) for p in ev["hit_particle_id"]])
    assert (index >= 0).sum() > 1000 and (index < 0).sum() > 100  # particle hits and noise
    want = _weights_reference(*args)
    assert trackml_weights(*args).tobytes() == want.tobytes()
    assert trackml_weights(*args, hit_particle_index=index).tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="hit_particle_index"):
        trackml_weights(*args, hit_particle_index=index[:-1])


def test_hit_order_is_lexsort_and_refuses_ids_out_of_range():
    rng = np.random.default_rng(2)
    vol, lay = rng.integers(7, 19, 3000), rng.integers(2, 15, 3000)
    module = rng.integers(1, 4000, 3000)
    np.testing.assert_array_equal(
        detector.hit_order(vol, lay, module), np.lexsort((module, lay, vol))
    )
    with pytest.raises(ValueError, match="layer"):
        detector.hit_order(vol, np.full(3000, 300), module)


def test_whole_event_equals_the_reference_code_path(geo, monkeypatch):
    """A fixed-seed event (secondaries, noise, overlaps, cells) is unchanged, byte for byte,
    when every fast path is replaced by its reference."""
    sim = DetectorSim(DetectorConfig(noise_fraction=0.171), geo)
    parts = _mixed_particles(600, seed=7)
    fast = sim.simulate(parts, event_id=3, pileup=0, seed=11)
    transport = detector.transport
    monkeypatch.setattr(
        detector, "transport", lambda *a, **k: transport(*a, **k, exhaustive_search=True)
    )
    monkeypatch.setattr(detector, "phi_binning", _phi_binning_reference)
    monkeypatch.setattr(
        detector, "hit_order", lambda vol, lay, module: np.lexsort((module, lay, vol))
    )
    monkeypatch.setattr(detector.DetectorSim, "_smear", _smear_reference)
    monkeypatch.setattr(detector, "trackml_weights", _weights_reference)
    monkeypatch.setattr(clusters, "_hit_paths", _hit_paths_reference)
    monkeypatch.setattr(clusters, "_cell_sums", _cell_sums_reference)
    ref = sim.simulate(parts, event_id=3, pileup=0, seed=11)
    assert len(fast["hit_id"]) > 3000 and (fast["hit_particle_id"] == 0).sum() > 300
    assert (fast["part_process"] != 0).any()  # secondaries made it in
    _assert_same(fast, ref)


def test_module_frame_smearing_and_binning_equal_their_references(geo):
    """Intermediate values (not only the event) agree bit for bit: module frame and path,
    smeared positions, module grid position."""
    ev = DetectorSim(DetectorConfig(noise_fraction=0.171), geo).simulate(
        _mixed_particles(), event_id=0, pileup=0, seed=6
    )
    ids = zip(geo.volume_id, geo.layer_id, strict=True)
    lookup = {(v, la): s for s, (v, la) in enumerate(ids) if geo.sensitive[s]}
    hit_ids = zip(ev["hit_volume_id"], ev["hit_layer_id"], strict=True)
    surf = np.array([lookup[v, la] for v, la in hit_ids])
    x, y, z = (ev[k].astype(np.float64) for k in ("hit_tx", "hit_ty", "hit_tz"))
    mom = np.stack([ev[k].astype(np.float64) for k in ("hit_tpx", "hit_tpy", "hit_tpz")], 1)
    bins = geometry.phi_binning(geo, surf, x, y, z)
    for got, want in zip(bins, _phi_binning_reference(geo, surf, x, y, z), strict=True):
        assert got.tobytes() == want.tobytes()
    module, phi_c = geometry.module_ids(geo, surf, x, y, z, binning=bins)
    pu, pv, thick = clusters.hit_cell_sizes(geo, geo.volume_id[surf])
    args = (
        geo.kind,
        geo.pos,
        geo.lo,
        geo.hi,
        geo.overlap,
        geo.z_overlaps(),
        geo.n_phi,
        geo.n_z,
        geo.ring_edges,
        geo.ring_nphi,
        surf,
        x,
        y,
        z,
        mom,
        module.astype(np.int64),
        np.cos(phi_c),
        np.sin(phi_c),
        np.hypot(x, y),
        pu,
        pv,
        thick,
        ev["hit_particle_id"] == 0,
        clusters.MAX_PATH_CELLS,
    )
    for got, want in zip(clusters._hit_paths(*args), _hit_paths_reference(*args), strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    sim = DetectorSim(DetectorConfig(), geo)
    pos = np.stack([x, y, z], axis=1)
    got = sim._smear(surf, pos, phi_c, np.random.default_rng(8))
    want = _smear_reference(sim, surf, pos, phi_c, np.random.default_rng(8))
    assert got.tobytes() == want.tobytes()
