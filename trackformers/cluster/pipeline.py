"""From model outputs to tracks: choose the output to cluster, assign hits, list tracks.

``assign_tracks(outputs, cu_seqlens, cfg)`` is the one call used by evaluation, the latency
benchmark and notebooks; ``start_assign`` / ``finish_assign`` are the same clustering split
around a CUDA-graph replay (``trackformers.inference.Predictor``). cfg (conf/cluster/*.yaml)
fields:

    method: a name of ``methods.METHODS`` (dbscan | dbscan_plan | dbscan_cpu | hdbscan_cpu |
            argmax)
    input: auto | embedding | params | logits   (auto: embedding, else params, else logits)
    scale: null | list of per-column factors applied to the input before clustering
    params: {...}   keyword arguments of the method (eps, min_samples, ...)
    filter_threshold: null | t in (0, 1): hits with sigmoid(filter_logit) < t get no track
    source: where the settings come from (informational: "explicit", "checkpoint", ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from trackformers.cluster import range_dbscan as rd
from trackformers.cluster.filtering import check_threshold, cluster_kept, kept_hits
from trackformers.cluster.methods import METHODS, cluster_hits, method

AUTO_ORDER = ("embedding", "params", "logits")


@dataclass
class ClusterConfig:
    """The clustering settings of conf/cluster/*.yaml (fields: see the module docstring).

    A filter threshold is checked to lie in (0, 1) and refused for methods whose
    neighbourhoods come from the unfiltered batch (``needs_plan``).
    """

    method: str = "dbscan"
    input: str = "auto"
    scale: list[float] | None = None
    params: dict = field(default_factory=lambda: {"eps": 0.1, "min_samples": 3})
    filter_threshold: float | None = None
    source: str | None = None

    def __post_init__(self):
        self.filter_threshold = check_threshold(self.filter_threshold, "cluster filter_threshold")
        spec = METHODS.get(self.method)
        if self.filter_threshold is not None and spec is not None and spec.needs_plan:
            raise ValueError(
                f"cluster filter_threshold is not supported with method {self.method} (its "
                "neighbourhoods come from the unfiltered batch); use dbscan"
            )

    @classmethod
    def from_dict(cls, d: Mapping | None) -> ClusterConfig:
        """The config of a mapping (a cluster config file); an unknown key is a ValueError.

        Args:
            d: the cluster config (None: every field at its default).
        """
        d = dict(d or {})
        unknown = set(d) - {"method", "input", "scale", "params", "filter_threshold", "source"}
        if unknown:
            raise ValueError(f"cluster config has unknown key(s) {sorted(unknown)}")
        return cls(**{k: (dict(v) if k == "params" else v) for k, v in d.items()})


def clustering_input(outputs: Mapping[str, Tensor], cfg: ClusterConfig) -> tuple[str, Tensor]:
    """The (name, tensor (N, d)) the method runs on, scaled per column if configured.

    Args:
        outputs: the model's output dict.
        cfg: the clustering settings (``input``, ``scale``, ``method``).
    """
    if cfg.input == "auto":
        spec = METHODS.get(cfg.method)
        if spec is not None and spec.input == "logits":
            name = "logits"
        else:
            name = next((k for k in AUTO_ORDER if k in outputs and k != "logits"), None)
    else:
        name = cfg.input
    if name is None or name not in outputs:
        raise KeyError(
            f"cluster input {cfg.input!r} (method {cfg.method!r}) not among model outputs "
            f"{sorted(outputs)}"
        )
    x = outputs[name]
    if x.dim() != 2:
        raise ValueError(f"model output {name!r} must be (N, d), got {tuple(x.shape)}")
    if cfg.scale is not None:
        if len(cfg.scale) != x.shape[1]:
            raise ValueError(
                f"cluster scale has {len(cfg.scale)} factors, {name!r} has {x.shape[1]} columns"
            )
        x = x * torch.tensor(cfg.scale, dtype=x.dtype, device=x.device)
    return name, x


def assign_tracks(
    outputs: Mapping[str, Tensor],
    cu_seqlens: Tensor,
    cfg: ClusterConfig | Mapping,
    plan=None,
    coords: Tensor | None = None,
) -> Tensor:
    """(N,) int64 track label per hit (unique across events, -1 = no track).

    With ``cfg.filter_threshold`` only the hits the hit filter keeps are clustered.

    Args:
        outputs: the model's output dict.
        cu_seqlens: (B + 1,) event boundaries.
        cfg: the clustering settings, or their mapping (a cluster config file).
        plan: the batch's attention plan, used by method "dbscan_plan" (neighbourhood
            "model").
        coords: (N, 3) hit positions, used by method "dbscan_plan" (neighbourhood "window"
            and "cluster").
    """
    cfg = cfg if isinstance(cfg, ClusterConfig) else ClusterConfig.from_dict(cfg)
    _, x = clustering_input(outputs, cfg)
    cu = cu_seqlens.to(x.device)
    coords = None if coords is None else coords.to(x.device)
    if cfg.filter_threshold is not None:
        keep = kept_hits(outputs, cfg.filter_threshold)  # (N,)
        return cluster_kept(
            lambda xk, cuk: cluster_hits(cfg.method, xk, cuk, **cfg.params), x.detach(), cu, keep
        )
    return cluster_hits(cfg.method, x.detach(), cu, plan=plan, coords=coords, **cfg.params)


def start_assign(
    outputs: Mapping[str, Tensor],
    cu_seqlens: Tensor,
    cfg: ClusterConfig,
    plan,
    valid: Tensor,
    rounds: int,
    coords: Tensor | None = None,
    max_seqlen: int | None = None,
) -> tuple[rd.RangeState | None, Tensor]:
    """``assign_tracks`` without any host sync, for a CUDA-graph step: (state, labels (N,)).

    ``finish_assign(state, labels)`` after the replay gives the exact labels (state None:
    the labels are final). Only methods with a ``start`` capture.

    Args:
        outputs: the model's output dict.
        cu_seqlens: (B + 1,) event boundaries.
        cfg: the clustering settings.
        plan: the batch's attention plan.
        valid: (N,) bool rows to cluster (False: padding, never clustered, label -1); with
            ``cfg.filter_threshold`` the filtered hits are left out too.
        rounds: DBSCAN component rounds before the convergence check.
        coords: (N, 3) hit positions, for neighbourhoods built from the hits.
        max_seqlen: the longest event, for neighbourhoods built from the hits.
    """
    _, x = clustering_input(outputs, cfg)
    if cfg.filter_threshold is not None:  # rejected hits are never clustered (label -1)
        valid = valid & kept_hits(outputs, cfg.filter_threshold)  # (N,)
    start = method(cfg.method).start
    if start is None:
        raise ValueError(f"cluster method {cfg.method!r} has no sync-free start (CUDA graphs)")
    return start(x, cu_seqlens, valid, rounds, plan, coords, max_seqlen, **cfg.params)


def finish_assign(state: rd.RangeState | None, labels: Tensor) -> Tensor:
    """Exact labels of a ``start_assign`` (one host sync to read the clustering's flags: DBSCAN
    rounds unfinished, non-finite input, grid key overflow; completed eagerly if any).

    Args:
        state: the state ``start_assign`` returned (None: the labels are final).
        labels: (N,) the labels ``start_assign`` returned (after the graph replay).
    """
    return labels if state is None else rd.complete(state, labels)


def split_events(labels: Tensor | np.ndarray, cu_seqlens) -> list[np.ndarray]:
    """Per-event numpy label arrays from packed labels.

    Args:
        labels: (N,) packed labels.
        cu_seqlens: (B + 1,) event boundaries (tensor or array).
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    cu = cu_seqlens.cpu().numpy() if isinstance(cu_seqlens, Tensor) else np.asarray(cu_seqlens)
    return [lab[a:b] for a, b in zip(cu[:-1], cu[1:], strict=True)]


def track_list(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hits grouped by track, on the labels' device.

    Args:
        labels: (N,) int64 track labels, -1 = no track.

    Returns:
        hit_index (M,) hits of all tracks, track after track (unassigned left out),
        track_ptr (T+1,) boundaries into hit_index, track_label (T,) the label of each track.
    """
    assigned = torch.nonzero(labels >= 0).squeeze(1)  # (M,)
    order = assigned[torch.argsort(labels[assigned], stable=True)]  # (M,)
    track_label, counts = torch.unique_consecutive(labels[order], return_counts=True)  # (T,)
    ptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=labels.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return order, ptr, track_label
