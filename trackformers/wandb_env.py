"""The standard wandb environment variables, honoured by training and evaluation.

wandb reads ``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``, ... itself, but arguments given
to ``wandb.init`` win over them, and Lightning's ``WandbLogger(offline=True)`` even overwrites
``WANDB_MODE`` with "dryrun". The logger config (conf/logger/wandb_csv.yaml) and evaluate's
``wandb`` section pass such arguments, so the variables are applied here, on top of the
config: a variable that is set wins over the config value.

    WANDB_MODE=disabled (or WANDB_DISABLED=true)   no wandb run, no files
    WANDB_MODE=offline | dryrun / online | run     offline run / online run
    WANDB_DIR          directory that receives wandb/ (default: the run directory)
    WANDB_PROJECT, WANDB_ENTITY, WANDB_NAME, WANDB_RUN_GROUP, WANDB_JOB_TYPE, WANDB_NOTES,
    WANDB_TAGS (comma separated), WANDB_RUN_ID
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# environment variable -> wandb.init argument
INIT_VARIABLES = {
    "WANDB_DIR": "dir",
    "WANDB_PROJECT": "project",
    "WANDB_ENTITY": "entity",
    "WANDB_NAME": "name",
    "WANDB_RUN_GROUP": "group",
    "WANDB_JOB_TYPE": "job_type",
    "WANDB_NOTES": "notes",
    "WANDB_TAGS": "tags",
    "WANDB_RUN_ID": "id",
}
MODES = {
    "disabled": "disabled",
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "shared": "shared",
}
_TRUE = ("1", "true", "yes", "on")


def env_mode(environ: Mapping[str, str] | None = None) -> str | None:
    """The wandb mode the environment asks for ("disabled", "offline", "online", "shared"),
    or None when neither WANDB_MODE nor WANDB_DISABLED is set.

    Args:
        environ: the environment (None: ``os.environ``).

    Raises:
        ValueError: WANDB_MODE holds an unknown value (named).
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled"
    mode = env.get("WANDB_MODE", "").strip().lower()
    if not mode:
        return None
    if mode not in MODES:
        raise ValueError(f"WANDB_MODE={env['WANDB_MODE']!r}: must be one of {sorted(MODES)}")
    return MODES[mode]


def env_init_kwargs(environ: Mapping[str, str] | None = None) -> dict:
    """``wandb.init`` arguments given by the set WANDB_* variables (see the module docstring),
    mode excluded.

    Args:
        environ: the environment (None: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    out: dict = {}
    for var, arg in INIT_VARIABLES.items():
        value = env.get(var)
        if value:
            out[arg] = (
                [t.strip() for t in value.split(",") if t.strip()] if arg == "tags" else value
            )
    return out


def wandb_logger_config(cfg: Mapping, environ: Mapping[str, str] | None = None) -> dict | None:
    """A ``WandbLogger`` config (``_target_`` and arguments) with the environment applied;
    None when wandb is disabled (the logger is then left out).

    ``offline`` becomes wandb's ``mode`` argument (so Lightning does not overwrite
    WANDB_MODE); ``WANDB_DIR`` sets ``save_dir``; the other variables set their argument.

    Args:
        cfg: the logger config of the run.
        environ: the environment (None: ``os.environ``).
    """
    mode = env_mode(environ)
    if mode == "disabled":
        return None
    out = dict(cfg)
    offline = bool(out.pop("offline", False))
    out["offline"] = False
    out["mode"] = mode or out.get("mode") or ("offline" if offline else "online")
    for arg, value in env_init_kwargs(environ).items():
        out["save_dir" if arg == "dir" else arg] = value
    if out["mode"] == "offline" and out.get("log_model"):
        raise ValueError(
            f"logger.wandb.log_model={out['log_model']!r} needs an online run (mode is offline)"
        )
    return out


def is_wandb_logger(cfg) -> bool:
    """Whether a logger config instantiates Lightning's WandbLogger.

    Args:
        cfg: a logger config.
    """
    target = str((cfg or {}).get("_target_", "")) if hasattr(cfg, "get") else ""
    return target.rsplit(".", 1)[-1] == "WandbLogger"
