"""Training entry point: ``python -m trackformers.train experiment=demo`` (Hydra, conf/train.yaml).

Builds data, model, loss, LightningModule, loggers and callbacks from the config, fits, and
prints where the checkpoints and the wandb run are. Resume an interrupted run with
``hydra.run.dir=<its directory> ckpt_path=last``: the step count and data order continue
exactly (trackformers.models.module.ResumableLoader; last.ckpt is written inside the step where
fit stops, trackformers.resume), and so do the training clock and the CSV log.
"""

from __future__ import annotations

import json
import logging
import math
import time
from inspect import signature
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from trackformers.checkpoint import check_resume_path, load_checkpoint_file, register_safe_globals
from trackformers.config_checks import check_train_config
from trackformers.io_atomic import atomic_path, write_text_atomic
from trackformers.models.module import ResumableLoader, TrackFormerModule
from trackformers.resume import LastCheckpoint, TrainClock
from trackformers.viz.performance import plot_efficiency
from trackformers.viz.style import save
from trackformers.wandb_env import is_wandb_logger, wandb_logger_config

log = logging.getLogger("trackformers.train")


def _precision() -> str:
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


if not OmegaConf.has_resolver("tf_precision"):
    OmegaConf.register_new_resolver("tf_precision", _precision)


class BatchOrderLog(Callback):
    """Appends ``global_step epoch batch_idx event_ids`` of every training batch to a file
    (one per rank: ``{rank}`` in the path is replaced) — an audit of the data order, e.g.
    across a resume. Enable with ``+callbacks.batch_log._target_=trackformers.train.BatchOrderLog
    +callbacks.batch_log.path=...``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = Path(self.path.replace("{rank}", str(trainer.global_rank)))
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = ",".join(str(i) for i in batch.event_id.tolist())
        with path.open("a") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch} {batch_idx} {ids}\n")


class ThroughputLog(Callback):
    """Training throughput after ``skip_steps`` warm-up steps: events/s and hits/s summed over
    all ranks, and the peak GPU memory of a step. Kept in ``result`` (and summary.json)."""

    def __init__(self, skip_steps: int = 5):
        self.skip_steps = int(skip_steps)
        self.result: dict[str, float] = {}
        self._t0: float | None = None
        self._events = self._hits = self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.skip_steps and self._t0 is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self._events += batch.num_events
            self._hits += batch.num_hits
            self._steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self._t0 is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        local = torch.tensor(
            [self._events, self._hits], dtype=torch.float64, device=pl_module.device
        )
        events, hits = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        self.result = {
            "steps": self._steps,
            "seconds": seconds,
            "events_per_s": events / seconds,
            "hits_per_s": hits / seconds,
            "peak_gib_rank0": peak,
            "world_size": trainer.world_size,
        }


def build(cfg: DictConfig):
    """(datamodule, module, trainer) from a composed config; nothing is run.

    The config is checked first (trackformers.config_checks); the standard WANDB_* variables
    apply to the wandb logger (trackformers.wandb_env: WANDB_MODE=disabled leaves it out).

    Args:
        cfg: the composed training config (conf/train.yaml).
    """
    check_train_config(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    loss = instantiate(cfg.loss)
    module = TrackFormerModule(
        model,
        loss,
        optim=OmegaConf.to_container(cfg.optim.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.optim.scheduler, resolve=True),
        validation=OmegaConf.to_container(cfg.validation, resolve=True),
        compile_encoder=cfg.compile,
        target_names=list(cfg.data.features.targets or []),
        config={
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items()
            if k != "hydra"
        },
    )
    make_train_loader = datamodule.train_dataloader
    datamodule.train_dataloader = lambda: ResumableLoader(make_train_loader(), module)
    loggers = []
    for c in (cfg.get("logger") or {}).values():
        if c is not None and is_wandb_logger(c):
            c = wandb_logger_config(OmegaConf.to_container(c, resolve=True))
        if c is not None:
            loggers.append(instantiate(c))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    return datamodule, module, trainer


def _wandb_run_dir(trainer) -> Path | None:
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            directory = getattr(run, "dir", None)
            return Path(directory).parent if directory else None
    return None


def _device_name(trainer) -> str:
    """What the run trained on, e.g. "1x NVIDIA H100 80GB HBM3" or "CPU (2 threads)"."""
    device = trainer.strategy.root_device
    if torch.cuda.is_available() and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{trainer.world_size}x {name}"
    return f"CPU ({torch.get_num_threads()} threads) x {trainer.world_size}"


@rank_zero_only
def write_summary(cfg: DictConfig, module: TrackFormerModule, trainer, seconds: float) -> dict:
    """summary.json, efficiency plots and the wandb summary table of this run.

    Args:
        cfg: the run's config (its output directory, name).
        module: the trained module (last validation metrics and particles).
        trainer: the Lightning trainer after ``fit`` (steps, checkpoints, loggers).
        seconds: wall-clock seconds of ``fit``.

    Returns:
        The summary written to summary.json.
    """
    out = Path(cfg.paths.output_dir)
    ckpt_dir = out / "checkpoints"
    best = next(
        (c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), ""
    )
    summary = {
        "name": cfg.name,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "train_seconds": round(seconds, 1),
        "device": _device_name(trainer),
        "precision": str(trainer.precision),
        "best_checkpoint": best or None,
        "last_checkpoint": str(ckpt_dir / "last.ckpt"),
        **{f"val/{k}": v for k, v in module.last_val_metrics.items()},
    }
    for cb in trainer.callbacks:
        if isinstance(cb, ThroughputLog) and cb.result:
            summary.update({f"throughput/{k}": v for k, v in cb.result.items()})
    plots = {}
    particles = module.last_val_particles
    if particles is not None and len(particles) and particles["reconstructable"].any():
        reco = particles[particles["reconstructable"]]
        for by in ("pt", "eta"):
            plots[f"val/efficiency_{by}"] = save(
                plot_efficiency(reco, by=by), out / "plots" / f"efficiency_{by}.png"
            )
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            rows = [[k, str(v)] for k, v in summary.items()]
            lg.log_table(key="summary", columns=["quantity", "value"], data=rows)
            for key, path in plots.items():
                lg.log_image(key=key, images=[path])
            for k, v in summary.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    lg.experiment.summary[k] = v
    return summary


def save_final_checkpoint(trainer, module: TrackFormerModule, path: Path) -> None:
    """``last.ckpt`` of the end of ``fit``, with what came after the last step.

    Where LastCheckpoint wrote it inside the last step (fit stopped there: max_steps,
    max_time), that file is kept, so a resume goes on with the next batch of the epoch; the
    training clock (which has counted the validation Lightning runs at a stop) and the
    clustering tuned in ``on_fit_end`` are put into it. Otherwise (the epoch ended) the
    trainer's state is saved.

    Args:
        trainer: the Lightning trainer after ``fit``.
        module: the trained module (its tuned clustering).
        path: the run's checkpoints/last.ckpt.
    """
    inside = [cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
    if not any(cb.path == path and cb.saved_step == trainer.global_step for cb in inside):
        trainer.save_checkpoint(path)
        return
    if trainer.is_global_zero:
        state = load_checkpoint_file(path)
        for cb in trainer.callbacks:
            if isinstance(cb, TrainClock):
                state.setdefault("callbacks", {})[cb.state_key] = cb.state_dict()
        if module.tuned_clustering is not None:
            state["clustering"] = dict(module.tuned_clustering)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    trainer.strategy.barrier("save_final_checkpoint")


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
        wandb_dir = _wandb_run_dir(trainer)
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
