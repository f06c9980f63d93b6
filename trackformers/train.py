"""Training entry point: ``python -m trackformers.train experiment=demo`` (Hydra, conf/train.yaml).

Builds data, model, loss, LightningModule, loggers and callbacks from the config
(trackformers.training.build), fits, writes the final checkpoint and the run summary, and
prints where the checkpoints and the wandb run are. Resume an interrupted run with
``hydra.run.dir=<its directory> ckpt_path=last``: the step count and data order continue
exactly (trackformers.models.module.ResumableLoader; last.ckpt is written inside the step where
fit stops, trackformers.resume), and so do the training clock and the CSV log.
"""

from __future__ import annotations

import logging
import math
import time
from inspect import signature
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig

from trackformers.checkpoint import check_resume_path, register_safe_globals
from trackformers.config_checks import check_train_config
from trackformers.training.build import build
from trackformers.training.final_checkpoint import save_final_checkpoint
from trackformers.training.summary import wandb_run_dir, write_summary

log = logging.getLogger("trackformers.train")


def train(cfg: DictConfig) -> float:
    """Fit one run; returns the monitored metric of the last validation (for sweepers).

    The config and the checkpoint to resume from are checked before any data or model is set
    up; the resume loads the checkpoint with ``weights_only=True`` (trackformers.checkpoint).

    Args:
        cfg: the composed training config (conf/train.yaml); ``ckpt_path`` a checkpoint to
            resume from, "last" for the run directory's own, or null.
    """
    check_train_config(cfg)
    ckpt_path = cfg.ckpt_path
    check_resume_path(ckpt_path, cfg.paths.output_dir)
    register_safe_globals()  # Lightning's resume loads with weights_only=True (below)
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule, module, trainer = build(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path == "last":  # the run's own, whichever callbacks are configured
        if last.is_file():
            ckpt_path = str(last)
        else:
            log.warning("ckpt_path=last but %s has no checkpoints/last.ckpt", cfg.paths.output_dir)
    # Lightning >= 2.5 takes weights_only; older ones leave it to torch >= 2.6, whose default
    # is weights_only=True as well
    safe = {"weights_only": True} if "weights_only" in signature(trainer.fit).parameters else {}
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **safe)
    seconds = time.perf_counter() - t0
    if not trainer.interrupted:  # the final state, also when max_steps ended mid-epoch
        save_final_checkpoint(trainer, module, last)
        if module.val_enabled and module.last_val_step != trainer.global_step:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # metrics of the end
    summary = write_summary(cfg, module, trainer, seconds)
    if trainer.is_global_zero:
        wandb_dir = wandb_run_dir(trainer)
        csv_dir = next((lg.log_dir for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        print(f"run directory: {cfg.paths.output_dir}")
        print(f"checkpoint:    {summary['last_checkpoint']}")
        print(f"best:          {summary['best_checkpoint']}")
        print(f"wandb run:     {wandb_dir if wandb_dir else 'disabled'}")
        print(f"csv metrics:   {csv_dir}")
        metric = module.last_val_metrics.get(cfg.monitor.metric.removeprefix("val/"))
        print(f"{cfg.monitor.metric}: {metric}")
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger) and trainer.is_global_zero:
            lg.experiment.finish()  # writes the run's summary; the next multirun job starts anew
    value = module.last_val_metrics.get(cfg.monitor.metric.removeprefix("val/"), math.nan)
    return float(value)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """The command line: Hydra composes conf/train.yaml with the overrides, ``train`` runs it.

    Args:
        cfg: the config Hydra composed.
    """
    return train(cfg)


if __name__ == "__main__":
    main()
