"""The compiled hot path (trackformers.data.fastpath) against plain Python/numpy statements."""

import numpy as np

from trackformers.data.chunk import counts_to_offsets
from trackformers.data.fastpath import (
    PARAM_COLUMNS,
    gather_targets,
    join_particle_rows,
    track_parameters,
)
from trackformers.data.features import MM_PER_GEV_PER_T, perigee


def _reference_rows(hit_pid, hit_off, part_pid, part_off):
    out = np.full(len(hit_pid), -1, dtype=np.int64)
    for e in range(len(hit_off) - 1):
        table = {}
        for p in range(part_off[e], part_off[e + 1]):
            table.setdefault(int(part_pid[p]), p)  # first row of a duplicate id
        for i in range(hit_off[e], hit_off[e + 1]):
            if hit_pid[i] != 0:
                out[i] = table.get(int(hit_pid[i]), -1)
    return out


def test_join_matches_python_dicts_for_all_id_styles():
    rng = np.random.default_rng(5)
    styles = {
        "dense": lambda n: np.arange(1, n + 1, dtype=np.uint64),
        "vertex": lambda n: (
            (rng.integers(0, 200, n).astype(np.uint64) << np.uint64(32))
            | np.arange(1, n + 1, dtype=np.uint64)
        ),
        "trackml": lambda n: rng.integers(1, 2**62, n).astype(np.uint64) * np.uint64(3),
    }
    for name, make in styles.items():
        n_parts = rng.integers(0, 40, 7)
        n_parts[2] = 0  # an event without particles
        parts = [make(int(n)) for n in n_parts]
        parts[4][3:5] = parts[4][2]  # duplicate ids: the first row wins
        hits = []
        for p in parts:
            pool = np.concatenate([p, np.array([0, 0, 12345, 2**64 - 1], dtype=np.uint64)])
            hits.append(rng.choice(pool, int(rng.integers(0, 60))))
        hit_pid, part_pid = np.concatenate(hits), np.concatenate(parts)
        hit_off = counts_to_offsets(np.array([len(h) for h in hits]))
        part_off = counts_to_offsets(n_parts)
        got = join_particle_rows(hit_pid, hit_off, part_pid, part_off)
        want = _reference_rows(hit_pid, hit_off, part_pid, part_off)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert (got >= 0).sum() > 0.5 * (hit_pid != 0).sum()


def test_parameters_match_numpy_perigee_and_gather_masks():
    rng = np.random.default_rng(6)
    n = 500
    pt = rng.uniform(0.1, 20, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), rng.normal(0, 3, n)
    vx, vy, vz = rng.normal(0, 5, n), rng.normal(0, 5, n), rng.normal(0, 50, n)
    q = rng.choice([-1.0, 0.0, 1.0], n)
    for bz in (2.0, -2.0, 0.0):
        t = track_parameters(px, py, pz, vx, vy, vz, q, bz, MM_PER_GEV_PER_T)
        col = {c: t[:, j] for j, c in enumerate(PARAM_COLUMNS)}
        d0, z0 = perigee(vx, vy, vz, px / pt, py / pt, pz / pt, q, pt, bz)
        np.testing.assert_allclose(col["d0"], d0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(col["z0"], z0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(col["eta"], np.arcsinh(pz / pt), rtol=1e-12)
        np.testing.assert_allclose(col["phi"], np.arctan2(py, px), rtol=1e-12)
        np.testing.assert_allclose(col["q_over_pt"], q / pt, rtol=1e-12)
    row = np.array([-1, 0, 3, 1, 3, -1])
    table = t[:4, 1:3].astype(np.float32)
    out, valid, hit_pt = gather_targets(row, table, t[:4, 0], pt_min=float(np.median(pt[:4])))
    want_valid = (row >= 0) & (t[np.maximum(row, 0), 0] >= np.median(pt[:4]))
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_array_equal(out[valid], table[row[valid]])
    assert np.isnan(out[~valid]).all()
    np.testing.assert_array_equal(hit_pt[row >= 0], t[row[row >= 0], 0].astype(np.float32))
    assert np.isnan(hit_pt[row < 0]).all()


def test_only_requested_columns_are_computed_and_equal_the_full_table():
    from trackformers.data.fastpath import warm_up

    warm_up()
    rng = np.random.default_rng(7)
    args = [rng.normal(0, 2, 50) for _ in range(6)] + [rng.choice([-1.0, 1.0], 50)]
    full = track_parameters(*args, 2.0, MM_PER_GEV_PER_T)
    part = track_parameters(*args, 2.0, MM_PER_GEV_PER_T, columns=("eta", "z0"))
    assert not np.isnan(full).any()
    for j, name in enumerate(PARAM_COLUMNS):
        if name in ("theta", "phi"):  # not requested: skipped
            assert np.isnan(part[:, j]).all(), name
        elif name == "d0":  # comes with z0 from the same helix
            np.testing.assert_array_equal(part[:, j], full[:, j])
        else:
            np.testing.assert_array_equal(part[:, j], full[:, j], err_msg=name)
