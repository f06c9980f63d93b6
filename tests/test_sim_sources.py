"""Particle-table (TrackML particles.csv) input and the on-the-fly streaming dataset."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from trackformers.sim.events import EventFactory
from trackformers.sim.particle_table import ParticleTableError, read_particles_csv
from trackformers.sim.stream import SimulatedEventStream
from trackformers.simulate import run

GUN = {"name": "gun", "n_particles": [5, 8], "pt": [1.0, 5.0], "eta": [-2.0, 2.0]}


def _csv(path, n=20, seed=0, **drop_or_set):
    rng = np.random.default_rng(seed)
    pt, eta, phi = rng.uniform(0.5, 5, n), rng.uniform(-2, 2, n), rng.uniform(-3, 3, n)
    df = pd.DataFrame(
        {
            "particle_id": np.arange(1, n + 1) * 1000,
            "vx": 0.0,
            "vy": 0.0,
            "vz": rng.normal(0, 30, n),
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": pt * np.sinh(eta),
            "q": rng.choice([-1, 1], n),
            "nhits": 0,
            "particle_type": rng.choice([211, -211, 13], n),
        }
    )
    for k, v in drop_or_set.items():
        if v is None:
            df = df.drop(columns=k)
        else:
            df[k] = df[k].astype(object)
            df.loc[3, k] = v
    df.to_csv(path, index=False)
    return df


def test_resimulate_particles_csv(tmp_path):
    d = tmp_path / "truth"
    d.mkdir()
    dfs = [_csv(d / f"event00000000{i}-particles.csv", seed=i) for i in range(2)]
    out = run(
        {
            "process": {"name": "particles", "path": str(d)},
            "n_events": 2,
            "events_per_shard": 2,
            "output": str(tmp_path / "o"),
            "seed": 1,
            "pileup": 0,
            "progress": False,
        }
    )
    assert len(out) == 1
    f = EventFactory({"process": {"name": "particles", "path": str(d)}, "seed": 1})
    for i, df in enumerate(dfs):
        ev = f.event(i)
        # the table comes first, unchanged; material secondaries follow with their parents
        n = len(df)
        np.testing.assert_array_equal(ev["part_particle_id"][:n], df.particle_id.to_numpy())
        np.testing.assert_array_equal(ev["part_pdg_id"][:n], df.particle_type.to_numpy())
        np.testing.assert_allclose(ev["part_px"][:n], df.px, rtol=1e-6)
        assert np.all(ev["part_process"][:n] == 0) and np.all(ev["part_process"][n:] > 0)
        assert set(ev["part_parent_id"][n:].tolist()) <= set(ev["part_particle_id"].tolist())
        assert set(ev["hit_particle_id"].tolist()) <= set(ev["part_particle_id"].tolist())
        # |eta| < 2, pT > 0.5: every particle without a nuclear interaction leaves >= 4 hits
        whole = ~np.isin(ev["part_particle_id"][:n], ev["part_parent_id"][n:])
        assert ev["part_nhits"][:n][whole].min() >= 4
    with pytest.raises(ValueError, match="n_events=3 but the particle tables hold 2"):
        run(
            {
                "process": {"name": "particles", "path": str(d)},
                "n_events": 3,
                "events_per_shard": 2,
                "output": str(tmp_path / "p"),
                "seed": 1,
            }
        )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pz": None}, r"missing column\(s\) \['pz'\]"),
        ({"q": None, "vy": None}, r"missing column\(s\) \['vy', 'q'\]"),
        ({"vz": float("nan")}, "column 'vz' has an invalid value 'nan' at data row 3 \\(line 5\\)"),
        ({"px": "abc"}, "column 'px' has an invalid value 'abc' at data row 3"),
        ({"particle_id": 0}, "'particle_id' must be > 0"),
    ],
)
def test_bad_particle_table_names_column_and_row(tmp_path, change, message):
    path = tmp_path / "particles.csv"
    _csv(path, **change)
    with pytest.raises(ParticleTableError, match=message) as err:
        read_particles_csv(path)
    assert str(path) in str(err.value)
    with pytest.raises(ParticleTableError):  # and before any work: output stays empty
        run(
            {
                "process": {"name": "particles", "path": str(path)},
                "n_events": 1,
                "events_per_shard": 1,
                "output": str(tmp_path / "o"),
                "seed": 1,
            }
        )
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_stream_in_dataloader_workers_matches_factory():
    settings = {"process": GUN, "seed": 3, "pileup": 0}
    ds = SimulatedEventStream(settings, n_events=6)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    events = {int(e["event_id"]): e for e in loader}
    assert sorted(events) == list(range(6))  # each event once across workers
    ref = EventFactory(settings)
    for i, e in events.items():
        np.testing.assert_array_equal(e["hit_x"], ref.event(i)["hit_x"])
    ds.set_epoch(1)
    fresh = [int(e["event_id"]) for e in ds]
    assert fresh == list(range(6, 12))
    clone = pickle.loads(pickle.dumps(ds))  # spawn-started workers get a pickled copy
    assert clone._factory is None and [int(e["event_id"]) for e in clone] == fresh
    with pytest.raises(ValueError, match="unknown process"):
        SimulatedEventStream({"process": {"name": "zz"}}, n_events=2)
