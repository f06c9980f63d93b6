"""Training end to end through the real CLI (wandb offline), plus the fault paths: NaN loss,
CUDA out-of-memory, the LR schedule and the resumable, rank-synchronised training loader."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from trackformers.data.synthetic import helix_events
from trackformers.models.module import (
    EventTooLargeError,
    NonFiniteLossError,
    ResumableLoader,
    budget_step,
    time_budget_fraction,
    warmup_cosine,
)
from trackformers.sim.writer import write_events
from trackformers.training.build import build

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_data")
    write_events(d / "events.root", helix_events(60, seed=5, n_particles=10), {"test": True})
    return d


def tiny_overrides(data_dir, run_dir, *extra):
    return [
        "experiment=demo_tiny",
        f"data.path={data_dir}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.1",
        "data.class_bins=null",
        "data.num_classes=null",
        f"hydra.run.dir={run_dir}",
        "validation.reconstructable.pt_min=0.5",
        *extra,
    ]


def run_cli(args, env_extra=None, timeout=240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "trackformers.train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_trains_offline_and_the_run_dir_holds_the_run(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(tiny_overrides(tiny_data, run_dir), {"WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = proc.stdout
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"checkpoint:    {ckpt}" in out
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1, list((run_dir / "wandb").iterdir())
    assert f"wandb run:     {wandb_runs[0]}" in out
    logs = list(wandb_runs[0].glob("run-*.wandb"))
    assert len(logs) == 1, "offline run has no .wandb log"
    # the run log holds the config, the metrics and the summary (offline: protobuf records)
    records = logs[0].read_bytes()
    for needle in (b"val/trackml_score", b"train/loss", b"demo_tiny", b"max_steps"):
        assert needle in records, needle
    media = wandb_runs[0] / "files" / "media"
    tables = list((media / "table").glob("summary_*.table.json"))
    assert tables and "val/trackml_score" in tables[0].read_text()
    assert list((media / "images").rglob("efficiency_pt*.png"))
    # checkpoint holds the resolved config; CSV metrics alongside; summary with a finite score
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["trackformers"]["config"]["name"] == "demo_tiny"
    assert state["global_step"] == 12
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/trackml_score" in header and "train/loss" in header and "lr-AdamW" in header
    summary = json.loads((run_dir / "summary.json").read_text())
    assert math.isfinite(summary["val/trackml_score"]) and summary["global_step"] == 12
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "plots" / "efficiency_pt.png").is_file()


def compose_tiny(data_dir, run_dir, *extra):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=tiny_overrides(data_dir, run_dir, "logger=csv", *extra),
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(REPO)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_nan_loss_stops_with_the_step(tiny_data, tmp_path):
    cfg = compose_tiny(tiny_data, tmp_path, "callbacks.rich_progress_bar=null")
    datamodule, module, trainer = build(cfg)

    class Poisoned(torch.nn.Module):  # the real loss, turned NaN at step 3
        def __init__(self, loss):
            super().__init__()
            self.inner = loss

        def forward(self, outputs, batch):
            total, parts = self.inner(outputs, batch)
            return (total * float("nan") if module.global_step == 3 else total), parts

    module.loss = Poisoned(module.loss)
    with pytest.raises(NonFiniteLossError, match=r"global step 3 \(epoch \d+, batch \d+\)"):
        trainer.fit(module, datamodule=datamodule)


def test_cuda_oom_names_the_event_size_and_the_setting(tiny_data, tmp_path):
    cfg = compose_tiny(tiny_data, tmp_path)
    datamodule, module, trainer = build(cfg)
    encoder_forward = module.model.encoder.forward

    def oom_on_big(batch, plan=None):
        if batch.num_hits > 100:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return encoder_forward(batch, plan)

    module.model.encoder.forward = oom_on_big
    with pytest.raises(EventTooLargeError) as info:
        trainer.fit(module, datamodule=datamodule)
    msg = str(info.value)
    assert "largest event" in msg and "hits" in msg and "data.max_tokens" in msg
    assert "global step 0" in msg


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)


def test_budget_step_follows_the_budget_spent_most():
    assert budget_step(5, 10, 100, 0.9) == 5  # warm-up is by steps
    assert budget_step(40, 10, 100, 0.0) == 40  # no time budget
    assert budget_step(40, 10, 100, 0.5) == pytest.approx(55.0)  # half the time, 1/3 the steps
    assert budget_step(80, 10, 100, 0.5) == 80  # steps ahead of time
    assert budget_step(20, 10, 100, 1.7) == pytest.approx(100.0)  # past the limit: fully decayed


def test_time_budget_fraction_reads_lightnings_timer():
    from lightning.pytorch.callbacks import Timer

    class Clock(Timer):
        def time_elapsed(self, stage="train"):
            return 450.0

    assert time_budget_fraction(SimpleNamespace(callbacks=[])) == 0.0
    trainer = SimpleNamespace(callbacks=[Clock(duration="00:00:30:00")])
    assert time_budget_fraction(trainer) == pytest.approx(0.25)


def test_a_time_limited_fit_ends_annealed(tiny_data, tmp_path):
    """A run stopped by max_time long before max_steps has its learning rate decayed by then."""
    cfg = compose_tiny(
        tiny_data,
        tmp_path,
        "trainer.max_steps=1000000",
        "+trainer.max_time=00:00:00:05",
        "optim.scheduler.warmup_steps=0",
        "optim.scheduler.min_lr_ratio=0.1",
        "trainer.val_check_interval=1000000",
        "callbacks.rich_progress_bar=null",
        "callbacks.tune_clustering.enabled=false",
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert 0 < trainer.global_step < 100000
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.1 * cfg.optim.optimizer.lr, rel=0.05)  # at the floor by then


class _Epochs(torch.utils.data.IterableDataset):
    """Yields (epoch, i) for i < n, so order and epoch are visible."""

    def __init__(self, n):
        self.n, self.epoch = n, None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter([[self.epoch, i] for i in range(self.n)])


class _Module:
    def __init__(self):
        self.current_epoch, self.batches_in_epoch, self._trainer = 0, 0, None


def test_resumable_loader_sets_epoch_and_skips_consumed_batches():
    ds = _Epochs(5)
    loader = torch.utils.data.DataLoader(ds, batch_size=None)
    mod = _Module()
    wrapped = ResumableLoader(loader, mod)
    assert list(wrapped) == [[0, i] for i in range(5)]
    mod.current_epoch, mod.batches_in_epoch = 3, 2
    state = wrapped.state_dict()
    assert state == {"epoch": 3, "consumed": 2}
    fresh = ResumableLoader(torch.utils.data.DataLoader(_Epochs(5), batch_size=None), _Module())
    fresh.load_state_dict(state)
    assert list(fresh) == [[3, 2], [3, 3], [3, 4]]  # epoch 3's order, first 2 batches skipped
    assert list(fresh) == [[0, i] for i in range(5)]  # the skip applies once


def test_resumable_loader_refuses_an_empty_epoch():
    wrapped = ResumableLoader(torch.utils.data.DataLoader(_Epochs(0), batch_size=None), _Module())
    with pytest.raises(RuntimeError, match="no training batches in epoch 0"):
        list(wrapped)


@pytest.mark.slow
def test_compiled_encoder_matches_eager_on_varlen_batches():
    import copy

    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.losses import CombinedLoss, SupConLoss
    from trackformers.models import ContrastiveHead, Encoder, TrackFormer
    from trackformers.models.module import TrackFormerModule, compile_encoder

    model = TrackFormer(Encoder(3, d_model=32, n_heads=4, n_layers=2), ContrastiveHead(32, 8))
    eager = copy.deepcopy(model)
    module = TrackFormerModule(model, CombinedLoss({"c": SupConLoss()}), compile_encoder=True)
    module.configure_model()
    assert module.model.encoder.blocks[1].ffn._compiled_call_impl is not None
    assert set(module.state_dict()) == {f"model.{k}" for k in eager.state_dict()}
    for sizes in ([300, 120], [77], [500, 40, 9]):  # hit counts vary: dynamic shapes
        batch = synthetic_batch(sizes, seed=len(sizes))
        torch.testing.assert_close(
            module.model(batch)["embedding"], eager(batch)["embedding"], rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ValueError, match="found no input_mlp"):
        compile_encoder(torch.nn.Linear(3, 3))
