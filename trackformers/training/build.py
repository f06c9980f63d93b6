"""Config → (datamodule, LightningModule, trainer): the objects of a training run, not run.

Importing this module registers the ``${tf_precision:}`` resolver of conf/trainer/default.yaml
(bf16-mixed where CUDA is available, else 32-true).
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trackformers.config_checks import check_train_config
from trackformers.models.module import ResumableLoader, TrackFormerModule
from trackformers.wandb_env import is_wandb_logger, wandb_logger_config


def _precision() -> str:
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


if not OmegaConf.has_resolver("tf_precision"):
    OmegaConf.register_new_resolver("tf_precision", _precision)


def build(cfg: DictConfig):
    """(datamodule, module, trainer) from a composed config; nothing is run.

    The config is checked first (trackformers.config_checks); the standard WANDB_* variables
    apply to the wandb logger (trackformers.wandb_env: WANDB_MODE=disabled leaves it out).

    Args:
        cfg: the composed training config (conf/train.yaml).

    Returns:
        The datamodule (its train loader resumable), the TrackFormerModule and the trainer
        with the configured loggers and callbacks.
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
