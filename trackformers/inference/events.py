"""The events an evaluation reads: a run's test split (or all events of given files), full
events with every schema field, and an event cut down to the hits the model saw.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from trackformers.data.dataset import split_of
from trackformers.data.reader import iter_events, list_files
from trackformers.paths import CONF_DIR


def iter_eval_events(
    cfg: dict, data, split: str, max_events: int | None, sources: dict | None = None
) -> Iterator[dict]:
    """Full events (all schema fields) of the evaluation set, streamed file chunk by chunk.

    ``sources`` (optional) receives event_id -> file of every event served, for messages.

    Args:
        cfg: the run config (data section: files, splits, sources).
        data: files, directory or glob (None: the run's own ``data.path``).
        split: ``train``, ``val``, ``test``, ``all`` or ``auto`` (test of the run's data, all of
            other data).
        max_events: stop after this many events (None: all).
        sources: filled with event_id -> file.

    Yields:
        Event dicts with every schema field.
    """
    dcfg = cfg.get("data") or {}
    spec = data if data is not None else dcfg.get("path")
    if spec is None:
        raise ValueError("no data: pass data=<files/dir/glob> (the run config has no data.path)")
    spec = [spec] if isinstance(spec, str) else list(spec)
    files = list_files([resolve_path(p) for p in spec])
    if split == "auto":
        split = "test" if data is None else "all"
    splits = {"train": 0, "val": 1, "test": 2}
    if split != "all" and split not in splits:
        raise ValueError(f"split must be train, val, test, all or auto, got {split!r}")
    fractions = (float(dcfg.get("val_fraction", 0.1)), float(dcfg.get("test_fraction", 0.1)))
    if max_events is not None and (isinstance(max_events, bool) or int(max_events) < 1):
        raise ValueError(f"max_events = {max_events!r}: must be an integer >= 1 or null")
    n = 0
    for ev in (ev for f in files for ev in _events_of(f, sources)):
        if split != "all":
            s = split_of(np.atleast_1d(ev["event_id"]), *fractions, int(dcfg.get("split_seed", 0)))
            if s[0] != splits[split]:
                continue
        yield ev
        n += 1
        if max_events is not None and n >= max_events:
            break
    if n == 0:
        raise ValueError(f"no events of split {split!r} in {[str(f) for f in files]}")


def _events_of(path: Path, sources: dict | None) -> Iterator[dict]:
    for ev in iter_events([path]):
        if sources is not None:
            sources[int(np.asarray(ev["event_id"]))] = str(path)
        yield ev


def data_spec(value):
    """data= value: files / a directory / a glob, or the name of a conf/data/<name>.yaml.

    Args:
        value: the ``data=`` value.

    Returns:
        The named data config's ``path``, else ``value`` itself.
    """
    if isinstance(value, str) and re.fullmatch(r"\w+", value) and not resolve_path(value).exists():
        named = CONF_DIR / "data" / f"{value}.yaml"
        if named.is_file():
            return OmegaConf.load(named).get("path")
    return value


def resolve_path(p) -> Path:
    """``p`` as a path; a relative one under a Hydra run is taken from the directory the
    command was started in (Hydra changes into the run directory).

    Args:
        p: a path.
    """
    if HydraConfig.initialized() and not Path(p).is_absolute():
        return Path(HydraConfig.get().runtime.cwd) / p
    return Path(p)


def restrict(event: dict, hit_id: np.ndarray) -> dict:
    """The event with only the hits the model saw (by hit_id, in the model's order).

    Args:
        event: the full event.
        hit_id: (n,) hit ids the model saw, in its order.

    Returns:
        The event dict with the hit arrays restricted and reordered.
    """
    ids = np.asarray(event["hit_id"]).astype(np.int64)
    order = np.argsort(ids)
    pos = order[np.searchsorted(ids[order], hit_id)]
    if not np.array_equal(ids[pos], hit_id):
        raise ValueError(
            f"event {event.get('event_id')}: model hits not found among the event's hit_id"
        )
    return {k: (np.asarray(v)[pos] if k.startswith("hit_") else v) for k, v in event.items()}
