"""One dataset, one simulation setting: refuse files simulated with different settings.

``python -m trackformers.simulate`` stamps every shard with the settings that determine its
content (``settings`` in the ``metadata`` provenance: process, pile-up, vertex spread, noise
rate, detector, seed). Training on files of two settings (say a dataset of the earlier
defaults, sigma_z = 50 mm and no noise, beside one of the TrackML defaults) would mix two
different tasks without a trace, so it is an error that names one file of each and the
settings that differ. The seed may differ (more events of the same kind); files without
settings (imported TrackML CSV or ACTS files) are not compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from trackformers.data.reader import read_metadata
from trackformers.sim.settings import content_settings

SAME_KIND_KEYS = ("seed",)  # settings that may differ inside one dataset


def check_one_setting(files: Sequence[str | os.PathLike]) -> dict | None:
    """Raise if the simulated files among ``files`` were made with different settings.

    Args:
        files: native ROOT files of one dataset (train/val/test are split from them).

    Returns:
        The common settings (without the seed), or None when no file carries settings.

    Raises:
        ValueError: two files were simulated with different settings; the message names both
            files and the settings that differ.
    """
    first: tuple[dict, str, Path] | None = None
    for f in files:
        path = Path(f)
        try:
            settings = read_metadata(path).get("settings")
        except Exception:  # unreadable or missing: the reader reports it (or skips it)
            continue
        if not isinstance(settings, dict):
            continue
        kind = simulation_kind(settings)
        key = json.dumps(kind, sort_keys=True)
        if first is None:
            first = (kind, key, path)
        elif key != first[1]:
            raise ValueError(
                f"{path} was made with other settings than {first[2]} "
                f"({_differences(first[0], kind)}): a dataset must come from one simulation "
                "setting; train on one of them, or simulate both alike"
            )
    return first[0] if first else None


def simulation_kind(settings: dict) -> dict:
    """The settings that make events of one kind: content settings without the seed.

    Args:
        settings: simulation settings (a shard's ``metadata["settings"]`` or a stream's).

    Returns:
        A plain dict without the seed and without run-only keys (n_events, output, ...).
    """
    plain = json.loads(json.dumps(settings))
    return {k: v for k, v in content_settings(plain).items() if k not in SAME_KIND_KEYS}


def check_resume(saved: dict | None, current: dict | None) -> None:
    """Raise when a run resumes on data of another simulation kind than it was trained on.

    Args:
        saved: :func:`simulation_kind` stored in the checkpoint (None: not recorded).
        current: that of the data the run resumes on (None: not simulated by us).

    Raises:
        ValueError: both are known and differ; the message names the differing settings.
    """
    if saved is None or current is None or saved == current:
        return
    raise ValueError(
        f"the checkpoint was trained on data simulated with other settings "
        f"({_differences(saved, current)}): resume on the data it was trained on, or start a "
        "new run"
    )


def _differences(a, b, prefix: str = "") -> str:
    """The settings keys whose values differ (first four), as ``key: a -> b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return ", ".join(_differences(a.get(k), b.get(k), f"{prefix}{k}.") for k in keys[:4])
    return f"{prefix.rstrip('.') or 'settings'}: {a} -> {b}"
