"""The standard wandb variables (WANDB_MODE, WANDB_DIR, WANDB_PROJECT, ...) are honoured by
training and evaluation (trackformers.wandb_env)."""

import os
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from trackformers.results.wandb_log import log_wandb
from trackformers.wandb_env import env_init_kwargs, env_mode, wandb_logger_config

REPO = Path(__file__).resolve().parents[1]
LOGGER = {
    "_target_": "lightning.pytorch.loggers.WandbLogger",
    "project": "trackformers",
    "name": "demo",
    "save_dir": "/runs/x",
    "offline": True,
    "log_model": False,
}


def test_mode_from_the_environment():
    assert env_mode({}) is None
    assert env_mode({"WANDB_MODE": "disabled"}) == "disabled"
    assert env_mode({"WANDB_DISABLED": "true", "WANDB_MODE": "online"}) == "disabled"
    assert env_mode({"WANDB_MODE": "dryrun"}) == "offline"
    assert env_mode({"WANDB_MODE": "Online"}) == "online"
    with pytest.raises(ValueError, match="WANDB_MODE='ofline': must be one of"):
        env_mode({"WANDB_MODE": "ofline"})


def test_logger_config_takes_the_variables():
    assert wandb_logger_config(LOGGER, {"WANDB_MODE": "disabled"}) is None
    plain = wandb_logger_config(LOGGER, {})
    assert plain["mode"] == "offline" and plain["offline"] is False  # Lightning leaves WANDB_MODE
    assert plain["save_dir"] == "/runs/x" and plain["project"] == "trackformers"
    env = {
        "WANDB_MODE": "online",
        "WANDB_DIR": "/tmp/w",
        "WANDB_PROJECT": "p",
        "WANDB_ENTITY": "team",
        "WANDB_RUN_GROUP": "g",
        "WANDB_TAGS": "a, b",
    }
    got = wandb_logger_config(LOGGER, env)
    assert got["mode"] == "online" and got["save_dir"] == "/tmp/w" and got["project"] == "p"
    assert got["entity"] == "team" and got["group"] == "g" and got["tags"] == ["a", "b"]
    assert env_init_kwargs({"WANDB_NAME": "n", "WANDB_RUN_ID": "abc"}) == {"name": "n", "id": "abc"}


def _loggers(tmp_path, monkeypatch, env):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from trackformers.training.build import build

    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo_tiny",
                f"data.path={tmp_path}",
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    return build(cfg)[2].loggers


def test_build_leaves_wandb_out_when_disabled(tmp_path, monkeypatch):
    loggers = _loggers(tmp_path, monkeypatch, {"WANDB_MODE": "disabled"})
    assert len(loggers) == 1 and isinstance(loggers[0], CSVLogger)  # the resumable one
    assert os.environ["WANDB_MODE"] == "disabled"


def test_build_passes_dir_project_and_mode(tmp_path, monkeypatch):
    wdir = tmp_path / "wandb_home"
    env = {"WANDB_DIR": str(wdir), "WANDB_PROJECT": "elsewhere", "WANDB_MODE": "offline"}
    (wandb,) = [lg for lg in _loggers(tmp_path, monkeypatch, env) if isinstance(lg, WandbLogger)]
    init = wandb._wandb_init
    assert init["dir"] == str(wdir) and init["project"] == "elsewhere" and init["mode"] == "offline"
    default = _loggers(tmp_path, monkeypatch, {})
    (wandb,) = [lg for lg in default if isinstance(lg, WandbLogger)]
    assert wandb._wandb_init["dir"] == str(tmp_path / "run")
    assert wandb._wandb_init["project"] == "trackformers"
    assert wandb._wandb_init["mode"] == "offline"


def test_evaluate_writes_no_wandb_run_when_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert (
        log_wandb({"enabled": True, "mode": "offline"}, tmp_path / "x.ckpt", tmp_path, {}) is None
    )
    assert not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_cli_training_with_wandb_disabled_writes_no_wandb_run(tmp_path):
    """End to end: ``WANDB_MODE=disabled python -m trackformers.train ...`` (15 s on 2 cores)."""
    import subprocess
    import sys

    from trackformers.data.synthetic import helix_events
    from trackformers.sim.writer import write_events

    write_events(tmp_path / "events.root", helix_events(30, seed=5, n_particles=8), {})
    run_dir = tmp_path / "run"
    args = [
        "experiment=demo_tiny",
        f"data.path={tmp_path}",
        "data.class_bins=null",
        "data.num_classes=null",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=2",
        "data.val_fraction=0.3",
        "callbacks.last_checkpoint.every_n_train_steps=1",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "wandb run:     disabled" in proc.stdout
    assert not (run_dir / "wandb").exists() and not (REPO / "wandb").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
