"""Safe checkpoint loading: ``torch.load(weights_only=True)`` with a small allow-list.

A checkpoint is a pickle, and a pickle can run arbitrary code when loaded. Every checkpoint
this project reads (``evaluate``, ``inference``, ``latency``, ``export``, ``results`` and the
Lightning resume of ``train``) is therefore loaded with ``weights_only=True``: only tensors,
plain Python containers and numbers, and the classes of :func:`safe_globals` (OmegaConf
containers, which older checkpoints hold in their hyper-parameters) are rebuilt; any other
pickled object is refused with a :class:`CheckpointError` naming the file and the object.

A missing, empty, truncated or non-checkpoint file is refused with the same error naming the
path, instead of torch's bare "PytorchStreamReader failed ..." messages.

``load_checkpoint`` reads what a trackformers checkpoint (a training run's or an export's)
holds for inference: the resolved run config and the state_dict.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import typing
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

# Lightning resolves these names itself (trainer.fit(ckpt_path="last"), ...)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the path and the reason."""


def safe_globals() -> list:
    """Classes a trackformers checkpoint may hold beyond tensors and plain Python types."""
    return [
        DictConfig,
        ListConfig,
        ContainerMetadata,
        Metadata,
        AnyNode,
        BooleanNode,
        FloatNode,
        IntegerNode,
        StringNode,
        typing.Any,
        collections.defaultdict,
        dict,
        list,
        int,
    ]


def register_safe_globals() -> None:
    """Add :func:`safe_globals` to torch's process-wide allow-list, for loaders that call
    ``torch.load(weights_only=True)`` themselves (Lightning's resume)."""
    torch.serialization.add_safe_globals(safe_globals())


def load_checkpoint_file(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint dict in ``path``, loaded with ``weights_only=True``.

    Args:
        path: a file written by ``torch.save`` / Lightning (``.ckpt``, ``.pt``).
        map_location: where tensors go (``torch.load``'s argument); CPU by default.

    Returns:
        The checkpoint's top-level dict.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: the file is empty, truncated, not a torch checkpoint, holds a pickled
            object outside the allow-list, or is not a dict; the message names ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if "Unsupported global" in text or "GLOBAL" in text:
            detail = next((ln for ln in lines if "GLOBAL" in ln), text[:300])
            raise CheckpointError(
                f"checkpoint {path} holds a pickled object that is not on the allow-list of "
                f"trackformers.checkpoint.safe_globals, refused (weights_only=True loading: a "
                f"checkpoint must not run code): {detail}"
            ) from None
        detail = next((ln for ln in lines if ln.startswith("Unsupported")), text[:300])
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is not a torch checkpoint (not a zip archive "
            f"nor a legacy pickle of tensors and plain types): {detail}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) cannot be read (truncated or not a torch "
            f"checkpoint): {type(err).__name__}: {str(err)[:300]}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict"
        )
    return obj


def check_resume_path(ckpt_path, output_dir: str | os.PathLike) -> None:
    """Check the checkpoint of ``trainer.fit(ckpt_path=...)`` before any work is done.

    ``None`` passes; ``"last"`` is checked when ``<output_dir>/checkpoints/last.ckpt`` exists
    (Lightning resolves the name; a run without one starts fresh); any other Lightning name
    passes; a path must load by :func:`load_checkpoint_file` and hold a ``state_dict``.

    Args:
        ckpt_path: ``trainer.fit``'s ckpt_path (None, a Lightning name, or a path).
        output_dir: the run's output directory.

    Raises:
        FileNotFoundError, CheckpointError: naming the path.
    """
    if ckpt_path is None:
        return
    if ckpt_path in LIGHTNING_CKPT_NAMES:
        if ckpt_path != "last":
            return
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            return
    else:
        path = Path(ckpt_path)
    ckpt = load_checkpoint_file(path)
    if "state_dict" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: checkpoint {path} has no 'state_dict' (keys: "
            f"{sorted(ckpt)[:10]}); is it a Lightning checkpoint written by trackformers.train?"
        )


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(run config, state_dict) of a checkpoint written by trackformers.train (or exported).

    The run config is ``ckpt["trackformers"]["config"]`` (else the Lightning
    ``hyper_parameters.config``) as plain containers; a clustering tuned on validation and
    stored in the checkpoint (``models/tuning.py``) is added as ``"tuned_clustering"``.
    Loaded by :func:`load_checkpoint_file`: a checkpoint holding any other pickled object, or
    an empty / truncated / non-checkpoint file, is refused naming the path.

    Args:
        path: the checkpoint or export.
    """
    path = Path(path)
    ckpt = load_checkpoint_file(path)
    cfg = (ckpt.get("trackformers") or {}).get("config")
    if cfg is None:
        cfg = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ValueError(
            f"checkpoint {path} holds no run config with a 'model' entry (looked at "
            "ckpt['trackformers']['config'] and ckpt['hyper_parameters']['config'])"
        )
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' (keys: {sorted(ckpt)[:10]})")
    cfg = _plain(cfg)
    if isinstance(ckpt.get("clustering"), Mapping):  # chosen on validation (models/tuning.py)
        cfg["tuned_clustering"] = _plain(ckpt["clustering"])
    return cfg, ckpt["state_dict"]


def _plain(cfg) -> dict:
    """A stored config as plain dicts and lists (OmegaConf resolved, arrays as lists)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(
        json.dumps(cfg, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )
