"""The walking skeleton end to end, through the same driver as `make demo`, at tiny size:
tt-bar µ = 0 pixel events → native ROOT → loader → dense encoder + contrastive head → DBSCAN →
TrackML score and DM efficiency, with a Lightning checkpoint and an offline wandb run on disk."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import uproot

from trackformers.sim.writer import read_metadata

REPO = Path(__file__).resolve().parents[1]


def test_demo_driver_runs_every_stage_and_reports_finite_metrics(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "trackformers.demo",
        "--out",
        str(out),
        "--data",
        str(data),
        "--events",
        "40",
        "--eval-events",
        "6",
        "--experiment",
        "demo_tiny",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "validation.reconstructable.pt_min=0.5",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # simulate: native ROOT shards with every event
    shards = sorted(data.glob("*.root"))
    assert shards
    n_events = sum(uproot.open(f)["events"].num_entries for f in shards)
    assert n_events == 40
    settings = read_metadata(shards[0])["settings"]  # the demo uses the simulate defaults
    assert settings["vertex"] == {"sigma_xy": 0.015, "sigma_z": 5.5}  # TrackML beam spot
    assert settings["process"]["name"] == "ttbar" and settings["seed"] == 1
    # evaluation on fresh events of another seed, never trained on
    eval_shards = sorted((tmp_path / "data_eval").glob("*.root"))
    assert sum(uproot.open(f)["events"].num_entries for f in eval_shards) == 6
    assert read_metadata(eval_shards[0])["settings"]["seed"] == 2

    # train: checkpoint and offline wandb run under the run dir
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and ckpt.stat().st_size > 0
    assert list((out / "train" / "wandb").glob("offline-run-*/run-*.wandb"))

    # evaluate: finite metrics in [0, 1], plots, and the printed table with the paths
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for key in ("trackml_score", "dm_efficiency", "fake_rate"):
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert list((out / "eval" / "plots").glob("*.png"))
    assert metrics["n_events"] == 6
    for needle in (
        "TrackML score",
        "DM efficiency",
        "fake rate",
        "seed 2",
        str(ckpt),
        "offline-run-",
    ):
        assert needle in proc.stdout, needle
