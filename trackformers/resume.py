"""A training run in several segments (``ckpt_path=last`` resumes), recorded as one run.

* ``LastCheckpoint`` (conf/callbacks/default.yaml ``last_checkpoint``) writes
  ``checkpoints/last.ckpt`` from inside training steps: every ``every_n_train_steps`` steps and
  at the step where fit stops (``max_steps``; a stop that a callback such as Lightning's Timer
  of ``max_time`` requests in the step), and after a validation that requests a stop (early
  stopping). Resumed from it, training goes on with the very next batch of the same epoch.
  (The state Lightning holds after a ``fit`` that stopped mid-epoch counts that epoch as
  finished: resumed from it, a run would skip the rest of the epoch.)
* ``TrainClock`` (``train_clock``) logs at every validation of ``fit``

  - ``time/train_s``: wall seconds of training so far (from the start of ``fit``: steps,
    validations, checkpoints; not the process start-up before it),
  - ``time/device_s``: the same seconds times the number of processes (GPUs under DDP) of
    each segment: ``time/device_s / 60`` is the GPU-minutes the model has cost, also when a
    resume runs on another number of GPUs,
  - ``time/val_s``: of ``time/train_s``, the seconds spent in validation,

  and stores them in every checkpoint, so that a resumed run continues the clock where the
  checkpoint left it (time after the last checkpoint of a killed process is lost, as is its
  work).
* ``ResumableCSVLogger`` (conf/logger ``csv``) is Lightning's CSVLogger that keeps the rows of
  the earlier segments in ``metrics.csv`` (Lightning's deletes the file when the directory
  exists); the rows a killed process wrote after the checkpoint it is resumed from are
  dropped, because the resumed run logs those steps again.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

CLOCK_KEYS = ("train_s", "device_s", "val_s")


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps and where fit stops (see the module
    docstring). A Checkpoint callback, so Lightning runs it after the others of a hook (after
    the Timer and EarlyStopping that request a stop).

    Args:
        dirpath: directory of ``last.ckpt`` (the run's ``checkpoints/``).
        every_n_train_steps: steps between two periodic saves (0: only where fit stops).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 200):
        if int(every_n_train_steps) < 0:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_train_steps must be >= 0, "
                f"got {every_n_train_steps}"
            )
        self.dirpath = str(dirpath)  # as ModelCheckpoint's, for code that inspects checkpoints
        self.monitor = None
        self.path = Path(dirpath) / "last.ckpt"
        self.every = int(every_n_train_steps)
        self.saved_step: int | None = None  # global step of this process's latest save

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path)  # every rank calls it (a barrier); rank 0 writes
        self.saved_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step == self.saved_step:  # a later micro-batch of gradient accumulation
            return
        stops = trainer.should_stop or 0 < trainer.max_steps <= step
        if stops or (self.every and step % self.every == 0):
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        # a stop requested in the validation (early stopping); one requested in the step was
        # saved at its end: saved again after the validation that Lightning then runs, the
        # state would resume with the logged step one behind the global step
        fitting = trainer.state.fn == "fit" and not trainer.sanity_checking
        if fitting and trainer.should_stop and self.saved_step != trainer.global_step:
            self._save(trainer)


class TrainClock(Callback):
    """Cumulative training wall time, logged at each validation (see the module docstring)."""

    def __init__(self):
        self.totals = dict.fromkeys(CLOCK_KEYS, 0.0)  # up to the start of the running segment
        self._t0: float | None = None  # start of the running training segment
        self._v0: float | None = None  # start of the running validation
        self._val = 0.0  # validation seconds of the running segment
        self._world = 1
        self._resumed = False

    def now(self) -> dict[str, float]:
        """{train_s, device_s, val_s} including the running segment."""
        run = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        val = self._val + (time.perf_counter() - self._v0 if self._v0 is not None else 0.0)
        return {
            "train_s": self.totals["train_s"] + run,
            "device_s": self.totals["device_s"] + run * self._world,
            "val_s": self.totals["val_s"] + val,
        }

    def on_train_start(self, trainer, pl_module) -> None:
        self._world = int(trainer.world_size)
        self._t0, self._val = time.perf_counter(), 0.0
        if self._resumed:
            for lg in trainer.loggers:
                if isinstance(lg, ResumableCSVLogger):
                    lg.drop_rows_after(int(trainer.global_step))

    def on_train_end(self, trainer, pl_module) -> None:
        self.totals = self.now()
        self._t0 = None
        self._val = 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._t0 is not None:  # only validations inside fit count
            self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._v0 is not None:
            self._val += time.perf_counter() - self._v0
            self._v0 = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for key, value in self.now().items():
            # each rank keeps its own clock; rank 0's is the one the loggers write
            pl_module.log(f"time/{key}", value, rank_zero_only=True)

    def state_dict(self) -> dict:
        return {key: float(v) for key, v in self.now().items()}

    def load_state_dict(self, state_dict: dict) -> None:
        missing = [k for k in CLOCK_KEYS if k not in state_dict]
        if missing:
            raise KeyError(f"TrainClock state in the checkpoint lacks {missing}: {state_dict}")
        self.totals = {k: float(state_dict[k]) for k in CLOCK_KEYS}
        self._resumed = True


class _KeepingWriter(ExperimentWriter):
    """ExperimentWriter that appends to an existing metrics.csv instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)  # new keys later rewrite the header, rows kept

    def drop_rows_after(self, step: int) -> None:
        """Remove the rows of steps > ``step`` (and unsaved ones) from metrics.csv."""
        self.metrics = [m for m in self.metrics if m.get("step", 0) <= step]
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if r.get("step") in (None, "") or float(r["step"]) <= step]
        if len(keep) == len(rows):
            return
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume in the same directory (see the module
    docstring); same arguments as Lightning's."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return super().experiment

    @rank_zero_only
    def drop_rows_after(self, step: int) -> None:
        """Forget the rows of steps after ``step`` (a resume from that step logs them anew).

        Args:
            step: the resumed global step.
        """
        self.experiment.drop_rows_after(step)
