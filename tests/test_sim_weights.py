"""TrackML weights: compare with a direct transcription of the official pandas algorithm."""

import numpy as np
import pandas as pd
import pytest

from trackformers.sim.particle_id import decode_vertex_id, encode_particle_id
from trackformers.sim.weights import ORDER_MATRIX, pt_weight, trackml_weights


def _official(truth: pd.DataFrame, particles: pd.DataFrame) -> np.ndarray:
    """trackml-library weight_hits_phase1, step by step (pandas rank, row lookup)."""
    sel = pd.DataFrame(
        {
            "particle_id": particles.particle_id,
            "vz": particles.vz,
            "nhits": particles.nhits,
            "wpt": pt_weight(np.hypot(particles.px, particles.py)),
        }
    )
    c = truth.merge(sel, how="left", on="particle_id")
    c["wpt"] = c["wpt"].fillna(0.0)
    c["nhits"] = c["nhits"].fillna(0).astype(int)
    c["dz"] = (c.tz - c.vz).abs()
    c["ihit"] = (c.groupby("particle_id")["dz"].rank() - 1).fillna(0).astype(int)

    def order(row):
        n, i = int(row.nhits), int(row.ihit)
        if n < 4 or i >= 20:
            return 0.0
        return ORDER_MATRIX[min(n, 20), i]

    w = c.wpt * c.apply(order, axis=1)
    return (w / w.sum()).to_numpy()


def test_order_matrix_profile():
    assert ORDER_MATRIX[:4].sum() == 0
    np.testing.assert_allclose(ORDER_MATRIX[4:].sum(axis=1), 1.0)
    row = ORDER_MATRIX[9, :9]
    np.testing.assert_allclose(row / row.sum(), np.array([10, 8, 6, 5, 3, 3, 3, 5, 6]) / 49)


def test_pt_weight_rule():
    np.testing.assert_allclose(
        pt_weight(np.array([0.01, 0.1, 0.5, 1.75, 3.0, 10.0])), [0.0, 0.2, 0.2, 0.6, 1.0, 1.0]
    )


def test_matches_official_algorithm(rng):
    n_part = 60
    pid = encode_particle_id(rng.integers(0, 3, n_part), np.arange(n_part))
    nh = rng.integers(1, 25, n_part)
    hit_pid = np.concatenate([np.repeat(pid, nh), np.zeros(30, np.uint64)])  # + noise
    tz = rng.normal(0, 500, len(hit_pid))
    particles = pd.DataFrame(
        {
            "particle_id": pid,
            "vz": rng.normal(0, 50, n_part),
            "px": rng.uniform(-4, 4, n_part),
            "py": rng.uniform(-4, 4, n_part),
            "nhits": nh,
        }
    )
    truth = pd.DataFrame({"particle_id": hit_pid, "tz": tz})
    w = trackml_weights(hit_pid, tz, pid, particles.vz, particles.px, particles.py)
    np.testing.assert_allclose(w, _official(truth, particles), rtol=1e-10, atol=1e-15)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w[-30:] == 0)  # noise
    short = np.isin(hit_pid, pid[nh < 4])
    assert np.all(w[short] == 0)
    assert decode_vertex_id(pid).tolist() == (pid >> np.uint64(32)).astype(int).tolist()
