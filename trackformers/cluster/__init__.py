"""Hit→track assignment: GPU DBSCAN (Triton / torch), argmax for classifiers, sklearn references."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from trackformers.cluster.argmax import argmax_assign
from trackformers.cluster.components import connected_components
from trackformers.cluster.cpu import dbscan_cpu, hdbscan_cpu
from trackformers.cluster.gpu_dbscan import dbscan, dbscan_from_graph, radius_graph
from trackformers.cluster.local_dbscan import dbscan_in_plan, plan_radius_graph

METHODS = ("dbscan", "dbscan_plan", "dbscan_cpu", "hdbscan_cpu", "argmax")


def cluster_hits(method: str, output: Tensor, cu_seqlens: Tensor, plan=None, **params) -> Tensor:
    """(N,) int64 track labels (unique across events, -1 = none) by a named method.

    method: "dbscan" (exact, on output's device: sync-free Triton kernels on CUDA, torch
    elsewhere), "dbscan_plan" (radius graph within the cluster plan's attention
    neighbourhoods, not full DBSCAN; needs ``plan``), "dbscan_cpu" /
    "hdbscan_cpu" (sklearn), "argmax" (classifier logits). ``params`` are the method's
    keyword arguments.
    """
    if method == "dbscan_plan":
        if plan is None or plan.kind != "cluster":
            kind = None if plan is None else plan.kind
            raise ValueError(f"method 'dbscan_plan' needs the batch's cluster plan, got {kind}")
        return dbscan_in_plan(output.float(), plan, **params)
    if method == "dbscan":
        return dbscan(output.float(), cu_seqlens, **params)
    if method == "argmax":
        return argmax_assign(output, cu_seqlens, **params)
    if method in ("dbscan_cpu", "hdbscan_cpu"):
        fn = dbscan_cpu if method == "dbscan_cpu" else hdbscan_cpu
        x = output.detach().float().cpu().numpy()
        lab = fn(x, cu_seqlens.cpu().numpy(), **params)
        return torch.from_numpy(lab).to(output.device)
    raise ValueError(f"unknown clustering method {method!r}; choose one of {METHODS}")


def split_events(labels: Tensor | np.ndarray, cu_seqlens) -> list[np.ndarray]:
    """Per-event numpy label arrays from packed labels."""
    lab = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    cu = cu_seqlens.cpu().numpy() if isinstance(cu_seqlens, Tensor) else np.asarray(cu_seqlens)
    return [lab[a:b] for a, b in zip(cu[:-1], cu[1:], strict=True)]


from trackformers.cluster.pipeline import (  # noqa: E402  (uses cluster_hits above)
    ClusterConfig,
    assign_tracks,
    clustering_input,
    track_list,
)

__all__ = [
    "METHODS",
    "ClusterConfig",
    "assign_tracks",
    "clustering_input",
    "track_list",
    "argmax_assign",
    "cluster_hits",
    "connected_components",
    "dbscan",
    "dbscan_cpu",
    "dbscan_from_graph",
    "dbscan_in_plan",
    "hdbscan_cpu",
    "plan_radius_graph",
    "radius_graph",
    "split_events",
]
