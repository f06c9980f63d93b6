"""A Hydra multirun sweep (-m) trains one job per value, each with its own output dir,
checkpoints and offline wandb run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_multirun_sweep_gives_one_run_per_job(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_events(data / "e.root", helix_events(30, seed=3, n_particles=8), {"test": True})
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "experiment=demo_tiny",
        f"data.path={data}",
        "data.val_fraction=0.2",
        "data.class_bins=null",
        "data.num_classes=null",
        "trainer.max_steps=3",
        "optim.optimizer.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    runs = set()
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "summary.json").is_file()
        found = list((job / "wandb").glob("offline-run-*"))
        assert len(found) == 1, found
        runs.add(found[0].name)
    assert len(runs) == 2  # the second job did not log into the first job's run
    lrs = {(j / ".hydra" / "overrides.yaml").read_text().count("lr=") for j in jobs}
    assert lrs == {1}


@pytest.mark.slow
def test_optuna_sweep_records_the_best_trial(tmp_path):
    """hparams_search=optuna_lr: each trial is a real training job whose returned validation
    metric Optuna optimises; the sweep dir holds the study's best parameters and value."""
    import yaml

    data = tmp_path / "data"
    data.mkdir()
    write_events(data / "e.root", helix_events(30, seed=5, n_particles=8), {"test": True})
    sweep = tmp_path / "sweep"
    args = [
        "experiment=demo_tiny",
        "hparams_search=optuna_lr",
        f"data.path={data}",
        "data.val_fraction=0.2",
        "data.class_bins=null",
        "data.num_classes=null",
        "trainer.max_steps=3",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    searched = {"optim.optimizer.lr", "optim.optimizer.weight_decay", "model.encoder.d_model"}
    trials = []
    for job in jobs:
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        chosen = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in searched)
        assert set(chosen) == searched, overrides
        trials.append({k: yaml.safe_load(v) for k, v in chosen.items()})
        summary = yaml.safe_load((sweep / job / "summary.json").read_text())
        assert summary["global_step"] == 3
        config = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert config["model"]["encoder"]["d_model"] == trials[-1]["model.encoder.d_model"]
    assert all(1e-4 <= t["optim.optimizer.lr"] <= 3e-3 for t in trials)
    assert trials[0] != trials[1]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna"
    assert result["best_params"] in trials
    assert 0.0 <= float(result["best_value"]) <= 1.0  # the returned val/trackml_score
