"""The summary of a finished training run: summary.json, efficiency plots, the wandb summary.

summary.json (the run directory) holds the step count, wall time, device, checkpoints, the
last validation metrics and the throughput (trackformers.callbacks.throughput); the results
table of runs (trackformers.results.table) reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from trackformers.callbacks.throughput import ThroughputLog
from trackformers.io_atomic import write_text_atomic
from trackformers.models.module import TrackFormerModule
from trackformers.viz.performance import plot_efficiency
from trackformers.viz.style import save


def wandb_run_dir(trainer) -> Path | None:
    """The local directory of the trainer's wandb run, None without a wandb logger.

    Args:
        trainer: a Lightning trainer.
    """
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            directory = getattr(run, "dir", None)
            return Path(directory).parent if directory else None
    return None


def device_name(trainer) -> str:
    """What the run trained on, e.g. "1x NVIDIA H100 80GB HBM3" or "CPU (2 threads) x 1".

    Args:
        trainer: a Lightning trainer (its root device and world size).
    """
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
        "device": device_name(trainer),
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
