"""Importers: TrackML CSV directories and ACTS hits.root/particles.root (all three particle-id
forms, branch-name variants) into native files, with validation."""

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot

from trackformers.data import reader
from trackformers.data.acts import pack_barcode
from trackformers.data.convert import convert_acts, convert_trackml, main
from trackformers.data.errors import DataError, DataRepairWarning, RepairLog
from trackformers.data.synthetic import helix_events
from trackformers.sim.weights import trackml_weights

BIG = np.uint64(1) << np.uint64(52)  # TrackML ids carry the primary vertex in the top bits


@pytest.fixture
def events():
    evs = helix_events(3, seed=31, first_id=0, n_particles=8, noise_fraction=0.1)
    for ev in evs:
        for k in ("hit_particle_id", "part_particle_id"):
            ev[k] = np.where(ev[k] != 0, ev[k] + BIG, 0).astype(np.uint64)
    return evs


def write_trackml(d, events, weight=True, particle_type=True, skip=()):
    d.mkdir(parents=True, exist_ok=True)
    for ev in events:
        pre = d / f"event{1000 + int(ev['event_id']):09d}"
        hits = pd.DataFrame({c: ev[f"hit_{c}"] for c in ("id", "x", "y", "z")}).rename(
            columns={"id": "hit_id"}
        )
        for c in ("volume_id", "layer_id", "module_id"):
            hits[c] = ev[f"hit_{c}"]
        truth = pd.DataFrame(
            {
                "hit_id": ev["hit_id"],
                "particle_id": ev["hit_particle_id"],
                **{c: ev[f"hit_{c}"] for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
            }
        )
        if weight:
            truth["weight"] = ev["hit_weight"]
        parts = pd.DataFrame(
            {
                "particle_id": ev["part_particle_id"],
                **{c: ev[f"part_{c}"] for c in ("vx", "vy", "vz", "px", "py", "pz", "q")},
                "nhits": ev["part_nhits"],
            }
        )
        if particle_type:
            parts["particle_type"] = ev["part_pdg_id"]
        for kind, df in (("hits", hits), ("truth", truth), ("particles", parts)):
            if (int(ev["event_id"]), kind) not in skip:
                df.to_csv(f"{pre}-{kind}.csv", index=False)
    return d


def _by_event(native_dir):
    return {int(e["event_id"]): e for e in reader.iter_events(native_dir)}


def test_trackml_round_trip(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events)
    n, files = convert_trackml(src, tmp_path / "out", events_per_file=2)
    assert n == 3 and [f.name for f in files] == ["shard_00000.root", "shard_00001.root"]
    got = _by_event(tmp_path / "out")
    assert sorted(got) == [1000, 1001, 1002]
    for ev in events:
        g = got[1000 + int(ev["event_id"])]
        for k in (
            "hit_id",
            "hit_x",
            "hit_z",
            "hit_volume_id",
            "hit_particle_id",
            "hit_weight",
            "hit_tpx",
            "part_particle_id",
            "part_pz",
            "part_q",
            "part_pdg_id",
            "part_nhits",
        ):
            np.testing.assert_allclose(g[k], ev[k], rtol=1e-6, err_msg=k)
        assert (g["part_vertex_id"] == 0).all()  # primary vertex 1 in the barcode -> 0
    assert reader.read_metadata(files[0])["source"] == "trackml-csv"


def test_trackml_weights_computed_and_optional_type(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events, weight=False, particle_type=False)
    convert_trackml(src, tmp_path / "out")
    g = _by_event(tmp_path / "out")[1001]
    ev = events[1]
    want = trackml_weights(
        ev["hit_particle_id"],
        ev["hit_tz"],
        ev["part_particle_id"],
        ev["part_vz"],
        ev["part_px"],
        ev["part_py"],
    )
    np.testing.assert_allclose(g["hit_weight"], want, rtol=1e-6)
    assert g["hit_weight"].sum() == pytest.approx(1.0, rel=1e-5)
    assert (g["part_pdg_id"] == 0).all()


def test_trackml_missing_file_and_skip(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events, skip={(1, "truth")})
    with pytest.raises(FileNotFoundError, match="event000001001-truth.csv"):
        convert_trackml(src, tmp_path / "out")
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning, match="skipped"):
        n, _ = convert_trackml(src, tmp_path / "out2", on_error="skip", repairs=repairs)
    assert n == 2 and repairs.total("skipped_events") == 1


