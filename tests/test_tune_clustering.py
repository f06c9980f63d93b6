"""Clustering chosen on validation at the end of training: grid search, checkpoint entry,
and its use by default in evaluate / Predictor (explicit settings still win)."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from trackformers.checkpoint import load_checkpoint
from trackformers.data.synthetic import helix_events
from trackformers.inference.settings import cluster_settings
from trackformers.models.tuning import TuneClustering, _key
from trackformers.sim.writer import write_events
from trackformers.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"eps": []}, "eps: the grid is empty"),
        ({"eps": [0.1, 0.0]}, "eps values must be"),
        ({"min_samples": [0]}, "min_samples values must be"),
        ({"min_samples": [2.5]}, "min_samples values must be"),
        ({"filter_threshold": [0.5, 1.0]}, r"\(0, 1\)"),
        ({"filter_threshold": []}, "filter_threshold: the grid is empty"),
        ({"criterion": "best"}, "criterion must be one of"),
        ({"fake_max": 1.5}, "fake_max must lie in"),
        ({"max_events": 0}, "max_events must be"),
    ],
)
def test_bad_tuning_settings_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TuneClustering(**kw)


def _m(dm, fake, score=0.5):
    return {"dm_efficiency": dm, "fake_rate": fake, "trackml_score": score}


def test_criterion_picks_max_dm_under_the_fake_cap_else_min_fake():
    rows = [_m(0.95, 0.03), _m(0.90, 0.009), _m(0.88, 0.001), _m(math.nan, math.nan)]
    best = max(rows, key=lambda m: _key(m, "dm_at_fake", 0.01))
    assert best == rows[1]
    # nothing under the cap: the TrackML score decides (not the filter that drops every hit)
    over = [_m(0.95, 0.05, 0.6), _m(0.02, 0.02, 0.01), _m(0.90, 0.03, 0.7)]
    assert max(over, key=lambda m: _key(m, "dm_at_fake", 0.01)) == over[2]
    scored = [_m(0.95, 0.05, 0.7), _m(0.9, 0.0, 0.8)]
    assert max(scored, key=lambda m: _key(m, "trackml_score", 0.01)) == scored[1]


def test_cluster_settings_prefer_the_tuned_clustering_and_say_so():
    val = {
        "validation": {
            "cluster": {
                "method": "dbscan",
                "output_key": "embedding",
                "params": {"eps": 0.3, "min_samples": 2},
            }
        }
    }
    tuned = {
        "method": "dbscan",
        "input": "embedding",
        "params": {"eps": 0.07, "min_samples": 3},
        "filter_threshold": 0.6,
        "criterion": "dm_at_fake",
    }
    outs = {"embedding": 0, "filter_logit": 0}
    s = cluster_settings({**val, "tuned_clustering": tuned}, {"method": "auto"}, outs)
    assert s["params"] == {"eps": 0.07, "min_samples": 3} and s["filter_threshold"] == 0.6
    assert s["source"].startswith("checkpoint")
    s = cluster_settings(val, {"method": "auto"}, outs)
    assert s["params"]["eps"] == 0.3 and s["source"] == "run validation config"
    # user overrides under auto, and an explicit method, win
    s = cluster_settings(
        {**val, "tuned_clustering": tuned},
        {"method": "auto", "params": {"eps": 0.2}, "filter_threshold": 0.4},
        outs,
    )
    assert s["params"] == {"eps": 0.2, "min_samples": 3} and s["filter_threshold"] == 0.4
    assert s["source"].endswith("+ overrides")
    explicit = {"method": "dbscan", "params": {"eps": 0.1}}
    s = cluster_settings({**val, "tuned_clustering": tuned}, explicit, outs)
    assert s == {**explicit, "source": "explicit"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny training run with the hit filter and augmentation, through trackformers.train."""
    data = tmp_path_factory.mktemp("data")
    write_events(data / "events.root", helix_events(40, seed=5, n_particles=10), {"test": True})
    run_dir = tmp_path_factory.mktemp("run")
    overrides = [
        "experiment=demo_tiny",
        f"data.path={data}",
        "data.val_fraction=0.25",
        "data.test_fraction=0.1",
        "data.class_bins=null",
        "data.num_classes=null",
        f"hydra.run.dir={run_dir}",
        "validation.reconstructable.pt_min=0.5",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "model=contrastive_filter",
        "loss=contrastive_filter",
        "loss.terms.hit_filter.pt_min=0.5",
        "validation.cluster.filter_threshold=0.5",
        "data.augment.rotate_phi=true",
        "data.augment.reflect_z=true",
        "callbacks.tune_clustering.eps=[0.1,0.3]",
        "callbacks.tune_clustering.min_samples=[2]",
        "callbacks.tune_clustering.filter_threshold=[null,0.5]",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(REPO)
    HydraConfig.instance().set_config(cfg)
    train(cfg)
    return run_dir, data


@pytest.mark.slow
def test_last_checkpoint_carries_the_tuned_clustering(trained_run):
    run_dir, _ = trained_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    c = ckpt["clustering"]
    assert c["method"] == "dbscan" and c["input"] == "embedding"
    assert c["params"]["eps"] in (0.1, 0.3) and c["params"]["min_samples"] == 2
    assert c["filter_threshold"] in (None, 0.5) and c["criterion"] == "dm_at_fake"
    assert len(c["grid"]) == 4 and c["n_events"] > 0 and c["global_step"] == 12
    # the chosen point is the best of the grid by the criterion
    best = max(c["grid"], key=lambda r: _key(r, "dm_at_fake", c["fake_max"]))
    assert (best["eps"], best["filter_threshold"]) == (c["params"]["eps"], c["filter_threshold"])
    assert c["metrics"]["dm_efficiency"] == best["dm_efficiency"]


@pytest.mark.slow
def test_evaluate_and_predictor_use_it_unless_told_otherwise(trained_run, tmp_path):
    from trackformers.evaluate import run
    from trackformers.inference import Predictor

    run_dir, data = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg, _ = load_checkpoint(ckpt)
    tuned = cfg["tuned_clustering"]
    opts = {
        "ckpt": str(ckpt),
        "wandb": {"enabled": False},
        "plots": False,
        "cluster": {"method": "auto"},
        "output_dir": str(tmp_path / "a"),
    }
    m = run(opts)
    assert m["cluster"]["source"].startswith("checkpoint")
    assert m["cluster"]["params"] == tuned["params"]
    assert m["cluster"]["filter_threshold"] == tuned["filter_threshold"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["cluster"]["source"] == m["cluster"]["source"]
    explicit = {"method": "dbscan", "params": {"eps": 0.25, "min_samples": 2}}
    m = run({**opts, "cluster": explicit, "output_dir": str(tmp_path / "b")})
    assert m["cluster"]["source"] == "explicit" and m["cluster"]["params"]["eps"] == 0.25
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    assert pred.cluster_settings["source"].startswith("checkpoint")
    assert pred.cfg.filter_threshold == tuned["filter_threshold"]
    pred = Predictor.from_checkpoint(ckpt, cluster=explicit, device="cpu")
    assert pred.cfg.filter_threshold is None and pred.cfg.params["eps"] == 0.25
