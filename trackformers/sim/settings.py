"""The simulate settings: conf/simulate.yaml and its groups, and which of them set the content.

``python -m trackformers.simulate`` composes them with Hydra (:func:`register_simulate_groups`);
code inside another Hydra app (the streaming DataModule) composes them with
:func:`default_settings`. :func:`settings_hash` names the settings a shard was made with, so a
dataset never mixes two of them (trackformers.sim.shards, trackformers.data.provenance).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from trackformers.paths import CONF_DIR

GROUPS = ("process", "vertex")  # config groups under conf/simulate/

# keys that say how much to simulate and where, not what a shard holds
_NOT_CONTENT = ("n_events", "output", "workers", "progress", "shards", "hydra", "compression")


def register_simulate_groups() -> None:
    """Expose conf/simulate/<group>/*.yaml as Hydra groups (``process=ttbar``, ``vertex=hllhc``)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for group in GROUPS:
        for f in sorted((CONF_DIR / "simulate" / group).glob("*.yaml")):
            cs.store(group=group, name=f.stem, node=OmegaConf.load(f))


def default_settings(**choices: str | None) -> dict:
    """conf/simulate.yaml with its groups composed, as Hydra would, but without Hydra's state.

    Usable inside a running Hydra app (e.g. the training DataModule), where a second Hydra
    initialisation is not allowed.

    Args:
        choices: group selections overriding the defaults list, e.g. ``process="ttbar"``,
            ``vertex="hllhc"``; None keeps the default.

    Returns:
        The plain settings dict (``hydra`` and ``defaults`` removed).
    """
    from omegaconf import OmegaConf

    base = OmegaConf.load(CONF_DIR / "simulate.yaml")
    picks = {}
    for entry in base.pop("defaults", []):
        if isinstance(entry, str):  # _self_
            continue
        ((group, name),) = dict(entry).items()
        picks[group] = name
    unknown = sorted(set(choices) - set(picks))
    if unknown:
        raise ValueError(f"unknown simulate config group(s) {unknown}; groups: {sorted(picks)}")
    picks.update({k: v for k, v in choices.items() if v is not None})
    base.pop("hydra", None)
    for group, name in picks.items():
        path = CONF_DIR / "simulate" / group / f"{name}.yaml"
        if not path.is_file():
            known = sorted(f.stem for f in path.parent.glob("*.yaml"))
            raise ValueError(f"unknown {group} {name!r}; choose one of {known}")
        base[group] = OmegaConf.merge(OmegaConf.load(path), base.get(group) or {})
    return OmegaConf.to_container(base, resolve=True)


def plain_settings(cfg) -> dict:
    """The settings as plain JSON-able Python (a DictConfig resolved, a dict copied).

    Args:
        cfg: the simulate config, a dict or a DictConfig.
    """
    if isinstance(cfg, Mapping) and not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(cfg))


def content_settings(settings: dict) -> dict:
    """The settings that determine shard content (not n_events, workers, output, ...).

    Args:
        settings: the resolved simulate config.
    """
    return {k: v for k, v in settings.items() if k not in _NOT_CONTENT}


def settings_hash(settings: dict) -> str:
    """Digest of :func:`content_settings`: shards with equal digests are interchangeable.

    Args:
        settings: the resolved simulate config.
    """
    blob = json.dumps(content_settings(settings), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