def test_trackml_bad_columns_nan_duplicates_no_truth(tmp_path, events):
    src = write_trackml(tmp_path / "csv", events)
    hits_file = src / "event000001000-hits.csv"
    df = pd.read_csv(hits_file)
    df.rename(columns={"volume_id": "volumeid"}).to_csv(hits_file, index=False)
    with pytest.raises(DataError, match="missing column.*volume_id \\(did you mean volumeid"):
        convert_trackml(src, tmp_path / "o1")
    df.loc[[2, 4], "x"] = np.nan
    df.to_csv(hits_file, index=False)
    truth_file = src / "event000001001-truth.csv"
    truth = pd.read_csv(truth_file)
    truth.drop(index=[0, 1, 2]).to_csv(truth_file, index=False)
    repairs = RepairLog()
    with pytest.warns(DataRepairWarning) as rec:
        convert_trackml(src, tmp_path / "o2", repairs=repairs)
    msgs = [str(w.message) for w in rec]
    assert sum("2 hits with NaN/inf values dropped" in m for m in msgs) == 1
    assert sum("3 hits without a truth row, kept as noise" in m for m in msgs) == 1
    got = _by_event(tmp_path / "o2")
    assert len(got[1000]["hit_x"]) == len(events[0]["hit_x"]) - 2
    assert (got[1001]["hit_particle_id"][:3] == 0).all()
    df = pd.read_csv(hits_file)
    df.loc[3, "hit_id"] = df.loc[1, "hit_id"]
    df.to_csv(hits_file, index=False)
    with (
        pytest.raises(DataError, match="hits.csv: hit id .* appears"),
        pytest.warns(DataRepairWarning, match="NaN"),
    ):  # the NaN rows are still reported
        convert_trackml(src, tmp_path / "o3")


