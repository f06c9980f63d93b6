"""Hit features, selections, track-parameter targets (checked against exact helices),
Part-2 projections and quantile-balanced class bins."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from trackformers.data.binning import (
    bin_index,
    class_centers,
    fit_class_bins,
    joint_class,
    num_classes,
    quantile_edges,
)
from trackformers.data.chunk import EventChunk
from trackformers.data.features import (
    MM_PER_GEV_PER_T,
    FeatureConfig,
    hit_features,
    hit_targets,
    particle_parameters,
    select_hits,
)
from trackformers.data.packing import featurize
from trackformers.data.projections import project_part2
from trackformers.data.synthetic import helix_event, helix_events


def _closest_approach(vx, vy, vz, px, py, pz, q, bz=2.0):
    """Independent numeric perigee: minimise r over the helix (dense scan, then refine)."""
    pt = np.hypot(px, py)
    R = pt * MM_PER_GEV_PER_T / bz
    s = np.sign(q * bz)
    cx, cy = vx + R * s * py / pt, vy - R * s * px / pt
    a0 = np.arctan2(vy - cy, vx - cx)

    def point(arc):
        a = a0 - s * arc / R
        return cx + R * np.cos(a), cy + R * np.sin(a), vz + arc * pz / pt

    arcs = np.linspace(-np.pi * R, np.pi * R, 20001)
    x, y, _ = point(arcs)
    k = int(np.argmin(np.hypot(x, y)))
    step = arcs[1] - arcs[0]
    res = minimize_scalar(
        lambda a: np.hypot(*point(a)[:2]),
        bounds=(arcs[k] - step, arcs[k] + step),
        method="bounded",
        options={"xatol": 1e-9},
    )
    x0, y0, z0 = point(res.x)
    tx, ty, _ = point(res.x + 1e-3)
    return x0, y0, z0, tx - x0, ty - y0


def test_d0_z0_match_closest_approach_of_helix():
    rng = np.random.default_rng(11)
    n = 40
    pt = rng.uniform(0.3, 5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    parts = {
        "part_vx": rng.normal(0, 3, n),
        "part_vy": rng.normal(0, 3, n),
        "part_vz": rng.normal(0, 40, n),
        "part_px": pt * np.cos(phi),
        "part_py": pt * np.sin(phi),
        "part_pz": rng.normal(0, 2, n),
        "part_q": rng.choice([-1, 1], n),
    }
    p = particle_parameters(parts)
    for i in range(n):
        keys = ("part_vx", "part_vy", "part_vz", "part_px", "part_py", "part_pz", "part_q")
        x, y, z, ux, uy = _closest_approach(*(parts[k][i] for k in keys))
        assert abs(abs(p["d0"][i]) - np.hypot(x, y)) < 1e-4
        assert abs(p["z0"][i] - z) < 1e-4
        # sign: d0 = (u x P)_z with u the direction of motion at P
        assert np.sign(ux * y - uy * x) == np.sign(p["d0"][i])
    np.testing.assert_allclose(p["q_over_pt"], parts["part_q"] / pt)
    np.testing.assert_allclose(p["eta"], np.arcsinh(parts["part_pz"] / pt))
    np.testing.assert_allclose(p["sin_phi"] ** 2 + p["cos_phi"] ** 2, 1.0)


def test_straight_track_limit():
    parts = {
        "part_vx": np.array([1.0]),
        "part_vy": np.array([2.0]),
        "part_vz": np.array([5.0]),
        "part_px": np.array([1.0]),
        "part_py": np.array([0.0]),
        "part_pz": np.array([1.0]),
        "part_q": np.array([0]),
    }
    p = particle_parameters(parts)
    assert p["d0"][0] == pytest.approx(2.0)  # u x P with u = +x, P = (0, 2)
    assert p["z0"][0] == pytest.approx(4.0)  # one mm back along x -> z drops by 1


def test_hit_features_values():
    ev = helix_event(np.random.default_rng(0), 0)
    names = ("x", "y", "z", "r", "phi", "sin_phi", "cos_phi", "eta", "theta", "volume_id")
    cfg = FeatureConfig(features=names, scales={n: 1.0 for n in names})
    f = hit_features(ev, cfg)
    x, y, z = ev["hit_x"], ev["hit_y"], ev["hit_z"]
    r = np.hypot(x, y)
    expect = [
        x,
        y,
        z,
        r,
        np.arctan2(y, x),
        y / r,
        x / r,
        np.arcsinh(z / r),
        np.arctan2(r, z),
        ev["hit_volume_id"],
    ]
    for j, e in enumerate(expect):
        np.testing.assert_allclose(f[:, j], e, rtol=1e-5, atol=1e-5, err_msg=names[j])
    scaled = hit_features(ev, FeatureConfig(features=("x", "z", "eta")))
    np.testing.assert_allclose(scaled[:, 0], x / 1000, rtol=1e-6)
    np.testing.assert_allclose(scaled[:, 1], z / 3000, rtol=1e-6)
    np.testing.assert_allclose(scaled[:, 2], np.arcsinh(z / r) / 4, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown hit feature 'rho'"):
        FeatureConfig(features=("rho",))


def test_selections_and_target_mask():
    events = helix_events(4, seed=2, noise_fraction=0.2, pt_range=(0.5, 3.0))
    chunk = EventChunk.from_events(events)
    pix = select_hits(chunk, FeatureConfig(volumes="pixel"))
    assert set(np.unique(pix.hits["hit_volume_id"])) == {8}
    assert pix.num_hits == sum(int(np.isin(e["hit_volume_id"], [7, 8, 9]).sum()) for e in events)
    sig = select_hits(chunk, FeatureConfig(drop_noise=True))
    assert (sig.hits["hit_particle_id"] != 0).all()
    assert sig.num_hits == chunk.num_hits - int((chunk.hits["hit_particle_id"] == 0).sum())
    cfg = FeatureConfig(targets=("pt", "q_over_pt"), target_pt_min=1.5)
    t = hit_targets(chunk, cfg)
    noise = chunk.hits["hit_particle_id"] == 0
    assert not t["valid"][noise].any() and np.isnan(t["params"][noise]).all()
    signal = ~noise
    np.testing.assert_array_equal(t["valid"][signal], t["pt"][signal] >= 1.5)
    assert np.isnan(t["params"][~t["valid"]]).all()
    ok = t["valid"]
    np.testing.assert_allclose(t["params"][ok, 0], t["pt"][ok])


def test_hits_without_truth_are_masked():
    ev = helix_event(np.random.default_rng(3), 0, noise_fraction=0.0)
    ev["hit_particle_id"] = ev["hit_particle_id"].copy()
    ev["hit_particle_id"][:3] = 987654  # not in the particle table
    t = hit_targets(EventChunk.from_events([ev]), FeatureConfig(targets=("eta",)))
    assert not t["valid"][:3].any() and t["valid"][3:].all()


def test_large_particle_ids_are_matched():
    ev = helix_event(np.random.default_rng(4), 0)
    big = np.uint64(4503668346847232)  # TrackML-sized ids take the dense-rank path
    for k in ("hit_particle_id", "part_particle_id"):
        ev[k] = np.where(ev[k] != 0, ev[k] + big, 0).astype(np.uint64)
    t = hit_targets(EventChunk.from_events([ev, ev]), FeatureConfig(targets=("eta",)))
    np.testing.assert_array_equal(t["valid"], np.tile(ev["hit_particle_id"] != 0, 2))


def test_part2_projection():
    x = np.array([172.0, 0.0, 30.0, 50.0])
    y = np.array([0.0, 172.0, 0.0, 0.0])
    z = np.array([100.0, -200.0, -1500.0, 1500.0])
    u, v, region = project_part2(x, y, z)
    np.testing.assert_array_equal(region, [0, 0, -1, 1])
    np.testing.assert_allclose(u[:2], [0.0, 91 * np.pi / 2], atol=1e-4)
    np.testing.assert_allclose(v[:2], [100 * 91 / 172, -200 * 91 / 172], rtol=1e-6)
    np.testing.assert_allclose([u[2], v[2]], [30 * 920 / 1500, 0.0], rtol=1e-6)
    np.testing.assert_allclose([u[3], v[3]], [50 * 920 / 1500, 0.0], rtol=1e-6)
    # re-projection over candidate vertex z: a hit seen from a vertex at its own z lands at z
    u2, v2, reg2 = project_part2(x, y, z, vertex_z=np.array([0.0, 100.0, -50.0]))
    assert u2.shape == (3, 4) and reg2.shape == (3, 4)
    assert v2[1, 0] == pytest.approx(100.0)
    np.testing.assert_allclose(v2[2, 0], -50 + 150 * 91 / 172, rtol=1e-6)
    feats = hit_features(
        {"hit_x": x, "hit_y": y, "hit_z": z},
        FeatureConfig(features=("proj_u", "proj_v", "proj_region")),
    )
    np.testing.assert_allclose(feats[:, 1], v / 1000, rtol=1e-6)
    np.testing.assert_array_equal(feats[:, 2], region)


def test_quantile_bins_balanced_and_joint_class():
    rng = np.random.default_rng(0)
    vals = {"eta": rng.normal(0, 1.5, 20000), "q_over_pt": rng.exponential(0.3, 20000)}
    bins = fit_class_bins(vals, {"eta": 5, "q_over_pt": 4})
    assert num_classes(bins) == 20
    counts = np.bincount(bin_index(vals["eta"], bins["eta"]), minlength=5)
    assert counts.min() > 0.95 * 4000 and counts.max() < 1.05 * 4000
    cls = joint_class(vals, bins)
    expect = bin_index(vals["eta"], bins["eta"]) * 4 + bin_index(
        vals["q_over_pt"], bins["q_over_pt"]
    )
    np.testing.assert_array_equal(cls, expect)
    vals["eta"][0] = np.nan
    assert joint_class(vals, bins)[0] == -1
    centers = class_centers(bins, vals)
    assert np.all(np.diff(centers["eta"]) > 0)
    with pytest.raises(ValueError, match="not distinct"):
        quantile_edges(np.array([1.0] * 100 + [2.0]), 4)


def test_featurize_class_targets():
    events = helix_events(5, seed=9)
    chunk = EventChunk.from_events(events)
    cfg = FeatureConfig(targets=("eta",), class_bins={"eta": [-0.5, 0.0, 0.5]})
    feat = featurize(chunk, cfg)
    cls, valid = feat.targets["class"], feat.targets["valid"]
    assert (cls[~valid] == -1).all()
    np.testing.assert_array_equal(
        cls[valid], bin_index(feat.targets["params"][valid, 0], [-0.5, 0.0, 0.5])
    )


def test_cached_particle_rows_follow_selections():
    from trackformers.data.validate import cached_particle_row, particle_row

    chunk = EventChunk.from_events(helix_events(6, seed=12, noise_fraction=0.2))
    cached_particle_row(chunk)
    sub = chunk.select_events(np.array([4, 1, 3])).select_hits(
        EventChunk.from_events(helix_events(6, seed=12, noise_fraction=0.2))
        .select_events(np.array([4, 1, 3]))
        .hits["hit_volume_id"]
        == 8
    )
    assert sub.hit_part_row is not None
    fresh = EventChunk(
        event=sub.event,
        hit_offsets=sub.hit_offsets,
        hits=sub.hits,
        part_offsets=sub.part_offsets,
        parts=sub.parts,
    )
    np.testing.assert_array_equal(sub.hit_part_row, particle_row(fresh))
