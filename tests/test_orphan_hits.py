"""Hits whose particle id is missing from the event's particle table ("orphans") are noise,
by one rule (trackformers.data.validate) for training, validation and evaluation."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from trackformers.data.dataset import NativeEventStream
from trackformers.data.errors import DataRepairWarning
from trackformers.data.features import FeatureConfig
from trackformers.data.reader import iter_events
from trackformers.data.synthetic import helix_events
from trackformers.evaluate import run
from trackformers.inference.events import iter_eval_events
from trackformers.metrics import MatchingRules, Reconstructable, evaluate_event
from trackformers.models.module import batch_events
from trackformers.results.outputs import write_outputs
from trackformers.sim.writer import write_events

ORPHAN = 987_654_321


def _events(orphan: bool) -> list[dict]:
    """Six events; in each, every hit of its first particle carries an id absent from the
    particle table (orphan=True) or is noise (orphan=False)."""
    events = helix_events(6, seed=11, n_particles=8, noise_fraction=0.0)
    for ev in events:
        pid = np.asarray(ev["hit_particle_id"]).copy()
        first = ev["part_particle_id"][0]
        pid[pid == first] = ORPHAN if orphan else 0
        ev["hit_particle_id"] = pid
        ev["hit_weight"] = np.where(pid == 0, 0.0, ev["hit_weight"]).astype(ev["hit_weight"].dtype)
    return events


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("orphans")
    out = {}
    for name, orphan in (("orphan", True), ("noise", False)):
        (d / name).mkdir()
        out[name] = d / name / "events.root"
        write_events(out[name], _events(orphan), {"test": True})
    return out


def test_reader_turns_orphans_into_noise_and_counts_them(files):
    msg = r"events.root: \d+ hits whose particle id is not in the particle table, made noise"
    with pytest.warns(DataRepairWarning, match=msg + r" \(e.g. particle ids \[987654321\]"):
        orphan = list(iter_events(files["orphan"]))
    noise = list(iter_events(files["noise"]))
    assert len(orphan) == len(noise) == 6
    for a, b in zip(orphan, noise, strict=True):
        assert not np.isin(ORPHAN, a["hit_particle_id"])
        np.testing.assert_array_equal(a["hit_particle_id"], b["hit_particle_id"])


@pytest.mark.filterwarnings("ignore::trackformers.data.errors.DataRepairWarning")
@pytest.mark.parametrize("targets", [("eta",), ()])
def test_training_batches_and_validation_metrics_see_orphans_as_noise(files, targets):
    """The training/validation stream gives the batches of the clean file, with or without
    targets (the particle table is read in both cases); the validation metrics match."""
    fcfg = FeatureConfig(targets=targets)

    def batches(path):
        return list(NativeEventStream([path], fcfg, max_tokens=10_000))

    got, want = batches(files["orphan"]), batches(files["noise"])
    assert len(got) == len(want) >= 1
    for a, b in zip(got, want, strict=True):
        assert not (a.particle_id == ORPHAN).any()
        torch.testing.assert_close(a.particle_id, b.particle_id)
        ev_a, ev_b = batch_events(a, targets), batch_events(b, targets)
        for x, y in zip(ev_a, ev_b, strict=True):
            np.testing.assert_array_equal(x["part_particle_id"], y["part_particle_id"])
            labels = np.asarray(x["hit_particle_id"]).astype(np.int64)  # perfect tracker
            ma, _ = evaluate_event(x, labels, Reconstructable(pt_min=0.0), MatchingRules())
            mb, _ = evaluate_event(y, labels, Reconstructable(pt_min=0.0), MatchingRules())
            assert ma == mb


def _ckpt(tmp_path, data_dir):
    cfg = {
        "model": {
            "_target_": "trackformers.models.TrackFormer",
            "encoder": {
                "_target_": "trackformers.models.encoder.Encoder",
                "in_features": 3,
                "d_model": 16,
                "n_heads": 2,
                "n_layers": 1,
                "attention": {"_target_": "trackformers.attention.dense.DenseAttention"},
            },
            "head": {
                "_target_": "trackformers.models.heads.ContrastiveHead",
                "d_model": 16,
                "embed_dim": 8,
            },
        },
        "data": {
            "path": str(data_dir),
            "features": {"features": ["x", "y", "z"]},
            "max_tokens": 5000,
        },
    }
    torch.manual_seed(0)
    model = instantiate(cfg["model"])
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "trackformers": {"config": cfg}}, path)
    return path


@pytest.mark.filterwarnings("ignore::trackformers.data.errors.DataRepairWarning")
def test_evaluate_scores_an_orphan_file_as_the_clean_one(tmp_path, files):
    ckpt = _ckpt(tmp_path, files["noise"].parent)
    opts = {
        "ckpt": str(ckpt),
        "wandb": {"enabled": False},
        "plots": False,
        "split": "all",
        "device": "cpu",
        "reconstructable": {"pt_min": 0.0},
    }
    got = run({**opts, "data_path": str(files["orphan"]), "output_dir": str(tmp_path / "a")})
    want = run({**opts, "data_path": str(files["noise"]), "output_dir": str(tmp_path / "b")})
    for key in ("trackml_score", "n_reconstructable", "n_dm", "n_candidates", "n_fake"):
        assert got[key] == want[key] or (np.isnan(got[key]) and np.isnan(want[key])), key
    assert got["n_hits"] == want["n_hits"]


def test_an_event_the_metrics_refuse_names_file_and_event(files):
    """Events that bypass the reader (here: an orphan put back) are refused naming the file
    and the event id."""
    sources: dict = {}
    events = list(iter_eval_events({}, str(files["noise"]), "all", 2, sources))
    assert set(sources.values()) == {str(files["noise"])}
    ev = dict(events[1])
    ev["hit_particle_id"] = np.where(ev["hit_particle_id"] != 0, ev["hit_particle_id"], ORPHAN)
    stream = [(ev, np.zeros(len(ev["hit_x"]), dtype=np.int64))]
    eid = int(ev["event_id"])
    with pytest.raises(ValueError, match=rf"events.root: event {eid}: 1 hit_part"):
        write_outputs(None, iter(stream), Reconstructable(), MatchingRules(), {}, False, sources)