def test_convert_cli(tmp_path, events, capsys):
    src = write_trackml(tmp_path / "csv", events)
    assert main(["trackml", str(src), str(tmp_path / "out"), "--events-per-file", "5"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["events"] == 3 and len(out["files"]) == 1
    assert main(["trackml", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 1
    assert "TrackML directory not found" in capsys.readouterr().err


# ---- ACTS ----------------------------------------------------------------------------------
def _components(pid):
    """Barcode components for our test ids: primary vertex 1, particle = low bits."""
    low = (pid - BIG).astype(np.uint32)
    z = np.zeros(len(pid), np.uint32)
    return [np.ones(len(pid), np.uint32), z, low, z, z]


def write_acts(d, events, form, event_branch="event_id", module_branch="sensitive_id"):
    d.mkdir(parents=True, exist_ok=True)
    signal = [ev["hit_particle_id"] != 0 for ev in events]  # ACTS sim hits have no noise
    cat = lambda k: np.concatenate([ev[k][s] for ev, s in zip(events, signal, strict=True)])
    ev_ids = np.concatenate(
        [
            np.full(s.sum(), int(ev["event_id"]), np.uint32)
            for ev, s in zip(events, signal, strict=True)
        ]
    )
    hits = {
        event_branch: ev_ids,
        "geometry_id": np.zeros(len(ev_ids), np.uint64),
        **{k: cat(f"hit_{k}").astype(np.float32) for k in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
        "tt": np.zeros(len(ev_ids), np.float32),
        "volume_id": cat("hit_volume_id").astype(np.uint32),
        "layer_id": cat("hit_layer_id").astype(np.uint32),
        module_branch: cat("hit_module_id").astype(np.uint32),
    }
    pid = cat("hit_particle_id")
    if form == "particle_id":
        hits["particle_id"] = pid
    elif form == "components":
        hits.update(
            dict(
                zip(
                    (
                        "barcode_vertex_primary",
                        "barcode_vertex_secondary",
                        "barcode_particle",
                        "barcode_generation",
                        "barcode_sub_particle",
                    ),
                    _components(pid),
                    strict=True,
                )
            )
        )
    else:  # newest ACTS: barcode as a vector of the 5 components per hit
        comps = np.stack(_components(pid), axis=1).reshape(-1)
        hits["barcode"] = ak.unflatten(comps, np.full(len(pid), 5))
    with uproot.recreate(d / "hits.root") as f:
        f.mktree(
            "hits",
            {
                k: (v.dtype if isinstance(v, np.ndarray) else "var * uint32")
                for k, v in hits.items()
            },
        )
        f["hits"].extend(hits)
    order = events[::-1]  # particles written in another event order than hits
    parts = {"event_id": np.array([int(e["event_id"]) for e in order], np.uint32)}
    jag = lambda k, dt: ak.unflatten(
        np.concatenate([np.asarray(e[k], dt) for e in order]), [len(e["part_px"]) for e in order]
    )
    for k in ("vx", "vy", "vz", "px", "py", "pz"):
        parts[k] = jag(f"part_{k}", np.float32)
    parts["q"] = jag("part_q", np.float32)
    parts["particle_type"] = jag("part_pdg_id", np.int32)
    if form == "particle_id":
        parts["particle_id"] = jag("part_particle_id", np.uint64)
    else:
        allp = np.concatenate([e["part_particle_id"] for e in order])
        counts = [len(e["part_px"]) for e in order]
        for name, c in zip(
            ("vertex_primary", "vertex_secondary", "particle", "generation", "sub_particle"),
            _components(allp),
            strict=True,
        ):
            parts[name] = ak.unflatten(c, counts)
        parts["particle_hash"] = jag("part_particle_id", np.uint64)
    with uproot.recreate(d / "particles.root") as f:
        f.mktree(
            "particles",
            {
                k: (v.dtype if isinstance(v, np.ndarray) else str(ak.type(v).content))
                for k, v in parts.items()
            },
        )
        f["particles"].extend(parts)
    return d / "hits.root", d / "particles.root"


@pytest.mark.parametrize("form", ["particle_id", "components", "barcode_vector"])
def test_acts_round_trip(tmp_path, events, form):
    hits, parts = write_acts(tmp_path / "acts", events, form)
    n, _ = convert_acts(hits, parts, tmp_path / "out")
    assert n == 3
    got = _by_event(tmp_path / "out")
    for ev in events:
        g = got[int(ev["event_id"])]
        sig = ev["hit_particle_id"] != 0
        np.testing.assert_allclose(g["hit_x"], ev["hit_x"][sig])
        np.testing.assert_array_equal(g["hit_module_id"], ev["hit_module_id"][sig])
        if form == "particle_id":
            np.testing.assert_array_equal(g["hit_particle_id"], ev["hit_particle_id"][sig])
        else:  # packed barcode: same grouping of hits, ids from the components
            want = pack_barcode(_components(ev["hit_particle_id"][sig]))
            np.testing.assert_array_equal(g["hit_particle_id"], want)
        # each hit points at the particle with the right momentum
        row = {int(p): i for i, p in enumerate(g["part_particle_id"])}
        src_row = {int(p): i for i, p in enumerate(ev["part_particle_id"])}
        for h, s in zip(g["hit_particle_id"], ev["hit_particle_id"][sig], strict=True):
            assert g["part_px"][row[int(h)]] == ev["part_px"][src_row[int(s)]]
        np.testing.assert_array_equal(np.sort(g["part_nhits"]), np.sort(ev["part_nhits"]))
        assert g["hit_weight"].sum() == pytest.approx(1.0, rel=1e-5)


def test_acts_branch_variants_and_errors(tmp_path, events):
    hits, parts = write_acts(
        tmp_path / "a", events, "particle_id", event_branch="event_nr", module_branch="surface_id"
    )
    assert convert_acts(hits, parts, tmp_path / "out")[0] == 3
    hits, parts = write_acts(tmp_path / "b", events, "particle_id", event_branch="evt")
    with pytest.raises(DataError, match="hits.root: no branch for event"):
        convert_acts(hits, parts, tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="nothere.root"):
        convert_acts(tmp_path / "nothere.root", parts, tmp_path / "o3")


def test_converted_trackml_feeds_the_pixel_config(tmp_path, events):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from trackformers.data.datamodule import TrackDataModule

    src = write_trackml(tmp_path / "csv", events)
    convert_trackml(src, tmp_path / "native")
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf / "data"), version_base="1.3"):
        cfg = compose(
            "trackml_pixel",
            overrides=[f"path={tmp_path / 'native'}", "val_fraction=0.0", "test_fraction=0.0"],
        )
    dm = instantiate(cfg)
    assert isinstance(dm, TrackDataModule)
    batches = list(dm.train_dataloader())
    assert sum(b.num_events for b in batches) == 3
    for b in batches:
        assert set(b.volume_id.unique().tolist()) <= {7, 8, 9}
        assert b.targets["params"].shape[1] == 4 and (b.targets["class"] < 64).all()
