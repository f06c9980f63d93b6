"""trackformers.reproduce.track_spread (benchmarks/track_spread.py): the spread of a track's
hit-etas, barrel vs endcap."""

import numpy as np
import pytest

from trackformers.reproduce import track_spread


def _event():
    """Particle 1: barrel (volume 8), eta 0.3 from z0 = 50 mm; particle 2: endcap (volume 9),
    eta 2.5 from z0 = 50 mm; particle 3 below the pT cut; one noise hit."""
    radii = np.array([32.0, 72.0, 116.0, 172.0])
    zb = 50.0 + radii * np.sinh(0.3)
    ze = np.array([600.0, 700.0, 800.0])
    re = (ze - 50.0) / np.sinh(2.5)
    phi = 0.4
    x = np.concatenate([radii * np.cos(phi), re * np.cos(phi), [40.0, 80.0, 120.0], [5.0]])
    y = np.concatenate([radii * np.sin(phi), re * np.sin(phi), [1.0, 2.0, 3.0], [5.0]])
    z = np.concatenate([zb, ze, [0.0, 0.0, 0.0], [1.0]])
    return {
        "event_id": 7,
        "hit_x": x,
        "hit_y": y,
        "hit_z": z,
        "hit_particle_id": np.array([1] * 4 + [2] * 3 + [3] * 3 + [0]),
        "hit_volume_id": np.array([8] * 4 + [9] * 3 + [8] * 3 + [8]),
        "part_particle_id": np.array([1, 2, 3]),
        "part_px": np.array([2.0, 2.0, 0.5]),
        "part_py": np.array([0.0, 0.0, 0.0]),
        "part_pz": np.array([2.0 * np.sinh(0.3), 2.0 * np.sinh(2.5), 0.0]),
        "part_vz": np.array([50.0, 50.0, 0.0]),
    }


def test_barrel_hit_eta_range_is_the_vertex_shift():
    res = track_spread.spread(_event())
    want = np.arcsinh(50.0 / 32 + np.sinh(0.3)) - np.arcsinh(50.0 / 172 + np.sinh(0.3))
    assert res["barrel"]["particles"] == 1 and res["endcap"]["particles"] == 1  # pT cut, noise
    assert res["barrel"]["eta_range_median"] == pytest.approx(want, rel=1e-9)
    assert res["barrel"]["vz_abs_median"] == 50.0
    endcap = res["endcap"]["eta_range_median"]
    assert 0 < endcap < res["barrel"]["eta_range_median"] / 5  # far disks barely move
    assert res["barrel"]["phi_range_median"] == pytest.approx(0.0, abs=1e-12)  # straight line


def test_phi_range_unwraps_at_pi():
    ev = _event()
    phi = np.array([np.pi - 0.01, -np.pi + 0.01, np.pi - 0.02, -np.pi + 0.02])  # across +-pi
    r = np.hypot(ev["hit_x"][:4], ev["hit_y"][:4])
    ev["hit_x"][:4], ev["hit_y"][:4] = r * np.cos(phi), r * np.sin(phi)
    assert track_spread.spread(ev)["barrel"]["phi_range_median"] == pytest.approx(0.04)


def test_reads_native_files_and_refuses_an_empty_folder(tmp_path):
    from trackformers.sim.writer import write_events

    ev = _event()
    nh, npart = len(ev["hit_x"]), len(ev["part_particle_id"])
    full = ev | {
        "pileup": 0,
        "hit_id": np.arange(1, nh + 1),
        "hit_layer_id": np.full(nh, 2),
        "hit_module_id": np.arange(nh),
        "hit_weight": np.full(nh, 1.0 / nh),
        **{f"hit_t{c}": ev[f"hit_{c}"] for c in "xyz"},
        **{f"hit_tp{c}": np.ones(nh) for c in "xyz"},
        "part_pdg_id": np.full(npart, 211),
        "part_vertex_id": np.zeros(npart, dtype=np.int64),
        "part_vx": np.zeros(npart),
        "part_vy": np.zeros(npart),
        "part_q": np.ones(npart),
        "part_nhits": np.array([4, 3, 3]),
        "part_parent_id": np.zeros(npart, np.uint64),
        "part_process": np.zeros(npart, np.int32),
    }
    write_events(tmp_path / "e.root", [full], {})
    (read,) = track_spread.main([str(tmp_path), "--events", "5"])
    # float32 on disk
    assert read["barrel"] == pytest.approx(track_spread.spread(ev)["barrel"], rel=1e-6, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        track_spread.main([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .root files"):
        track_spread.main([str(tmp_path / "empty")])
