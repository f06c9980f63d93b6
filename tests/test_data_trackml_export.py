"""TrackML CSV export (convert trackml-export), the cells import, and the bit-for-bit round trip
native -> CSV -> native."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import uproot

from trackformers.data import schema
from trackformers.data.convert import convert_trackml, main
from trackformers.data.errors import DataError, RepairLog
from trackformers.data.trackml import read_event
from trackformers.data.trackml_export import export_trackml
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.gun import GunConfig, ParticleGun
from trackformers.sim.particle_id import encode_particle_id
from trackformers.sim.writer import write_events

# the dtypes with which the TrackML library (trackml.dataset) reads each file
TRACKML_DTYPES = {
    "hits": {
        "hit_id": "i4",
        "x": "f4",
        "y": "f4",
        "z": "f4",
        "volume_id": "i4",
        "layer_id": "i4",
        "module_id": "i4",
    },
    "cells": {"hit_id": "i4", "ch0": "i4", "ch1": "i4", "value": "f4"},
    "particles": {
        "particle_id": "i8",
        "vx": "f4",
        "vy": "f4",
        "vz": "f4",
        "px": "f4",
        "py": "f4",
        "pz": "f4",
        "q": "i4",
        "nhits": "i4",
    },
    "truth": {
        "hit_id": "i4",
        "particle_id": "i8",
        "tx": "f4",
        "ty": "f4",
        "tz": "f4",
        "tpx": "f4",
        "tpy": "f4",
        "tpz": "f4",
        "weight": "f4",
    },
}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """Three simulated gun events with noise, cells and 64-bit particle ids (vertex field)."""
    gun = ParticleGun(GunConfig())
    sim = DetectorSim(DetectorConfig(noise_fraction=0.1))
    rng = np.random.default_rng(4)
    events = []
    for i in range(3):
        parts, _ = gun.event(rng, i)
        # a large vertex field: ids beyond 2^53, which a float64 would corrupt
        parts["particle_id"] = encode_particle_id(
            np.full(len(parts["particle_id"]), 2**30 + 7), np.arange(len(parts["particle_id"]))
        )
        events.append(sim.simulate(parts, event_id=100 + i, pileup=0, seed=i))
    path = tmp_path_factory.mktemp("native") / "events.root"
    write_events(path, events, {"test": True})
    return path


def _branches(path):
    with uproot.open(path) as f:
        return f[schema.TREE_NAME].arrays(library="np")


def test_round_trip_is_bit_for_bit(native, tmp_path):
    assert main(["trackml-export", str(native), str(tmp_path / "csv")]) == 0
    n, files = convert_trackml(tmp_path / "csv", tmp_path / "back")
    assert n == 3
    a, b = _branches(native), _branches(files[0])
    assert set(a) == set(b)
    assert {"hit_ncells", "cell_hit_id", "cell_value"} <= set(a)
    for k in a:
        for x, y in zip(a[k], b[k], strict=True):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype, k
            assert x.tobytes() == y.tobytes(), k  # bit for bit, ids included
    pid = np.concatenate(list(a["part_particle_id"]))
    assert pid.max() > 2**53


def test_export_files_follow_trackml_conventions(native, tmp_path, capsys):
    assert main(["trackml-export", str(native), str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 3 and summary["files"] == 12
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(re.fullmatch(r"event\d{9}-(hits|cells|particles|truth)\.csv", n) for n in names)
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    ev = next(iter(_events(native)))
    prefix = tmp_path / f"event{int(ev['event_id']):09d}"
    tables = {}
    for kind, dtypes in TRACKML_DTYPES.items():
        df = pd.read_csv(f"{prefix}-{kind}.csv", dtype=dtypes)
        assert list(df.columns)[: len(dtypes)] == list(dtypes), kind
        tables[kind] = df
    hits, truth, parts, cells = (tables[k] for k in ("hits", "truth", "particles", "cells"))
    assert hits["hit_id"].tolist() == list(range(1, len(hits) + 1))
    assert (truth["hit_id"] == hits["hit_id"]).all()
    assert set(cells["hit_id"]) == set(hits["hit_id"])  # every hit has cells
    noise = truth["particle_id"] == 0
    assert noise.any() and (truth["weight"][noise] == 0).all()
    np.testing.assert_array_equal(
        parts["particle_id"].to_numpy().astype(np.uint64), ev["part_particle_id"]
    )


def _events(path):
    from trackformers.data.trackml_export import iter_native_events

    return iter_native_events(path)


def test_particle_ids_beyond_int64_are_refused(tmp_path):
    from trackformers.data.synthetic import helix_events

    ev = helix_events(1, seed=2, first_id=0, n_particles=3)[0]
    big = np.uint64(2**63 + 5)
    ev["part_particle_id"] = ev["part_particle_id"] + big
    ev["hit_particle_id"] = np.where(ev["hit_particle_id"] != 0, ev["hit_particle_id"] + big, 0)
    write_events(tmp_path / "a.root", [ev], {})
    with pytest.raises(DataError, match="int64"):
        export_trackml(tmp_path / "a.root", tmp_path / "csv")


def _write_small_event(d, cells: pd.DataFrame | None):
    d.mkdir(parents=True, exist_ok=True)
    pre = d / "event000000007"
    pd.DataFrame(
        {
            "hit_id": [1, 2, 3],
            "x": [32.0, 72.0, 70.0],
            "y": [0.5, 1.0, 700.0],
            "z": [10.0, 20.0, 1500.0],
            "volume_id": [8, 8, 13],
            "layer_id": [2, 4, 2],
            "module_id": [1, 2, 3],
        }
    ).to_csv(f"{pre}-hits.csv", index=False)
    pd.DataFrame(
        {
            "hit_id": [1, 2, 3],
            "particle_id": [5, 5, 0],
            **{c: 0.0 for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
            "weight": [0.5, 0.5, 0.0],
        }
    ).to_csv(f"{pre}-truth.csv", index=False)
    pd.DataFrame(
        {
            "particle_id": [5],
            "vx": [0.0],
            "vy": [0.0],
            "vz": [0.0],
            "px": [1.0],
            "py": [0.0],
            "pz": [0.0],
            "q": [1],
            "nhits": [2],
        }
    ).to_csv(f"{pre}-particles.csv", index=False)
    if cells is not None:
        cells.to_csv(f"{pre}-cells.csv", index=False)
    return str(pre)


def test_import_reads_a_hand_made_cells_file(tmp_path):
    cells = pd.DataFrame(
        {
            "hit_id": [1, 1, 1, 3, 9],  # hit 2 has no cells, hit 9 does not exist
            "ch0": [100, 100, 101, 40, 0],
            "ch1": [500, 502, 501, 3, 0],
            "value": [0.01, 0.02, 0.005, 0.08, 0.1],
        }
    )
    repairs = RepairLog()
    ev = read_event(_write_small_event(tmp_path, cells), 7, repairs, "src")
    assert ev["hit_ncells"].tolist() == [3, 0, 1]
    assert ev["hit_size_u"].tolist() == [2, 0, 1] and ev["hit_size_v"].tolist() == [3, 0, 1]
    np.testing.assert_allclose(ev["hit_charge"], [0.035, 0.0, 0.08], rtol=1e-6)
    # pixel pitch 50 x 56.25 um, thickness 0.15 mm (TrackML geometry)
    l_u, l_v = 2 * 0.05, 3 * 0.05625
    np.testing.assert_allclose(ev["hit_leta"][0], np.arcsinh(0.15 / np.hypot(l_u, l_v)), 1e-6)
    np.testing.assert_allclose(ev["hit_lphi"][0], np.arctan2(l_v, l_u), rtol=1e-6)
    assert ev["cell_hit_id"].tolist() == [1, 1, 1, 3]
    assert ev["cell_ch1"].tolist() == [500, 502, 501, 3]  # file order within a hit
    assert repairs.total("cells_without_hit") == 1
    # without a cells file the event has no cluster branches
    ev = read_event(_write_small_event(tmp_path / "nocells", None), 7, RepairLog(), "src")
    assert "hit_ncells" not in ev and "cell_hit_id" not in ev


def test_import_names_a_bad_cells_file(tmp_path):
    bad = pd.DataFrame({"hit_id": [1], "ch0": [1], "value": [0.1]})
    with pytest.raises(DataError, match=r"cells\.csv: missing column\(s\) \['ch1'\]"):
        read_event(_write_small_event(tmp_path, bad), 7, RepairLog(), "src")


def test_hit_ids_are_renumbered_from_one_with_their_cells(tmp_path, capsys):
    from trackformers.data.synthetic import helix_events

    ev = helix_events(1, seed=3, first_id=0, n_particles=3)[0]
    n = len(ev["hit_id"])
    ev["hit_id"] = (np.arange(n, dtype=np.uint64) * 10 + 7)[::-1].copy()  # 10 n - 3 ... 7
    ev.update(
        cell_hit_id=ev["hit_id"][[0, 0, -1]],
        cell_ch0=np.array([1, 2, 3], np.int32),
        cell_ch1=np.array([4, 4, 5], np.int32),
        cell_value=np.array([0.1, 0.2, 0.3], np.float32),
        hit_ncells=np.zeros(n, np.int32),
        hit_charge=np.zeros(n, np.float32),
        hit_size_u=np.zeros(n, np.int32),
        hit_size_v=np.zeros(n, np.int32),
        hit_leta=np.zeros(n, np.float32),
        hit_lphi=np.zeros(n, np.float32),
    )
    write_events(tmp_path / "a.root", [ev], {})
    assert export_trackml(tmp_path / "a.root", tmp_path / "csv")["renumbered_events"] == 1
    pre = tmp_path / "csv" / f"event{int(ev['event_id']):09d}"
    hits = pd.read_csv(f"{pre}-hits.csv")
    cells = pd.read_csv(f"{pre}-cells.csv")
    assert sorted(hits["hit_id"]) == list(range(1, n + 1))
    # the first native hit has the largest id -> TrackML id n; the last one -> 1
    assert hits["hit_id"].iloc[0] == n and cells["hit_id"].tolist() == [n, n, 1]
    np.testing.assert_array_equal(hits["x"].to_numpy(np.float32), ev["hit_x"])
    # a missing input is reported, not a traceback
    assert main(["trackml-export", str(tmp_path / "nope.root"), str(tmp_path / "o")]) == 1
    assert "nope.root" in capsys.readouterr().err
