"""Native ROOT reader: round trip through the sim writer, chunking, awkward and per-event views."""

import awkward as ak
import numpy as np
import pytest

from trackformers.data import reader
from trackformers.data.schema import ALL_BRANCHES, HIT_BRANCHES
from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events


@pytest.fixture(scope="module")
def native_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("native") / "events.root"
    events = helix_events(30, seed=3, first_id=100)
    write_events(path, events, {"source": "test"})
    return path, events


def test_round_trip_every_branch(native_file):
    path, events = native_file
    back = reader.read_events(path)
    assert len(back) == len(events)
    for a, b in zip(events, back, strict=True):
        assert set(b) == set(ALL_BRANCHES)
        for k, dt in ALL_BRANCHES.items():
            assert np.asarray(b[k]).dtype == dt, k
            np.testing.assert_array_equal(np.asarray(a[k], dtype=dt), b[k], err_msg=k)
    assert reader.read_metadata(path) == {"source": "test"}


def test_chunks_follow_memory_budget(native_file):
    path, events = native_file
    spec = reader.ReadSpec(hit_fields=("hit_x", "hit_y", "hit_z"), chunk_bytes=4000)
    chunks = list(reader.iter_chunks(path, spec))
    per_event_bytes = 12 * np.mean([len(e["hit_x"]) for e in events])
    assert len(chunks) > 5
    assert all(c.num_events <= 4000 / per_event_bytes * 1.5 + 1 for c in chunks)
    ids = np.concatenate([c.event_ids for c in chunks])
    np.testing.assert_array_equal(ids, [e["event_id"] for e in events])
    assert set(chunks[0].hits) == {"hit_x", "hit_y", "hit_z"}  # only requested branches
    x = np.concatenate([c.hits["hit_x"] for c in chunks])
    np.testing.assert_array_equal(x, np.concatenate([e["hit_x"] for e in events]))


def test_awkward_view(native_file):
    path, events = native_file
    arrays = list(reader.iter_awkward(path, hit_fields=tuple(HIT_BRANCHES)))
    arr = ak.concatenate(arrays)
    assert len(arr) == len(events)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(arr.hit_x)), [len(e["hit_x"]) for e in events])
    np.testing.assert_array_equal(ak.to_numpy(arr.hit_z[7]), events[7]["hit_z"])


def test_list_files(tmp_path):
    for name in ("b.root", "a.root", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in reader.list_files(tmp_path)] == ["a.root", "b.root"]
    assert [p.name for p in reader.list_files(str(tmp_path / "*.root"))] == ["a.root", "b.root"]
    with pytest.raises(FileNotFoundError, match="no .*files match"):
        reader.list_files(str(tmp_path / "*.parquet"))
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.root files in directory"):
        reader.list_files(tmp_path / "sub")


def test_many_files_stream_in_order(tmp_path):
    for i in range(3):
        write_events(tmp_path / f"shard_{i}.root", helix_events(4, seed=i, first_id=10 * i), {})
    ids = [int(e["event_id"]) for e in reader.iter_events(tmp_path)]
    assert ids == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]


def test_event_of_200k_hits(tmp_path):
    from trackformers.data.dataset import NativeEventStream
    from trackformers.data.features import FeatureConfig

    rng = np.random.default_rng(0)
    ev = helix_events(1, seed=4)[0]
    n = 200_000
    reps = -(-n // len(ev["hit_x"]))
    for k in [k for k in ev if k.startswith("hit_")]:
        ev[k] = np.tile(ev[k], reps)[:n]
    ev["hit_id"] = rng.permutation(n).astype(np.uint64) + 1
    write_events(tmp_path / "big.root", [ev, helix_events(1, seed=5, first_id=1)[0]], {})
    ds = NativeEventStream(
        [tmp_path / "big.root"], FeatureConfig(targets=("eta",)), max_tokens=50_000
    )
    batches = list(ds)
    assert [b.num_hits for b in batches][0] == n and batches[0].max_seqlen == n
    assert batches[0].num_events == 1  # larger than the budget: alone, never split or dropped
    assert sum(b.num_events for b in batches) == 2


def test_files_are_streamed_lazily(tmp_path):
    write_events(tmp_path / "a.root", helix_events(2, seed=1), {})
    it = reader.iter_chunks([tmp_path / "a.root", tmp_path / "later_missing.root"])
    first = next(it)  # the second file is not touched before the first is consumed
    assert first.num_events == 2
    with pytest.raises(FileNotFoundError, match="later_missing.root"):
        next(it)


def test_files_open_with_plain_positioned_reads(native_file):
    """Not uproot's default fsspec source (an asyncio thread; ~1.5x the CPU per chunk)."""
    import uproot

    tree = reader.open_tree(native_file[0])
    try:
        assert isinstance(tree.file.source, uproot.source.file.MultithreadedFileSource)
        assert tree.num_entries > 0
    finally:
        tree.file.close()
