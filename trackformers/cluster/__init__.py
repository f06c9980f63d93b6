"""Hit→track assignment: GPU DBSCAN (Triton / torch), argmax for classifiers, sklearn references."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from trackformers.cluster.argmax import argmax_assign
from trackformers.cluster.components import connected_components
from trackformers.cluster.cpu import dbscan_cpu, hdbscan_cpu
from trackformers.cluster.gpu_dbscan import dbscan, dbscan_from_graph, radius_graph
from trackformers.cluster.local_dbscan import (
    dbscan_in_plan,
    neighbourhood_plan,
    plan_radius_graph,
    ranges_radius_graph,
)

METHODS = ("dbscan", "dbscan_plan", "dbscan_cpu", "hdbscan_cpu", "argmax")


def cluster_hits(method: str, output: Tensor, cu_seqlens: Tensor, plan=None, coords=None,
                 **params) -> Tensor:  # fmt: skip
    """(N,) int64 track labels (unique across events, -1 = none) by a named method.

    method: "dbscan" (exact, on output's device: sync-free Triton kernels on CUDA, torch
    elsewhere), "dbscan_plan" (DBSCAN on the radius graph within attention neighbourhoods,
    not full DBSCAN: params ``neighbourhood`` "model" (the batch's ``plan``, any kind),
    "window" (phi window of +-``window`` hits from ``coords`` (N, 3)) or "cluster" (a Part-2
    cluster plan from ``coords``); see ``local_dbscan``), "dbscan_cpu" / "hdbscan_cpu"
    (sklearn), "argmax" (classifier logits). ``params`` are the method's keyword arguments.
    """
    if method == "dbscan_plan":
        p = dict(params)
        keys = ("neighbourhood", "window", "adjacency", "group_size", "sector_size")
        nb = {k: p.pop(k) for k in keys if k in p}
        nplan = neighbourhood_plan(plan, coords, cu_seqlens, **nb)
        return dbscan_in_plan(output.float(), nplan, **p)
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
    "neighbourhood_plan",
    "plan_radius_graph",
    "ranges_radius_graph",
    "radius_graph",
    "split_events",
]
