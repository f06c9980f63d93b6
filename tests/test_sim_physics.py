"""Pythia8 sources: hard scatter, pile-up vertices, displaced decays, determinism, overlay."""

import numpy as np
import pytest

from trackformers.sim.events import EventFactory
from trackformers.sim.noise import TRACKML_NOISE_FRACTION
from trackformers.sim.particle_id import decode_vertex_id


def _factory(process="minbias", mu=0.0, library=0, seed=5):
    return EventFactory(
        {
            "process": {"name": process},
            "pileup": mu,
            "seed": seed,
            "minbias_library": {"size": library},
        }
    )


@pytest.fixture(scope="module")
def minbias_pu():
    return _factory("minbias", mu=4.0)


def test_ttbar_hard_scatter_content():
    ev = _factory("ttbar").event(0)
    assert ev["pileup"] == 0 and np.all(ev["part_vertex_id"] == 0)
    assert np.all(ev["part_q"] != 0)  # charged only
    pt = np.hypot(ev["part_px"], ev["part_py"])
    eta = np.arcsinh(ev["part_pz"] / pt)
    gen = ev["part_process"] == 0  # the generator cuts; material secondaries may be softer
    assert pt[gen].min() >= 0.15 - 1e-6 and np.abs(eta[gen]).max() <= 4.2 + 1e-5
    assert len(np.unique(ev["part_particle_id"])) == len(ev["part_particle_id"]) > 100
    # decay products of long-lived hadrons (K0S, Lambda, ...) start at displaced vertices
    dv = np.hypot(
        ev["part_vx"] - np.median(ev["part_vx"]), ev["part_vy"] - np.median(ev["part_vy"])
    )
    assert (dv > 1.0).sum() >= 1
    assert set(np.abs(ev["part_pdg_id"])) >= {211, 321, 2212}
    assert len(ev["hit_id"]) > 5 * len(ev["part_particle_id"])


def test_pileup_vertices_are_distinct_and_encoded(minbias_pu):
    ev = minbias_pu.event(1)
    vids = np.unique(ev["part_vertex_id"])
    # (a diffractive vertex may leave no charged particle inside the acceptance)
    assert set(vids.tolist()) <= set(range(ev["pileup"] + 1)) and len(vids) >= 2
    np.testing.assert_array_equal(decode_vertex_id(ev["part_particle_id"]), ev["part_vertex_id"])
    # prompt particles of one vertex share its z; different vertices are spread by sigma_z
    vz = [np.median(ev["part_vz"][ev["part_vertex_id"] == v]) for v in vids]
    assert len(np.unique(np.round(vz, 3))) == len(vids)
    hit_v = decode_vertex_id(ev["hit_particle_id"][ev["hit_particle_id"] > 0])
    assert set(hit_v.tolist()) <= set(vids.tolist())


def test_physics_events_carry_trackml_noise_by_default(minbias_pu):
    ev = minbias_pu.event(1)
    noise = ev["hit_particle_id"] == 0
    mean = TRACKML_NOISE_FRACTION * (~noise).sum()  # Poisson mean of the noise count
    assert noise.sum() > 0 and abs(noise.sum() - mean) < 4 * np.sqrt(mean)
    assert np.all(ev["hit_weight"][noise] == 0)


def test_event_depends_only_on_seed_and_index(minbias_pu):
    a = minbias_pu.event(7)
    fresh = _factory("minbias", mu=4.0)
    fresh.event(3)  # history must not matter
    b = fresh.event(7)
    for k in ("part_px", "hit_x", "hit_particle_id", "pileup"):
        np.testing.assert_array_equal(a[k], b[k])
    c = _factory("minbias", mu=4.0, seed=6).event(7)
    assert len(c["part_px"]) != len(a["part_px"]) or not np.array_equal(c["part_px"], a["part_px"])


def test_library_overlay_rotates_and_moves_library_events():
    f = _factory("minbias", mu=6.0, library=8)
    lib = f.generator.library()
    assert len(lib) == 8
    ev = f.event(0)
    lib = [{k: v[t["q"] != 0] for k, v in t.items()} for t in lib]  # neutrals are not listed
    lib_pt = [np.sort(np.hypot(t["px"], t["py"])) for t in lib]
    lib_apz = [np.sort(np.abs(t["pz"])) for t in lib]
    phis = []
    for v in range(1, ev["pileup"] + 1):
        sel = (ev["part_vertex_id"] == v) & (ev["part_process"] == 0)  # no material secondaries
        if not sel.any():
            continue
        pt = np.sort(np.hypot(ev["part_px"][sel], ev["part_py"][sel]))
        apz = np.sort(np.abs(ev["part_pz"][sel]))
        match = [
            i
            for i in range(8)
            if len(lib_pt[i]) == len(pt)
            and np.allclose(lib_pt[i], pt)
            and np.allclose(lib_apz[i], apz)
        ]
        assert match, f"pile-up vertex {v} is not a library event"
        t = lib[match[0]]
        k = int(np.argmax(np.hypot(t["px"], t["py"])))
        j = int(np.argmax(np.hypot(ev["part_px"][sel], ev["part_py"][sel])))
        phis.append(
            np.arctan2(ev["part_py"][sel][j], ev["part_px"][sel][j])
            - np.arctan2(t["py"][k], t["px"][k])
        )
    assert len(phis) >= 3
    assert np.std(np.angle(np.exp(1j * np.asarray(phis)))) > 0.1  # random rotations


def test_tth_process_runs():
    ev = _factory("tth").event(0)
    assert len(ev["part_particle_id"]) > 100 and len(ev["hit_id"]) > 1000
