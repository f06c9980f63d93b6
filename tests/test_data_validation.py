"""Bad input: a clear error naming the file/field/value, or a counted repair warned once."""

import shutil
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot

from trackformers.data import reader
from trackformers.data.dataset import NativeEventStream
from trackformers.data.errors import DataError, DataRepairWarning, RepairLog
from trackformers.data.features import FeatureConfig
from trackformers.data.schema import ALL_BRANCHES, EVENT_BRANCHES
from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events

FIELDS = ("hit_id", "hit_x", "hit_y", "hit_z", "hit_particle_id")


def write_raw(path, events, overrides=None, drop=(), rename=None):
    """Write events with uproot directly, bypassing the (validating) sim writer."""
    overrides = overrides or {}
    rename = rename or {}
    cols = {}
    for k, dt in ALL_BRANCHES.items():
        if k in drop:
            continue
        dtype = overrides.get(k, dt)
        if k in EVENT_BRANCHES:
            cols[k] = np.array([e[k] for e in events], dtype=dtype)
        else:
            parts = [np.asarray(e[k], dtype=dtype) for e in events]
            cols[k] = ak.unflatten(np.concatenate(parts), [len(p) for p in parts])
    cols = {rename.get(k, k): v for k, v in cols.items()}
    types = {
        k: (v.dtype if isinstance(v, np.ndarray) else str(ak.type(v).content))
        for k, v in cols.items()
    }
    with uproot.recreate(path) as f:
        tree = f.mktree("events", types)
        tree.extend(cols)
    return path


@pytest.fixture
def events():
    return helix_events(6, seed=21, first_id=500)


def _repair_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, DataRepairWarning)]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.root"):
        list(reader.iter_chunks(tmp_path / "nope.root"))


def test_missing_and_renamed_branch(tmp_path, events):
    path = write_raw(tmp_path / "renamed.root", events, rename={"hit_x": "hit_xx"})
    with pytest.raises(
        DataError, match=r"renamed.root: missing branch\(es\) hit_x \(did you mean hit_xx"
    ):
        list(reader.iter_chunks(path))
    path = write_raw(tmp_path / "dropped.root", events, drop=("hit_particle_id",))
    with pytest.raises(DataError, match="dropped.root: missing branch.*hit_particle_id"):
        list(reader.iter_chunks(path))


def test_wrong_dtype_refused(tmp_path, events):
    path = write_raw(tmp_path / "float_ids.root", events, overrides={"hit_id": np.float64})
    with pytest.raises(DataError, match="float_ids.root: branch 'hit_id' holds floating float64"):
        list(reader.iter_chunks(path))
    events[0]["hit_volume_id"] = events[0]["hit_volume_id"].astype(np.int64)
    events[0]["hit_particle_id"] = events[0]["hit_particle_id"].astype(np.int64)
    events[0]["hit_particle_id"][0] = -5
    path = write_raw(tmp_path / "negative.root", events, overrides={"hit_particle_id": np.int64})
    with pytest.raises(DataError, match="negative.root: branch 'hit_particle_id' value -5"):
        list(reader.iter_chunks(path))


def test_compatible_dtype_cast_is_counted(tmp_path, events):
    path = write_raw(
        tmp_path / "wide.root", events, overrides={"hit_x": np.float64, "hit_volume_id": np.int64}
    )
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning, match="wide.root: 2 branches converted"):
        chunks = list(
            reader.iter_chunks(path, repairs=repairs, hit_fields=(*FIELDS, "hit_volume_id"))
        )
    assert chunks[0].hits["hit_x"].dtype == np.float32
    assert chunks[0].hits["hit_volume_id"].dtype == np.int32
    assert repairs.total("cast") == 2


def test_nan_rows_dropped_counted_warned_once(tmp_path, events):
    events[1]["hit_x"][[0, 5]] = np.nan
    events[4]["hit_z"][2] = np.inf
    path = write_raw(tmp_path / "nan.root", events)
    repairs = RepairLog()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        chunks = list(reader.iter_chunks(path, repairs=repairs, hit_fields=FIELDS, chunk_bytes=500))
    assert len(chunks) > 1  # several chunks, still one warning for the file
    msgs = _repair_warnings(rec)
    assert msgs == [f"{path}: 3 hits with NaN/inf values dropped (hit_x; hit_z)"]
    assert repairs.total("nonfinite_hits") == 3
    n = sum(c.num_hits for c in chunks)
    assert n == sum(len(e["hit_x"]) for e in events) - 3
    for c in chunks:
        assert np.isfinite(c.hits["hit_x"]).all() and np.isfinite(c.hits["hit_z"]).all()


def test_nan_drop_with_trailing_empty_event(tmp_path, events):
    for k in [k for k in ALL_BRANCHES if k.startswith("hit_")]:
        events[-1][k] = events[-1][k][:0]
    events[0]["hit_weight"][1] = np.nan  # any float hit field counts, named in the warning
    path = write_raw(tmp_path / "tail.root", events)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ids = [int(e["event_id"]) for e in reader.iter_events(path)]
    assert ids == [500, 501, 502, 503, 504]
    msgs = _repair_warnings(rec)
    assert f"{path}: 1 hits with NaN/inf values dropped (hit_weight)" in msgs
    assert f"{path}: 1 events without hits dropped" in msgs


def test_empty_events_dropped_and_counted(tmp_path, events):
    for k in [k for k in ALL_BRANCHES if k.startswith("hit_")]:
        events[2][k] = events[2][k][:0]
    path = write_raw(tmp_path / "empty.root", events)
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning, match="empty.root: 1 events without hits dropped"):
        ids = [int(e["event_id"]) for e in reader.iter_events(path, repairs=repairs)]
    assert ids == [500, 501, 503, 504, 505]


