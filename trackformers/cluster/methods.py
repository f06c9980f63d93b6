"""The clustering methods in one table: name -> implementation and declared capabilities.

Every way of turning per-hit model outputs into track labels is a row of ``METHODS``; code
that depends on what a method can do (run on the GPU, use the attention plan, be captured
in a CUDA graph, number its labels by class) reads the row instead of testing the method's
name. A new method is a new row.

    dbscan       exact DBSCAN (sklearn's labels): sync-free Triton kernels on CUDA
                 (``range_dbscan``), torch radius graph elsewhere (``gpu_dbscan``)
    dbscan_plan  DBSCAN on the radius graph within attention neighbourhoods: the batch's
                 plan or a phi window / cluster plan built from the hit coordinates
                 (``local_dbscan``)
    dbscan_cpu   sklearn DBSCAN, one event at a time on the host (reference)
    hdbscan_cpu  sklearn HDBSCAN on the host
    argmax       each hit takes its most probable class (classifier heads)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from trackformers.cluster import range_dbscan as rd
from trackformers.cluster.argmax import argmax_assign, argmax_labels
from trackformers.cluster.cpu import dbscan_cpu, hdbscan_cpu
from trackformers.cluster.gpu_dbscan import dbscan
from trackformers.cluster.local_dbscan import dbscan_in_plan, neighbourhood_plan

# dbscan_plan params that choose the neighbourhood; the others go to the DBSCAN itself
NEIGHBOURHOOD_KEYS = ("neighbourhood", "window", "adjacency", "group_size", "sector_size")


@dataclass(frozen=True)
class ClusterMethod:
    """A clustering method and what it can do.

    Attributes:
        name: the ``method`` of a cluster config (conf/cluster/*.yaml).
        run: ``run(x, cu_seqlens, plan, coords, **params)`` -> (N,) int64 labels, unique
            across events, -1 = no track; x (N, d) on one of ``devices``.
        devices: device types it computes on; an input elsewhere is copied to the first of
            them and the labels are copied back.
        input: what it clusters, "points" (embedding, regressed parameters) or "logits"
            (class scores); decides the model output that ``input: auto`` takes.
        needs_plan: uses the batch's attention plan or hit coordinates (its neighbourhoods),
            so it cannot run on a filtered subset of the hits.
        radius: has a DBSCAN radius ``eps`` (what a clustering tuner scans).
        class_ids: labels are class slots (event b's class c is b * C + c), so an event has
            up to C ids whether or not each is used.
        start: sync-free start of the clustering for a CUDA-graph step,
            ``start(x, cu_seqlens, valid, rounds, plan, coords, max_seqlen, **params)`` ->
            (``range_dbscan.RangeState`` to complete after the replay or None, labels);
            None: the method cannot be captured.
    """

    name: str
    run: Callable[..., Tensor]
    devices: tuple[str, ...]
    input: str
    needs_plan: bool = False
    radius: bool = False
    class_ids: bool = False
    start: Callable | None = None


# ---- run -------------------------------------------------------------------------------------
def _run_dbscan(x, cu_seqlens, plan=None, coords=None, **params) -> Tensor:
    return dbscan(x.float(), cu_seqlens, **params)


def _run_dbscan_plan(x, cu_seqlens, plan=None, coords=None, **params) -> Tensor:
    p = dict(params)
    nb = {k: p.pop(k) for k in NEIGHBOURHOOD_KEYS if k in p}
    nplan = neighbourhood_plan(plan, coords, cu_seqlens, **nb)
    return dbscan_in_plan(x.float(), nplan, **p)


def _run_argmax(x, cu_seqlens, plan=None, coords=None, **params) -> Tensor:
    return argmax_assign(x, cu_seqlens, **params)


def _on_host(fn) -> Callable[..., Tensor]:
    """A numpy clustering ``fn(x, cu_seqlens, **params)`` as a ``run`` on CPU tensors."""

    def run(x, cu_seqlens, plan=None, coords=None, **params) -> Tensor:
        return torch.from_numpy(fn(x.detach().float().numpy(), cu_seqlens.cpu().numpy(), **params))

    return run


# ---- start (CUDA-graph step) ----------------------------------------------------------------
def _start_dbscan(x, cu_seqlens, valid, rounds, plan, coords, max_seqlen, **params):
    st = rd.start_grid(
        x,
        cu_seqlens,
        params["eps"],
        params.get("min_samples", 5),
        params.get("max_dims", 3),
        rounds,
        valid=valid,
    )
    return st, rd.number_labels(st)


def _start_dbscan_plan(x, cu_seqlens, valid, rounds, plan, coords, max_seqlen, **params):
    nb = {k: params[k] for k in NEIGHBOURHOOD_KEYS if k in params}
    nplan = neighbourhood_plan(plan, coords, cu_seqlens, **nb, max_seqlen=max_seqlen, sync=False)
    st = rd.start_plan(
        x, nplan, params["eps"], params.get("min_samples", 5), None, rounds, valid=valid
    )
    return st, rd.number_labels(st)


def _start_argmax(x, cu_seqlens, valid, rounds, plan, coords, max_seqlen, **params):
    n = x.shape[0]
    seq = torch.repeat_interleave(
        torch.arange(cu_seqlens.numel() - 1, device=x.device),
        cu_seqlens.diff().long(),
        output_size=n,
    )
    lab = argmax_labels(x, seq, params.get("noise_class"), params.get("min_prob", 0.0))
    return None, torch.where(valid, lab, -1)


METHODS: dict[str, ClusterMethod] = {
    m.name: m
    for m in (
        ClusterMethod(
            "dbscan", _run_dbscan, ("cuda", "cpu"), "points", radius=True, start=_start_dbscan
        ),
        ClusterMethod(
            "dbscan_plan",
            _run_dbscan_plan,
            ("cuda", "cpu"),
            "points",
            needs_plan=True,
            radius=True,
            start=_start_dbscan_plan,
        ),
        ClusterMethod("dbscan_cpu", _on_host(dbscan_cpu), ("cpu",), "points", radius=True),
        ClusterMethod("hdbscan_cpu", _on_host(hdbscan_cpu), ("cpu",), "points"),
        ClusterMethod(
            "argmax", _run_argmax, ("cuda", "cpu"), "logits", class_ids=True, start=_start_argmax
        ),
    )
}


def method(name: str) -> ClusterMethod:
    """The row of ``METHODS`` named ``name``; a ValueError naming the choices otherwise.

    Args:
        name: a clustering method (a key of ``METHODS``).
    """
    spec = METHODS.get(name)
    if spec is None:
        raise ValueError(f"unknown clustering method {name!r}; choose one of {tuple(METHODS)}")
    return spec


def cluster_hits(
    name: str, output: Tensor, cu_seqlens: Tensor, plan=None, coords=None, **params
) -> Tensor:
    """(N,) int64 track labels (unique across events, -1 = none) by the method ``name``.

    An input on a device the method does not compute on is copied to its first device; the
    labels come back on the input's device. See the module docstring for the methods.

    Args:
        name: a clustering method (a key of ``METHODS``).
        output: (N, d) the clustering input.
        cu_seqlens: (B + 1,) event boundaries.
        plan: the batch's attention plan, for methods with ``needs_plan``.
        coords: (N, 3) hit positions, for methods with ``needs_plan`` (dbscan_plan: params
            ``neighbourhood`` "model" / "window" / "cluster", see ``local_dbscan``).
        **params: the method's keyword arguments (eps, min_samples, ...).
    """
    spec = method(name)
    where = output.device
    if where.type not in spec.devices:
        output, cu_seqlens = output.to(spec.devices[0]), cu_seqlens.to(spec.devices[0])
    return spec.run(output, cu_seqlens, plan=plan, coords=coords, **params).to(where)
