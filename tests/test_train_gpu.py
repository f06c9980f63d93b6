"""On CUDA: bf16-mixed training through the CLI, and a real CUDA
out-of-memory on an oversized event reported with its size and the settings to change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from trackformers.attention.synthetic import synthetic_batch
from trackformers.data.synthetic import helix_events
from trackformers.losses import CombinedLoss, SupConLoss
from trackformers.models import ContrastiveHead, Encoder, TrackFormer
from trackformers.models.module import EventTooLargeError, TrackFormerModule
from trackformers.sim.writer import write_events

pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
REPO = Path(__file__).resolve().parents[1]


@cuda
def test_cli_trains_bf16_on_gpu(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_events(data / "e.root", helix_events(60, seed=5, n_particles=10), {"test": True})
    run_dir = tmp_path / "run"
    args = [
        "experiment=demo_tiny",
        f"data.path={data}",
        "data.val_fraction=0.2",
        "data.class_bins=null",
        "data.num_classes=null",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        "validation.reconstructable.pt_min=0.5",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert state["trackformers"]["config"]["trainer"]["precision"] == "bf16-mixed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/trackml_score"] == summary["val/trackml_score"]  # not NaN


class _Once:
    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return iter([self.batch])

    def __len__(self):
        return 1


@cuda
def test_real_cuda_oom_names_event_size_and_settings():
    n = 200_000  # one N x N loss tile would need 160 GB
    batch = synthetic_batch([n], seed=0)
    model = TrackFormer(Encoder(3, d_model=32, n_heads=4, n_layers=1), ContrastiveHead(32, 8))
    loss = CombinedLoss({"contrastive": SupConLoss(tile_elems=1 << 40, compile=False)})
    module = TrackFormerModule(
        model, loss, validation={"enabled": False}, scheduler={"total_steps": 10}
    )
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
    )
    with pytest.raises(EventTooLargeError) as info:
        trainer.fit(module, train_dataloaders=_Once(batch))
    msg = str(info.value)
    assert f"largest event {n} hits" in msg and "data.max_tokens" in msg
    torch.cuda.empty_cache()
