"""Nonsense configuration fails first, naming the key and the value (trackformers.config_checks),
before any data is read or model built: train, evaluate, simulate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from trackformers.config_checks import (
    ConfigError,
    check_evaluate_config,
    check_simulate_config,
    check_train_config,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_shipped_configs_pass(experiment):
    check_train_config(compose_train(*([f"experiment={experiment}"] if experiment else [])))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.encoder.n_layers=0", "model.encoder.n_layers = 0: must be an integer >= 1"),
        ("model.encoder.n_layers=-2", "model.encoder.n_layers = -2: must be an integer >= 1"),
        ("model.encoder.n_heads=0", "model.encoder.n_heads = 0: must be an integer >= 1"),
        ("model.encoder.n_heads=3", "model.encoder.d_model = 256: must be a multiple of"),
        ("data.max_tokens=-5", "data.max_tokens = -5: must be an integer >= 1"),
        ("optim.optimizer.eps=-1e-8", "optim.optimizer.eps = -1e-08: must be a finite number > 0"),
        ("optim.optimizer.lr=0", "optim.optimizer.lr = 0: must be a finite number > 0"),
        ("validation.cluster.params.eps=-0.1", "validation.cluster.params.eps = -0.1: must be"),
        ("validation.cluster.params.min_samples=0", "params.min_samples = 0: must be an integer"),
        ("data.val_fraction=0.9", "data.val_fraction \\+ data.test_fraction = 1.0: must be < 1"),
        ("model.encoder.dropout=1.5", "model.encoder.dropout = 1.5: must be a finite number >= 0"),
        ("trainer.max_steps=0", "trainer.max_steps = 0: must be an integer >= 1 or -1"),
        ("optim.optimizer.betas=[0.9]", "optim.optimizer.betas = \\[0.9\\]: must be two numbers"),
        ("optim.scheduler.time_budget=1", "optim.scheduler.time_budget = 1: must be true or false"),
    ],
)
def test_train_refuses_nonsense_naming_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message):
        check_train_config(compose_train(override))


def test_every_problem_is_listed_at_once():
    cfg = compose_train("model.encoder.n_layers=0", "data.max_tokens=-1", "optim.optimizer.eps=-1")
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    text = str(info.value)
    assert "n_layers = 0" in text and "max_tokens = -1" in text and "eps = -1" in text


def test_train_checks_before_data_and_model_setup(tmp_path):
    """A bad value fails before the (here missing) data is looked at or the model is built."""
    from trackformers.train import train
    from trackformers.training.build import build

    cfg = compose_train(
        f"data.path={tmp_path / 'missing'}",
        "model.encoder.n_heads=0",
        "logger=csv",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    for entry in (train, build):
        with pytest.raises(ConfigError, match="model.encoder.n_heads = 0"):
            entry(cfg)
    assert not (tmp_path / "run").exists()


def test_encoder_refuses_no_blocks_and_no_heads():
    from trackformers.models.encoder import Encoder

    with pytest.raises(ValueError, match="model.encoder.n_layers = 0: must be an integer >= 1"):
        Encoder(3, 32, 4, 0)
    with pytest.raises(ValueError, match="model.encoder.n_heads = 0: must be an integer >= 1"):
        Encoder(3, 32, 0, 1)


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"max_events": 0}, "max_events = 0: must be an integer >= 1 or null"),
        ({"max_events": -3}, "max_events = -3"),
        ({"max_tokens": -1}, "max_tokens = -1: must be an integer >= 1 or null"),
        ({"cluster": {"method": "dbscan", "params": {"eps": -0.2}}}, "cluster.params.eps = -0.2"),
        ({"split": "tset"}, "split = 'tset': must be one of"),
        ({"ckpt": None}, "ckpt = None: must be the path of a .ckpt"),
    ],
)
def test_evaluate_refuses_nonsense_before_loading_anything(tmp_path, opts, message):
    from trackformers.evaluate import run

    cfg = {"ckpt": str(tmp_path / "missing.ckpt"), "wandb": {"enabled": False}, **opts}
    with pytest.raises(ConfigError, match=message):  # not FileNotFoundError of the ckpt
        run({**cfg, "output_dir": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()
    check_evaluate_config({"ckpt": "x.ckpt", "max_events": None, "max_tokens": 10})


def test_eval_events_refuse_max_events_below_one():
    from trackformers.inference.events import iter_eval_events

    with pytest.raises(ValueError, match="max_events = 0: must be an integer >= 1"):
        next(iter_eval_events({}, str(REPO / "nothing.root"), "all", 0))


@pytest.mark.parametrize("key, value", [("n_events", 0), ("events_per_shard", 0), ("workers", 0)])
def test_simulate_refuses_an_empty_run(tmp_path, key, value):
    from trackformers.sim.settings import register_simulate_groups
    from trackformers.simulate import run

    register_simulate_groups()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("simulate", overrides=[f"output={tmp_path / 'o'}", f"{key}={value}"])
    with pytest.raises(ConfigError, match=f"{key} = {value}: must be an integer >= 1"):
        run(cfg)
    assert not (tmp_path / "o").exists()
    check_simulate_config({"n_events": 1, "events_per_shard": 1})
