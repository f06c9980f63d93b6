"""trackformers.evaluate: checkpoint -> inference -> clustering -> metrics.json, tables, plots."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from trackformers.checkpoint import load_checkpoint
from trackformers.data.synthetic import helix_events
from trackformers.evaluate import run
from trackformers.inference.settings import cluster_settings
from trackformers.results.wandb_log import find_wandb_run
from trackformers.sim.writer import write_events

REPO = Path(__file__).resolve().parents[1]


def run_config(head: dict, path: str) -> dict:
    """A resolved run config as trackformers.train stores it (model, data, validation)."""
    return {
        "model": {
            "_target_": "trackformers.models.TrackFormer",
            "encoder": {
                "_target_": "trackformers.models.encoder.Encoder",
                "in_features": 3,
                "d_model": 32,
                "n_heads": 4,
                "n_layers": 1,
                "attention": {"_target_": "trackformers.attention.dense.DenseAttention"},
            },
            "head": {"d_model": 32, **head},
        },
        "data": {
            "path": path,
            "features": {"features": ["x", "y", "z"]},
            "max_tokens": 5000,
            "val_fraction": 0.3,
            "test_fraction": 0.3,
            "split_seed": 0,
        },
        "module": {
            "validation": {
                "cluster": {
                    "method": "dbscan",
                    "output_key": "embedding",
                    "params": {"eps": 0.3, "min_samples": 2},
                },
                "reconstructable": {"pt_min": 0.5},
            }
        },
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_events(d / "events.root", helix_events(12, seed=3, n_particles=15), {"test": True})
    return d


def make_ckpt(tmp_path, cfg, wandb_run=False):
    torch.manual_seed(0)
    model = instantiate(cfg["model"])
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    path = ckpt_dir / "last.ckpt"
    torch.save(
        {"state_dict": state, "trackformers": {"config": cfg}, "hyper_parameters": {"config": cfg}},
        path,
    )
    if wandb_run:
        (tmp_path / "run" / "wandb" / "offline-run-20261122_010203-abc123").mkdir(parents=True)
    return path


def test_evaluate_writes_everything(tmp_path, dataset):
    cfg = run_config(
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, str(dataset)
    )
    ckpt = make_ckpt(tmp_path, cfg, wandb_run=True)
    assert find_wandb_run(ckpt) == (tmp_path / "run", "abc123")
    out = tmp_path / "eval"
    opts = {"wandb": {"enabled": False}, "cluster": {"method": "auto"}, "device": "auto"}
    res = run({"ckpt": str(ckpt), "output_dir": str(out), "split": "auto", **opts})
    m = json.loads((out / "metrics.json").read_text())
    assert m["cluster"]["method"] == "dbscan" and m["cluster"]["params"]["eps"] == 0.3  # run's own
    assert m["reconstructable"]["pt_min"] == 0.5
    for k in ("trackml_score", "dm_efficiency", "fake_rate"):
        assert 0.0 <= m[k] <= 1.0, (k, m[k])
    # the test split only: events with split 2 from the run's fractions
    from trackformers.data.dataset import split_of

    ids = [e["event_id"] for e in m["per_event"]]
    assert len(ids) >= 1 and all(split_of(np.array(ids), 0.3, 0.3, 0) == 2)
    parts = pd.read_csv(out / "particles.csv")
    assert set(parts.event_id) == set(ids) and {"dm", "pt", "eta", "region"} <= set(parts.columns)
    assert m["n_reconstructable"] == parts.reconstructable.sum()
    for name in (
        "efficiency_vs_pt",
        "efficiency_vs_eta",
        "fake_rate_vs_eta",
        "event_display",
        "attention",
    ):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert (out / "breakdowns" / "dm_efficiency_vs_region.csv").is_file()
    assert res["n_events"] == len(ids)
    assert res["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_explicit_data_all_events_and_classifier(tmp_path, dataset):
    cfg = run_config(
        {"_target_": "trackformers.models.heads.ClassifierHead", "num_classes": 16}, "nowhere"
    )
    del cfg["module"]
    ckpt = make_ckpt(tmp_path, cfg)
    out = tmp_path / "eval"
    opts = {"wandb": {"enabled": False}, "cluster": {"method": "auto"}, "max_events": 5}
    m = run({"ckpt": str(ckpt), "data": str(dataset), "output_dir": str(out), **opts})
    assert m["n_events"] == 5 and m["cluster"]["method"] == "argmax"
    # argmax over 16 classes: at most 16 tracks per event
    tracks = pd.read_csv(out / "tracks.csv")
    assert tracks.groupby("event_id").size().max() <= 16


def test_bad_inputs(tmp_path, dataset):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="no run config"):
        load_checkpoint(tmp_path / "bad.ckpt")
    assert cluster_settings({}, {"method": "auto"}, {"params": 0})["input"] == "params"


@pytest.mark.slow
def test_cli_with_hydra(tmp_path, dataset):
    cfg = run_config(
        {"_target_": "trackformers.models.heads.RegressorHead", "num_params": 4}, str(dataset)
    )
    del cfg["module"]
    ckpt = make_ckpt(tmp_path, cfg)
    out = tmp_path / "cli"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackformers.evaluate",
            f"ckpt={ckpt}",
            f"data={dataset}",
            "cluster=dbscan",
            "cluster.params.eps=0.05",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["n_events"] == 12
        and m["cluster"]["input"] == "auto"
        and m["cluster"]["params"]["eps"] == 0.05
    )
    assert "trackml score" in proc.stdout and "metrics.json" in proc.stdout


def test_cuda_only_backend_falls_back_to_dense_on_cpu(tmp_path):
    from trackformers.inference.loader import build_model, runs_on

    cfg = run_config({"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, "x")
    cfg["model"]["encoder"]["attention"] = {
        "_target_": "trackformers.attention.fused.FusedAttention"
    }
    _, state = load_checkpoint(make_ckpt(tmp_path, cfg))
    fused = build_model(cfg, state)
    assert type(fused.encoder.attention).__name__ == "FusedAttention"
    assert not runs_on(fused, torch.device("cpu"))
    dense = build_model(cfg, state, "dense")
    assert type(dense.encoder.attention).__name__ == "DenseAttention" and runs_on(
        dense, torch.device("cpu")
    )
    sd_a, sd_b = fused.state_dict(), dense.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_data_spec_names_a_data_config():
    from trackformers.inference.events import data_spec

    assert data_spec("demo") == "data/demo"  # conf/data/demo.yaml's path
    assert data_spec("/some/dir") == "/some/dir" and data_spec(None) is None


def test_precision_reaches_the_forward(tmp_path, dataset, monkeypatch):
    """precision= reaches the forward (bf16 / fp16 autocast or fp32; it matters on a GPU);
    bad values are named."""
    import trackformers.inference.stream as inference  # where evaluate's forward is looked up

    cfg = run_config(
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, str(dataset)
    )
    ckpt = make_ckpt(tmp_path, cfg)
    seen = []
    real = inference.forward_batch

    def spy(model, batch, plan=None, amp=True, **kw):
        seen.append(amp)
        return real(model, batch, plan, amp=amp, **kw)

    monkeypatch.setattr(inference, "forward_batch", spy)
    opts = {"ckpt": str(ckpt), "wandb": {"enabled": False}, "plots": False, "max_events": 4}
    for precision in ("fp32", "bf16", "fp16"):
        seen.clear()
        m = run({**opts, "precision": precision, "output_dir": str(tmp_path / precision)})
        assert seen and set(seen) == {precision}
        assert m["precision"] == (precision if torch.cuda.is_available() else "fp32")
    with pytest.raises(
        ValueError,
        match=r"precision must be one of \['bf16', 'fp16', 'fp32'\], "
        "got 'fp8'",
    ):
        run({**opts, "precision": "fp8", "output_dir": str(tmp_path / "bad")})
