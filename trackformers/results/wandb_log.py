"""An evaluation in wandb: its metrics, plots and particle table logged to the training run's
offline wandb run (found next to the checkpoint and resumed by id) or to a new one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from trackformers.wandb_env import env_init_kwargs, env_mode


def find_wandb_run(ckpt: Path) -> tuple[Path, str] | None:
    """(wandb dir, run id) of the training run that wrote ``ckpt``, if found nearby.

    Args:
        ckpt: the evaluated checkpoint.
    """
    for parent in list(ckpt.resolve().parents)[:3]:
        runs = sorted((parent / "wandb").glob("offline-run-*"))
        if runs:
            m = re.match(r"offline-run-\d{8}_\d{6}-(\w+)$", runs[-1].name)
            if m:
                return parent, m.group(1)
    return None


def log_wandb(wcfg: Mapping, ckpt: Path, out_dir: Path, result: dict) -> str | None:
    """Log metrics, plots and particles to the training run's wandb run (resumed by id) or a
    new one; the standard WANDB_* variables win over ``wcfg`` (trackformers.wandb_env).
    Returns the run's directory, None when disabled.

    Args:
        wcfg: the evaluate config's wandb section.
        ckpt: the evaluated checkpoint.
        out_dir: the evaluation directory.
        result: the metrics.json dict.
    """
    mode = env_mode() or wcfg.get("mode", "offline")
    if not wcfg.get("enabled", True) or mode == "disabled":
        return None
    import wandb

    found = find_wandb_run(ckpt)
    kw = {"mode": mode, "project": wcfg.get("project", "trackformers")}
    if found is not None:
        kw.update(dir=str(found[0]), id=found[1], resume="allow")
    else:
        kw.update(dir=str(out_dir), job_type="evaluate")
    env = env_init_kwargs()
    if found is not None:  # the training run's own directory and id stay
        env = {k: v for k, v in env.items() if k not in ("dir", "id")}
    run = wandb.init(**{**kw, **env})
    run.log({f"test/{k}": v for k, v in result["metrics"].items() if isinstance(v, (int, float))})
    for name, path in result["plots"].items():
        run.log({f"test/plots/{name}": wandb.Image(path)})
    run.log(
        {
            "test/particles": wandb.Table(
                dataframe=pd.read_csv(result["files"]["particles"]).head(5000)
            )
        }
    )
    where = getattr(run, "dir", None)
    run.finish()
    return where
