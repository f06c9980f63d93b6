"""Checkpoint -> model on a device: the one loader of evaluation, ``Predictor`` and latency.

``load_model(ckpt, device, attention)`` rebuilds the run's model from the config stored in
the checkpoint (``trackformers.checkpoint.load_checkpoint``), loads the trained weights, swaps
the attention backend when asked (keeping the mask it was trained with), falls back to the
dense backend when the backend cannot run on the device (e.g. the fused Triton kernels on a
CPU-only machine; ``fallback=None`` refuses instead) and moves the model there in eval mode.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trackformers.attention import available
from trackformers.checkpoint import load_checkpoint
from trackformers.cluster.filtering import FILTER_KEY
from trackformers.data.features import FeatureConfig


@dataclass
class LoadedModel:
    """A checkpoint's model ready for inference.

    Attributes:
        model: the TrackFormer in eval mode, on ``device``.
        config: the run config stored in the checkpoint (plain dicts; "tuned_clustering" when
            a clustering was tuned on validation).
        device: where the model is.
        features: the input features the model was trained with (``feature_config``).
    """

    model: torch.nn.Module
    config: dict
    device: torch.device
    features: FeatureConfig


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``device`` as a torch device; "auto" or None: CUDA when available, else the CPU.

    Args:
        device: ``auto``, None, or a device name or object.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# settings whose values belong to one backend (flex impl "flex"/"torch", fused "triton"/"fa4")
BACKEND_OWN = ("impl",)


def swap_attention_kwargs(trained: Mapping, name: str) -> dict:
    """Settings of the trained attention config that backend ``name`` also takes, so that a
    swap keeps the mask the model was trained with (group size, adjacency, window, ...); a
    windowed (phi-window) run swapped to a backend with masks gets ``mask="window"``.

    Args:
        trained: the trained attention config.
        name: the backend swapped to.

    Returns:
        Constructor arguments of ``name``.
    """
    backends = available()
    if name not in backends:
        raise KeyError(f"unknown attention backend {name!r}; registered: {sorted(backends)}")
    params = inspect.signature(backends[name].__init__).parameters
    kept = {k: v for k, v in trained.items() if k in params and k not in ("self", "name")}
    if trained.get("name") != name:  # an implementation choice names the trained backend's own
        for k in BACKEND_OWN:
            kept.pop(k, None)
    target = str(trained.get("_target_", "")) + str(trained.get("name", ""))
    if "mask" in params and "mask" not in kept and "window" in target.lower():
        kept["mask"] = "window"
    return kept


def build_model(cfg: dict, state_dict: Mapping, attention: str | None = None) -> torch.nn.Module:
    """The run's model with trained weights; ``attention`` swaps the backend ("dense", ...).

    Args:
        cfg: the run config.
        state_dict: the checkpoint's ``model.*`` weights.
        attention: backend swapped to (None: the trained one).

    Returns:
        The model in eval mode.

    Raises:
        ValueError: weights missing or not fitting the model.
    """
    mcfg = OmegaConf.create({"model": cfg["model"], "data": cfg.get("data", {})})
    if attention is not None:
        old = mcfg.model.encoder.get("attention")
        old = OmegaConf.to_container(old, resolve=True) if old is not None else {}
        akw = {
            "_target_": "trackformers.attention.build",
            "name": attention,
            **swap_attention_kwargs(old, attention),
        }
        mcfg.model.encoder.attention = OmegaConf.create(akw)
    model = instantiate(mcfg.model)
    weights = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    if not weights:
        raise ValueError("checkpoint state_dict has no 'model.*' weights")
    weights = {k.replace("._orig_mod", ""): v for k, v in weights.items()}  # compiled encoders
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def runs_on(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the model's attention backend runs on ``device`` (its declared capabilities).

    Args:
        model: a TrackFormer.
        device: the device.
    """
    backend = getattr(getattr(model, "encoder", None), "attention", None)
    caps = getattr(backend, "capabilities", None)
    return caps is None or device.type in caps.devices


def feature_config(cfg: dict) -> FeatureConfig:
    """The input features of the run config's data section, without training targets and
    truth labels (inference needs the inputs only).

    Args:
        cfg: the run config.
    """
    f = dict((cfg.get("data") or {}).get("features") or {})
    f["targets"] = ()
    f.pop("class_bins", None)
    f.pop("signal", None)  # a truth label, not an input
    return FeatureConfig.from_dict(f)


@torch.no_grad()
def output_keys(model: torch.nn.Module) -> list[str]:
    """Names of the outputs of ``model(batch)`` (a TrackFormer: "hidden", the head's, the hit
    filter's), found without a forward on the model's device: the head runs on a CPU copy of
    one zero row. (A matmul on the device's stream would give it a cuBLAS workspace, 32 MiB
    on Hopper, that the CUDA-graph path of ``Predictor`` never uses.)

    Args:
        model: a TrackFormer.
    """
    head = copy.deepcopy(model.head).cpu()
    keys = ["hidden", *head(torch.zeros(1, model.encoder.d_model))]
    if getattr(model, "hit_filter", None) is not None:
        keys.append(FILTER_KEY)
    return keys


def load_model(
    ckpt: str | os.PathLike,
    device: str | torch.device | None = "auto",
    attention: str | None = None,
    fallback: str | None = "dense",
) -> LoadedModel:
    """The checkpoint's model on ``device`` (see the module docstring).

    Args:
        ckpt: a checkpoint written by trackformers.train, or its export.
        device: "auto" / None (CUDA when available), or a device.
        attention: rebuild the model with this attention backend (``swap_attention_kwargs``).
        fallback: the backend to rebuild with when the model's does not run on ``device``;
            None: refuse with a ValueError instead.

    Returns:
        The model in eval mode on the device, the run config, the device and the features.
    """
    cfg, state = load_checkpoint(ckpt)
    dev = resolve_device(device)
    model = build_model(cfg, state, attention)
    if not runs_on(model, dev):
        if fallback is None:
            raise ValueError(f"attention backend of {ckpt} does not run on {dev}; pass attention=")
        model = build_model(cfg, state, fallback)
    return LoadedModel(model.to(dev), cfg, dev, feature_config(cfg))
