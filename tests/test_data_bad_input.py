"""Bad importer input never becomes wrong data: 64-bit ids stay exact, missing ids/weights are
refused with file, column and row, header-only files say "no rows", `convert` publishes complete
datasets only, ACTS events without hits are kept, a missing ACTS particle-id branch is named."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uproot
from test_data_convert import BIG, write_acts, write_trackml

from trackformers.data import reader
from trackformers.data.convert import convert_acts, convert_trackml, main
from trackformers.data.errors import DataError, DataRepairWarning, RepairLog
from trackformers.data.synthetic import helix_events

ROOT = Path(__file__).resolve().parents[1]
TOP = np.uint64(1) << np.uint64(60)  # float64 steps by 256 here: ids 2^60 + k collide


def _by_event(native_dir):
    return {int(e["event_id"]): e for e in reader.iter_events(native_dir)}


def _set_cell(path, column, row, text):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = text
    df.to_csv(path, index=False)


def _listing(d):
    return sorted(p.name for p in Path(d).iterdir())


@pytest.fixture
def events():
    """Three small events with TrackML-like ids (primary vertex 1 in the top bits)."""
    evs = helix_events(3, seed=31, first_id=0, n_particles=8, noise_fraction=0.1)
    for ev in evs:
        for k in ("hit_particle_id", "part_particle_id"):
            ev[k] = np.where(ev[k] != 0, ev[k] + BIG, 0).astype(np.uint64)
    return evs


# ---- TrackML CSV: ids, missing values, header-only files ---------------------------------------
@pytest.fixture
def big_id_events():
    evs = helix_events(2, seed=7, first_id=0, n_particles=10, noise_fraction=0.1)
    for ev in evs:
        for k in ("hit_particle_id", "part_particle_id"):
            ev[k] = np.where(ev[k] != 0, ev[k] + TOP, 0).astype(np.uint64)
    return evs


def test_trackml_ids_above_2_53_stay_exact_when_truth_rows_are_missing(tmp_path, big_id_events):
    ev = big_id_events[0]
    assert len(np.unique(ev["part_particle_id"].astype(np.float64))) < len(ev["part_particle_id"])
    src = write_trackml(tmp_path / "csv", big_id_events)
    truth_file = src / "event000001000-truth.csv"
    truth = pd.read_csv(truth_file, dtype={"particle_id": "UInt64"})
    lost = truth["hit_id"].iloc[[1, 5]].to_numpy(dtype=np.uint64)
    truth.drop(index=[1, 5]).to_csv(truth_file, index=False)
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning) as rec:
        convert_trackml(src, tmp_path / "out", repairs=repairs)
    msgs = [str(w.message) for w in rec]
    assert msgs == [
        f"{src}: 2 hits without a truth row, kept as noise (event000001000-truth.csv)"
    ]  # the truth file is blamed, no spurious "missing from the particle file"
    assert repairs.total("particles_without_row") == 0
    got = _by_event(tmp_path / "out")
    for orig in big_id_events:
        g = got[1000 + int(orig["event_id"])]
        assert g["part_particle_id"].dtype == np.uint64
        np.testing.assert_array_equal(g["part_particle_id"], orig["part_particle_id"])
        assert len(np.unique(g["part_particle_id"])) == len(orig["part_particle_id"])
        want = orig["hit_particle_id"].copy()
        if orig is ev:
            want[np.isin(orig["hit_id"], lost)] = 0  # no truth row: noise
        np.testing.assert_array_equal(g["hit_particle_id"], want)


@pytest.mark.parametrize(
    "kind, column, text",
    [
        ("hits", "volume_id", ""),
        ("hits", "layer_id", "nan"),
        ("hits", "module_id", ""),
        ("truth", "particle_id", ""),
        ("truth", "weight", "nan"),
        ("truth", "weight", "inf"),
        ("particles", "particle_id", "NaN"),
        ("particles", "nhits", ""),
    ],
)
def test_trackml_missing_id_or_weight_is_refused_with_file_column_row(
    tmp_path, events, kind, column, text
):
    src = write_trackml(tmp_path / "csv", events)
    _set_cell(src / f"event000001001-{kind}.csv", column, 3, text)
    with pytest.raises(
        DataError,
        match=f"event000001001-{kind}.csv: column '{column}' has no valid value in row 3 "
        r"\(line 5\)",
    ):
        convert_trackml(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning, match="1 events skipped"):
        n, _ = convert_trackml(src, tmp_path / "out", on_error="skip", repairs=repairs)
    assert n == 2 and sorted(_by_event(tmp_path / "out")) == [1000, 1002]


@pytest.mark.parametrize(
    "kind, column, text, why",
    [
        ("truth", "particle_id", "-4", "not a non-negative 64-bit integer"),
        ("particles", "particle_id", "12ab", "not a non-negative 64-bit integer"),
        ("particles", "particle_id", "18446744073709551616", "not a non-negative 64-bit"),
        ("hits", "volume_id", "8.5", "not a 64-bit integer"),
    ],
)
def test_trackml_non_integer_id_is_refused(tmp_path, events, kind, column, text, why):
    src = write_trackml(tmp_path / "csv", events)
    _set_cell(src / f"event000001002-{kind}.csv", column, 2, text)
    with pytest.raises(
        DataError, match=f"event000001002-{kind}.csv: column '{column}' row 2 \\(line 4\\): .*{why}"
    ):
        convert_trackml(src, tmp_path / "out")


@pytest.mark.parametrize("kind", ["hits", "truth", "particles"])
def test_trackml_header_only_file_says_no_rows(tmp_path, events, kind):
    src = write_trackml(tmp_path / "csv", events)
    f = src / f"event000001000-{kind}.csv"
    f.write_text(f.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=f"event000001000-{kind}.csv: no rows"):
        convert_trackml(src, tmp_path / "out")


def test_convert_cli_prints_each_repair_once(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events)
    _set_cell(src / "event000001000-hits.csv", "x", 2, "nan")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackformers.data.convert",
            "trackml",
            str(src),
            str(tmp_path / "o"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("1 hits with NaN/inf values dropped (event000001000-hits.csv)") == 1
    assert "truth rows" not in r.stderr  # the dropped hit's truth row is not an orphan


# ---- convert: complete datasets only -----------------------------------------------------------
def test_convert_refuses_stale_shards_and_overwrite_replaces_them(tmp_path, events):
    three = write_trackml(tmp_path / "three", events)
    one = write_trackml(tmp_path / "one", events[:1])
    out = tmp_path / "out"
    convert_trackml(three, out, events_per_file=1)
    assert _listing(out) == ["shard_00000.root", "shard_00001.root", "shard_00002.root"]
    with pytest.raises(FileExistsError, match=f"{out} is not empty .*shard_00000.root.*overwrite"):
        convert_trackml(one, out, events_per_file=1)
    assert len(_by_event(out)) == 3  # refused before anything was touched
    n, files = convert_trackml(one, out, events_per_file=1, overwrite=True)
    assert n == 1 and files == [out / "shard_00000.root"]
    assert _listing(out) == ["shard_00000.root"] and sorted(_by_event(out)) == [1000]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not shards \\(notes.txt\\)"):
        convert_trackml(three, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert main(["trackml", str(three), str(tmp_path / "cli")]) == 0
    assert main(["trackml", str(one), str(tmp_path / "cli")]) == 1
    assert main(["trackml", str(one), str(tmp_path / "cli"), "--overwrite"]) == 0
    assert sorted(_by_event(tmp_path / "cli")) == [1000]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_convert_failing_midway_publishes_nothing(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events, skip={(2, "truth")})
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="event000001002-truth.csv"):
        convert_trackml(src, out, events_per_file=1)  # shards 0 and 1 were written first
    assert not out.exists()
    good = write_trackml(tmp_path / "good", events[:2])
    convert_trackml(good, out)
    before = (out / "shard_00000.root").read_bytes()
    with pytest.raises(FileNotFoundError):
        convert_trackml(src, out, events_per_file=1, overwrite=True)
    assert _listing(out) == ["shard_00000.root"]
    assert (out / "shard_00000.root").read_bytes() == before  # the old dataset is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- ACTS ROOT ---------------------------------------------------------------------------------
def test_acts_event_without_hits_is_kept_and_skipped_downstream_with_a_count(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    evs = helix_events(5, seed=3, first_id=0, n_particles=6, noise_fraction=0.0)
    for ev in evs:
        for k in ("hit_particle_id", "part_particle_id"):
            ev[k] = np.where(ev[k] != 0, ev[k] + BIG, 0).astype(np.uint64)
    empty = dict(evs[2], hit_particle_id=np.zeros_like(evs[2]["hit_particle_id"]))
    hits, parts = write_acts(tmp_path / "acts", [*evs[:2], empty, *evs[3:]], "particle_id")
    n, _ = convert_acts(hits, parts, tmp_path / "native")
    got = {int(e["event_id"]): e for e in reader.iter_events(tmp_path / "native", validate=False)}
    assert n == 5 and sorted(got) == [0, 1, 2, 3, 4]
    assert len(got[2]["hit_id"]) == 0 and len(got[1]["hit_id"]) > 0
    np.testing.assert_array_equal(got[2]["part_particle_id"], evs[2]["part_particle_id"])
    assert (got[2]["part_nhits"] == 0).all()
    conf = ROOT / "conf" / "data"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "trackml_pixel",
            overrides=[f"path={tmp_path / 'native'}", "val_fraction=0.0", "test_fraction=0.0"],
        )
    with pytest.warns(DataRepairWarning, match="1 events without hits dropped"):
        batches = list(instantiate(cfg).train_dataloader())
    assert sum(b.num_events for b in batches) == 4


def _drop_branch(path, tree, branch):
    with uproot.open(path) as f:
        t = f[tree]
        arrays = {k: t[k].array() for k in t.keys() if k != branch}
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: v.type.content for k, v in arrays.items()})
        f[tree].extend(arrays)


def test_acts_particles_without_particle_id_names_file_and_branch(tmp_path, events):
    hits, parts = write_acts(tmp_path / "acts", events, "particle_id")
    _drop_branch(parts, "particles", "particle_id")
    with pytest.raises(
        DataError, match="particles.root: tree 'particles' has no branch particle_id"
    ):
        convert_acts(hits, parts, tmp_path / "out")
    repairs = RepairLog()
    with (
        pytest.warns(DataRepairWarning, match="3 events skipped.*no branch particle_id"),
        pytest.raises(DataError, match="no event could be converted"),
    ):
        convert_acts(hits, parts, tmp_path / "out", on_error="skip", repairs=repairs)
    assert repairs.total("skipped_events") == 3 and not (tmp_path / "out").exists()
    with pytest.warns(DataRepairWarning, match="3 events skipped"):
        assert main(["acts", str(hits), str(parts), str(tmp_path / "o"), "--on-error", "skip"]) == 1


# ---- writes that fail ----------------------------------------------------------------------------
def test_cache_write_failing_with_efbig_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from trackformers.data import cache
    from trackformers.data.features import FeatureConfig

    class TooLarge:
        def __init__(self, path, mode):
            self.fh = open(path, mode)  # noqa: SIM115 - closed in close()

        def write(self, data):
            raise OSError(errno.EFBIG, "File too large")  # as write(2) past RLIMIT_FSIZE

        def close(self):
            self.fh.close()

    monkeypatch.setattr(cache, "open", TooLarge, raising=False)
    sample = ROOT / "data" / "sample" / "gun" / "shard_00000.root"
    with pytest.raises(OSError, match=f"File too large: '{tmp_path / 'cache'}/.*\\.bin'"):
        cache.build_cache([sample], FeatureConfig(), tmp_path / "cache")
    assert _listing(tmp_path / "cache") == []
