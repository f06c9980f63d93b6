"""Native ROOT writer: schema, counters, metadata, atomicity, validation, reproducibility."""

import hashlib

import numpy as np
import pytest
import uproot

from trackformers.data import schema
from trackformers.sim.detector import DetectorSim
from trackformers.sim.gun import GunConfig, ParticleGun
from trackformers.sim.writer import EventFormatError, read_metadata, write_events


def _events(n=3, seed=0):
    sim, gun = DetectorSim(), ParticleGun(GunConfig(n_particles=(3, 6)))
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        parts, pu = gun.event(rng)
        out.append(sim.simulate(parts, event_id=i, pileup=pu, seed=i))
    return out


def test_roundtrip_branches_dtypes_and_metadata(tmp_path):
    events = _events()
    path = tmp_path / "a.root"
    assert write_events(path, events, {"seed": 5}) == 3
    with uproot.open(path) as f:
        tree = f[schema.TREE_NAME]
        assert tree.num_entries == 3
        assert "events" in f and schema.METADATA_KEY in f
        arr = tree.arrays()
    for name, dtype in schema.ALL_BRANCHES.items():
        flat = arr[name] if name in schema.EVENT_BRANCHES else arr[name][0]
        assert flat.to_numpy().dtype == dtype, name
    assert read_metadata(path) == {"seed": 5}
    for i, ev in enumerate(events):
        assert arr["nhit"][i] == len(ev["hit_id"]) > 0
        assert arr["npart"][i] == len(ev["part_particle_id"])
        np.testing.assert_array_equal(arr["hit_x"][i].to_numpy(), ev["hit_x"])
        np.testing.assert_array_equal(arr["part_nhits"][i].to_numpy(), ev["part_nhits"])
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_same_input_gives_identical_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_events(tmp_path / "a" / "s.root", _events(seed=1), {"x": 1})
    write_events(tmp_path / "b" / "s.root", _events(seed=1), {"x": 1})
    digest = [hashlib.sha256((tmp_path / d / "s.root").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda e: e.pop("hit_tz"), "missing key"),
        (lambda e: e.update(hit_x=e["hit_x"][:-1]), "'hit_x' has length"),
        (lambda e: e.update(part_q=np.append(e["part_q"], 1)), "'part_q' has length"),
        (lambda e: e["hit_y"].__setitem__(0, np.nan), "'hit_y' has a non-finite value at row 0"),
    ],
)
def test_bad_event_is_rejected_and_leaves_no_file(tmp_path, break_it, message):
    events = _events(2)
    break_it(events[1])
    with pytest.raises(EventFormatError, match=message) as err:
        write_events(tmp_path / "bad.root", events, {})
    assert "event #1" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_file(tmp_path):
    def gen():
        yield from _events(2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_events(tmp_path / "x.root", gen(), {}, basket_events=1)
    assert list(tmp_path.iterdir()) == []


def test_baskets_bounded_by_hits_keep_content(tmp_path):
    events = _events(5, seed=3)
    write_events(tmp_path / "a.root", events, {}, basket_hits=1)  # one event per basket
    write_events(tmp_path / "b.root", events, {})
    a = uproot.open(tmp_path / "a.root")["events"]
    assert a["hit_x"].num_baskets == 5
    b = uproot.open(tmp_path / "b.root")["events"].arrays()
    for name in schema.ALL_BRANCHES:
        assert a[name].array().tolist() == b[name].tolist()


def test_compression_default_is_lz4_and_configurable(tmp_path):
    from trackformers.sim.writer import compression_codec

    events = _events()
    sizes = {}
    for spec, want in (
        (None, uproot.LZ4(1)),
        ("zstd:3", uproot.ZSTD(3)),
        ("ZLIB", uproot.ZLIB(1)),
        ("none", None),
    ):
        assert repr(compression_codec(spec)) == repr(want)
        path = tmp_path / f"{spec}.root"
        kwargs = {} if spec is None else {"compression": spec}
        write_events(path, events, {}, **kwargs)
        sizes[spec] = path.stat().st_size
        with uproot.open(path) as f:
            assert repr(f.file.compression) == repr(want)
            arr = f[schema.TREE_NAME].arrays(["hit_id", "hit_x"])
        np.testing.assert_array_equal(arr["hit_x"][1].to_numpy(), events[1]["hit_x"])
    assert sizes["none"] > max(sizes[s] for s in (None, "zstd:3", "ZLIB"))
    for bad, message in (
        ("snappy", "unknown compression 'snappy'"),
        ("lz4:x", "level must be an integer"),
        ("zstd:0", "level must be 1..9"),
        (3, "compression must be a string"),
    ):
        with pytest.raises(ValueError, match=message):
            write_events(tmp_path / "bad.root", events, {}, compression=bad)
    assert not (tmp_path / "bad.root").exists()
