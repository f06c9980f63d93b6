"""Every experiment config composes, resolves and instantiates (data, model, loss, module,
callbacks, loggers, trainer); config groups and launcher configs are wired as documented."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from trackformers.losses import CombinedLoss
from trackformers.resume import LastCheckpoint
from trackformers.training.build import build

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUPS = (
    "data",
    "model",
    "attention",
    "loss",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
    "experiment",
)


def compose_run(overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_all_groups_exist_and_required_experiments_are_there():
    for group in GROUPS:
        assert (CONF / group).is_dir(), group
    required = {"demo", "demo_tiny", "ttbar_pu0", "ttbar_pu20", "ttbar_pu200_pixel"}
    required |= {"ttbar_pu0_pixel", "ttbar_pu20_pixel"}
    required |= {f"ttbar_pu200_pixel_{h}" for h in ("enc_cla", "enc_reg", "joint")}
    required |= {f"attention_{b}" for b in ("dense", "flex", "windowed", "fused")}
    assert required <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}", "logger=csv"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    assert resolved["trainer"]["precision"] == (
        "bf16-mixed" if torch.cuda.is_available() else "32-true"
    )
    datamodule, module, trainer = build(cfg)  # data is not read: setup() is lazy
    assert isinstance(module.loss, CombinedLoss)
    assert datamodule.num_features == module.model.encoder.in_features
    ckpts = [c for c in trainer.checkpoint_callbacks]
    assert {Path(c.dirpath) for c in ckpts} == {tmp_path / "checkpoints"}
    assert any(c.monitor == cfg.monitor.metric for c in ckpts)
    assert any(isinstance(c, LastCheckpoint) for c in ckpts)  # writes last.ckpt
    if experiment.startswith("attention_"):
        backend = experiment.removeprefix("attention_")
        assert cfg.attention._target_.lower().split(".")[-1].startswith(backend[:4])
        base = compose_run(["experiment=ttbar_pu200_pixel", "logger=csv"], tmp_path)
        assert cfg.data == base.data  # ablations differ only in the attention backend


def test_attention_ablations_share_everything_but_attention(tmp_path):
    cfgs = {b: compose_run([f"experiment=attention_{b}"], tmp_path) for b in ("dense", "fused")}
    a, b = (OmegaConf.to_container(c, resolve=False) for c in cfgs.values())
    for key in ("data", "loss", "optim", "trainer", "validation", "seed"):
        assert a[key] == b[key], key
    assert a["attention"] != b["attention"]


@pytest.mark.parametrize("head", ["enc_cla", "enc_reg", "joint"])
def test_head_ablations_share_events_optimizer_and_budget(head, tmp_path):
    base = compose_run(["experiment=ttbar_pu200_pixel"], tmp_path)
    cfg = compose_run([f"experiment=ttbar_pu200_pixel_{head}"], tmp_path)
    a, b = (OmegaConf.to_container(c, resolve=False) for c in (base, cfg))
    for key in ("optim", "trainer", "attention", "seed"):
        assert a[key] == b[key], key
    assert a["model"]["encoder"] == b["model"]["encoder"]
    for key in ("path", "features", "max_tokens", "max_events_per_batch"):
        assert a["data"][key] == b["data"][key], key
    assert a["validation"]["reconstructable"] == b["validation"]["reconstructable"]
    assert a["model"]["head"]["_target_"] != b["model"]["head"]["_target_"]
    assert "contrastive" not in b["loss"]["terms"]  # the head's own loss only
    classifier = head != "enc_reg"
    assert (b["validation"]["cluster"]["method"] == "argmax") == classifier
    if classifier:  # argmax takes no radius: params null, not the base's eps
        assert b["validation"]["cluster"]["params"] is None


def test_pixel_rows_read_pixel_hits_and_count_pixel_particles(tmp_path):
    for name in ("ttbar_pu0_pixel", "ttbar_pu20_pixel", "ttbar_pu200_pixel"):
        cfg = compose_run([f"experiment={name}"], tmp_path)
        assert cfg.data.features.volumes == "pixel", name
        assert cfg.validation.reconstructable.pixel_only is True, name
        assert cfg.validation.reconstructable.pt_min == 0.9, name


def test_wandb_logger_is_offline_under_run_dir_and_csv_alongside(tmp_path):
    cfg = compose_run(["experiment=demo"], tmp_path)
    wandb_cfg, csv_cfg = cfg.logger.wandb, cfg.logger.csv
    assert wandb_cfg.offline is True and wandb_cfg.save_dir == str(tmp_path)
    assert csv_cfg.save_dir == str(tmp_path)


def test_slurm_launcher_config_composes_and_instantiates(tmp_path):
    cfg = compose_run(
        [
            "experiment=demo",
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.sweep.dir=" + str(tmp_path),
        ],
        tmp_path,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert cfg.trainer.strategy._target_ == "lightning.pytorch.strategies.DDPStrategy"
    inst = instantiate(cfg.hydra.launcher)
    assert type(inst).__name__ == "SlurmLauncher"


def test_loss_groups_build_their_terms(tmp_path):
    for name, terms in {
        "contrastive": {"contrastive"},
        "hinge": {"hinge"},
        "contrastive_hinge": {"contrastive", "hinge"},
        "regression": {"regression"},
        "classification": {"classification"},
        "joint": {"regression", "classification"},
    }.items():
        cfg = compose_run(["experiment=demo", f"loss={name}"], tmp_path)
        loss = instantiate(cfg.loss)
        assert set(loss.terms) == terms, name


@pytest.mark.parametrize(
    "model,loss",
    [
        ("contrastive", "contrastive"),
        ("contrastive", "contrastive_hinge"),
        ("contrastive", "hinge"),
        ("enc_reg", "regression"),
        ("enc_cla", "classification"),
        ("joint", "joint"),
    ],
)
def test_model_and_loss_groups_fit_together_on_real_batches(model, loss, tmp_path):
    from trackformers.data.synthetic import helix_events
    from trackformers.sim.writer import write_events

    write_events(tmp_path / "e.root", helix_events(12, seed=2, n_particles=6), {"test": True})
    cfg = compose_run(
        [
            "experiment=demo_tiny",
            f"model={model}",
            f"loss={loss}",
            f"data.path={tmp_path}",
            "data.class_bins.n_bins=2",
            "data.num_classes=8",
            "data.val_fraction=0.0",
            "data.test_fraction=0.0",
            "logger=csv",
        ],
        tmp_path,
    )
    datamodule, module, _ = build(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.datasets["train"]))
    total, parts = module.loss(module.model(batch), batch)
    assert torch.isfinite(total) and set(parts) == set(module.loss.terms)
    total.backward()
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