def test_duplicate_hit_ids(tmp_path, events):
    events[3]["hit_id"][7] = events[3]["hit_id"][2]
    path = write_raw(tmp_path / "dup.root", events)
    with pytest.raises(
        DataError, match=f"dup.root: event 503 holds hit id {events[3]['hit_id'][2]}"
    ):
        list(reader.iter_chunks(path))


def test_unsorted_unique_ids_pass(tmp_path, events):
    events[3]["hit_id"] = events[3]["hit_id"][::-1].copy()
    path = write_raw(tmp_path / "rev.root", events)
    assert sum(c.num_events for c in reader.iter_chunks(path)) == 6


def test_hits_without_truth_counted(tmp_path, events):
    events[0]["hit_particle_id"][events[0]["hit_particle_id"] != 0][:1]  # noqa: B018
    first_signal = int(np.flatnonzero(events[0]["hit_particle_id"] != 0)[0])
    events[0]["hit_particle_id"][first_signal] = 777777
    path = write_raw(tmp_path / "notruth.root", events)
    with pytest.warns(DataRepairWarning, match="notruth.root: 1 hits whose particle id is not in"):
        list(reader.iter_chunks(path, hit_fields=FIELDS, part_fields=("part_particle_id",)))


def _truncated(tmp_path, events):
    good = tmp_path / "good.root"
    write_events(good, events, {})
    data = good.read_bytes()
    bad = tmp_path / "truncated.root"
    bad.write_bytes(data[: len(data) // 2])
    return good, bad


def test_truncated_and_corrupt_files_name_the_file(tmp_path, events):
    _, bad = _truncated(tmp_path, events)
    with pytest.raises(DataError, match="truncated.root"):
        list(reader.iter_chunks(bad))
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"root" + bytes(range(256)) * 20)
    with pytest.raises(DataError, match="junk.root: not a readable ROOT file"):
        list(reader.iter_chunks(junk))
    with pytest.raises(DataError, match="truncated.root: truncated file: branch 'hit_"):
        NativeEventStream([bad], FeatureConfig(), max_tokens=100).plan()
    for codec in ("lz4:1", "zstd:1", "zlib:1"):  # every codec's decompression checks its data
        good = tmp_path / "good.root"
        write_events(good, events, {}, compression=codec)
        with uproot.open(good) as f:
            branch = f["events"]["hit_id"]
            seek = int(branch.member("fBasketSeek")[0])
            basket = branch.basket(0)
            keylen, nbytes = basket.member("fKeylen"), basket.member("fNbytes")
            assert nbytes - keylen < basket.member("fObjlen"), codec  # stored compressed
        data = bytearray(good.read_bytes())
        data[seek + keylen + 20 : seek + nbytes - 4] = bytes(nbytes - keylen - 24)  # payload
        corrupt = tmp_path / "corrupt.root"
        corrupt.write_bytes(bytes(data))
        with pytest.raises(DataError, match="corrupt.root: cannot read entries 0..6"):
            list(reader.iter_chunks(corrupt))


def test_rntuple_refused_clearly(tmp_path):
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["events"] = {"event_id": np.arange(3, dtype=np.uint64)}
    with pytest.raises(DataError, match="rntuple.root: 'events' is an RNTuple"):
        list(reader.iter_chunks(path))


def test_on_error_skip_and_raise(tmp_path, events):
    good, bad = _truncated(tmp_path, events)
    other = tmp_path / "other.root"
    write_events(other, helix_events(3, seed=1, first_id=900), {})
    missing = tmp_path / "missing.root"
    files = [good, bad, missing, other]
    with pytest.raises((DataError, FileNotFoundError), match="truncated.root"):
        list(reader.iter_chunks(files))
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning, match="files skipped"):
        ids = [
            int(e["event_id"]) for e in reader.iter_events(files, on_error="skip", repairs=repairs)
        ]
    assert ids == [500, 501, 502, 503, 504, 505, 900, 901, 902]
    assert repairs.total("skipped_files") == 2
    # the streaming dataset follows the same policy
    ds = NativeEventStream(files, FeatureConfig(), max_tokens=10_000, on_error="skip")
    with pytest.warns(DataRepairWarning):
        got = sorted(int(i) for b in ds for i in b.event_id)
    assert got == ids
    with pytest.raises(DataError, match="truncated.root"):
        NativeEventStream(files[:2], FeatureConfig(), max_tokens=10_000).plan()
    with pytest.raises(FileNotFoundError, match="missing.root"):
        NativeEventStream(files[2:], FeatureConfig(), max_tokens=10_000).plan()
    with pytest.raises(ValueError, match="on_error must be one of"):
        list(reader.iter_chunks(files, on_error="ignore"))


def test_mismatched_jagged_lengths(tmp_path, events):
    events[2]["hit_y"] = events[2]["hit_y"][:-1]
    path = write_raw(tmp_path / "ragged.root", events)
    with pytest.raises(DataError, match="ragged.root: branch 'hit_y' has .* values in entry 2"):
        list(reader.iter_chunks(path))


def test_copy_keeps_working(tmp_path, events):
    # a file copied elsewhere (no absolute paths inside) reads identically
    src = tmp_path / "a.root"
    write_events(src, events, {})
    dst = tmp_path / "sub" / "b.root"
    dst.parent.mkdir()
    shutil.copy(src, dst)
    assert len(reader.read_events(dst)) == len(events)
