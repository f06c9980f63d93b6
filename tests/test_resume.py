"""trackformers.resume: a fit that stops mid-epoch (max_steps, a stop requested at validation)
resumes from last.ckpt with the next batch of the same epoch; the learning curve in wall time
survives a resume — the clock goes on from the checkpoint, metrics.csv keeps the earlier rows,
and the rows a killed process wrote after its checkpoint are replaced by the resumed run's."""

import csv
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from trackformers.checkpoint import register_safe_globals
from trackformers.models.module import ResumableLoader
from trackformers.resume import LastCheckpoint, ResumableCSVLogger, TrainClock
from trackformers.training.final_checkpoint import save_final_checkpoint

STEP_S = 0.03  # sleep per training step: the clock must see it


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(STEP_S)
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    return DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)


def fit(run_dir, max_steps, ckpt_path=None, every=None):
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "ckpt",
        filename="{step}",
        save_top_k=-1,
        auto_insert_metric_name=False,
        every_n_train_steps=every,
        save_last=True,
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        logger=ResumableCSVLogger(run_dir, "csv", ""),
        callbacks=[TrainClock(), ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_val_batches=1,
        log_every_n_steps=1,
    )
    trainer.fit(Tiny(), loader(), loader(), ckpt_path=ckpt_path)
    return trainer


def val_rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("time/train_s")]
    return [
        (
            int(r["step"]),
            float(r["time/train_s"]),
            float(r["time/device_s"]),
            float(r["time/val_s"]),
            r.get("val/loss"),
        )
        for r in rows
    ]


def test_clock_and_csv_continue_across_a_resume(tmp_path):
    fit(tmp_path, 4)
    first = val_rows(tmp_path)
    assert len(first) == 2  # validations after steps 2 and 4
    assert all(r[4] for r in first)  # the clock sits in the rows of the validation metrics
    assert first[0][1] >= 2 * STEP_S and first[1][1] - first[0][1] >= 2 * STEP_S
    assert all(r[2] == pytest.approx(r[1]) for r in first)  # one process: device_s = train_s
    assert all(0 < r[3] < r[1] for r in first)
    stored = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    clock = stored["TrainClock"]
    assert clock["train_s"] >= first[-1][1]

    fit(tmp_path, 8, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    rows = val_rows(tmp_path)
    assert len(rows) == 4 and rows[:2] == first  # the first segment's rows are still there
    assert [r[0] for r in rows] == sorted({r[0] for r in rows})
    times = [r[1] for r in rows]
    assert times[2] >= clock["train_s"] + 2 * STEP_S  # continues from the checkpoint's clock
    assert times == sorted(times) and rows[2][3] >= rows[1][3]


def test_rows_after_the_checkpoint_of_a_killed_run_are_replaced(tmp_path):
    fit(tmp_path, 8, every=4)  # "killed" after step 8: resume from its step-4 checkpoint
    before = val_rows(tmp_path)
    assert len(before) == 4
    at4 = torch.load(tmp_path / "ckpt" / "4.ckpt", weights_only=True)
    start = at4["callbacks"]["TrainClock"]["train_s"]
    assert before[0][1] < start < before[2][1]

    fit(tmp_path, 8, ckpt_path=tmp_path / "ckpt" / "4.ckpt", every=4)
    rows = val_rows(tmp_path)
    assert [r[0] for r in rows] == [r[0] for r in before]  # no duplicates of steps 6 and 8
    assert rows[:2] == before[:2]
    assert rows[2][1] >= start + 2 * STEP_S  # the redone steps are timed from step 4's clock
    assert rows[3][1] > rows[2][1]
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps)  # no row of the killed segment after step 4 is left


def test_clock_state_is_checked_on_load():
    with pytest.raises(KeyError, match="lacks"):
        TrainClock().load_state_dict({"train_s": 1.0})


# ---- LastCheckpoint: a fit that stops mid-epoch resumes with the next batch ------------------
class Indices(IterableDataset):
    """0..11 in an order that depends on the epoch (set by ResumableLoader)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(12, generator=torch.Generator().manual_seed(self.epoch))
        yield from order.view(4, 3)  # 4 batches of 3 per epoch


class Recording(Tiny):
    """Tiny on index batches; records the batches it trains on (module of ResumableLoader)."""

    def __init__(self):
        super().__init__()
        self.seen, self.batches_in_epoch, self.tuned_clustering = [], 0, None

    def loss(self, batch):
        return self.layer(batch.float()[:, None].expand(-1, 4)).pow(2).mean()

    def training_step(self, batch, batch_idx):
        self.batches_in_epoch = batch_idx + 1
        self.seen.append((self.current_epoch, batch.tolist()))
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch))

    def on_train_epoch_start(self):
        self.batches_in_epoch = 0


class StopAt(L.Callback):
    """Requests a stop after ``step``: in the step (as the Timer of max_time does) or in the
    validation after it (as EarlyStopping does)."""

    def __init__(self, step, hook):
        self.step, self.hook = step, hook

    def on_train_batch_end(self, trainer, *args):
        if self.hook == "step" and trainer.global_step == self.step:
            trainer.should_stop = True

    def on_validation_end(self, trainer, pl_module):
        if self.hook == "validation" and trainer.global_step == self.step:
            trainer.should_stop = True


def fit_recording(run_dir, max_steps, ckpt_path=None, stop=None):
    module = Recording()
    callbacks = [LastCheckpoint(run_dir, every_n_train_steps=100), TrainClock()]
    if stop is not None:
        callbacks.append(StopAt(5 if stop == "step" else 6, stop))  # validations: even steps
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=2,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    train_loader = ResumableLoader(DataLoader(Indices(), batch_size=None), module)
    val_loader = DataLoader(Indices(), batch_size=None)
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    save_final_checkpoint(trainer, module, run_dir / "last.ckpt")  # as trackformers.train does
    # the clock in last.ckpt is the one at the end of fit (with the validation at a stop)
    clock = torch.load(run_dir / "last.ckpt", weights_only=True)["callbacks"]["TrainClock"]
    assert clock == callbacks[1].state_dict()
    return module.seen, trainer.fit_loop.epoch_loop._batches_that_stepped  # the logged step


@pytest.mark.parametrize("stop", ["max_steps", "step", "validation"])
def test_fit_stopped_mid_epoch_resumes_with_the_next_batch(tmp_path, stop):
    register_safe_globals()
    whole, logged = fit_recording(tmp_path / "whole", 12)
    assert [e for e, _ in whole] == [0] * 4 + [1] * 4 + [2] * 4 and logged == 12
    run = tmp_path / "run"
    if stop == "max_steps":
        head, _ = fit_recording(run, 5)  # stops after batch 1 of epoch 1
    else:  # a stop requested in step 5 (as max_time does) or in the validation after step 6
        head, _ = fit_recording(run, 12, stop=stop)
    assert len(head) == (6 if stop == "validation" else 5)
    tail, logged = fit_recording(run, 12, ckpt_path=run / "last.ckpt")
    assert head + tail == whole  # same epochs, same batches: nothing skipped or repeated
    assert logged == 12  # the step the loggers write goes on too
