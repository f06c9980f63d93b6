"""Batched eager inference over a stream of events: events -> packed batches (up to a token
budget) -> forward -> clustering -> (event restricted to the model's hits, track labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

from trackformers.cluster import assign_tracks
from trackformers.data.packing import pack_events
from trackformers.inference.events import restrict
from trackformers.inference.forward import forward_batch
from trackformers.inference.loader import output_keys
from trackformers.inference.settings import cluster_settings


def infer_stream(
    model,
    events: Iterable[dict],
    fcfg,
    device,
    max_tokens: int,
    cluster: Mapping,
    cfg: dict,
    state: dict,
    amp: bool | str = "fp16",
) -> Iterator[tuple[dict, np.ndarray]]:
    """(event restricted to the model's hits, track labels) per event, batched by max_tokens.

    ``state`` receives "cluster" (the settings used: ``cluster_settings`` of the run config,
    ``cluster`` and the model's output names) and "sample" (first batch and plan, CPU);
    ``amp``: the forward's precision on CUDA (``amp_precision``: "fp16" autocast by default,
    True / "bf16", False / "fp32").

    Args:
        model: the TrackFormer on ``device``.
        events: full event dicts.
        fcfg: the feature config.
        device: the device.
        max_tokens: hits per batch.
        cluster: clustering settings.
        cfg: the run config.
        state: receives the settings used and a sample.
        amp: the forward precision.
    """
    state.setdefault("cluster", cluster_settings(cfg, cluster, output_keys(model)))
    buf, n = [], 0
    for ev in events:
        buf.append(ev)
        n += len(ev["hit_x"])
        if n >= max_tokens:
            yield from _infer_batch(model, buf, fcfg, device, state, amp)
            buf, n = [], 0
    if buf:
        yield from _infer_batch(model, buf, fcfg, device, state, amp)


def infer(model, events: list[dict], fcfg, device, max_tokens: int, cluster: Mapping, cfg: dict):
    """List version of ``infer_stream``: (events, labels, cluster settings, sample).

    Args:
        model: the TrackFormer on ``device``.
        events: full event dicts.
        fcfg: the feature config.
        device: the device.
        max_tokens: hits per batch.
        cluster: clustering settings.
        cfg: the run config.
    """
    state: dict = {}
    pairs = list(infer_stream(model, events, fcfg, device, max_tokens, cluster, cfg, state))
    return [p[0] for p in pairs], [p[1] for p in pairs], state["cluster"], state["sample"]


@torch.no_grad()
def _infer_batch(model, events, fcfg, device, state, amp: bool | str = "fp16"):
    batch = pack_events(events, fcfg).to(device)
    out, plan = forward_batch(model, batch, amp=amp)  # autocast on CUDA unless fp32
    cl = state["cluster"]
    labels = assign_tracks(out, batch.cu_seqlens, cl, plan, batch.coords).cpu().numpy()
    cu = batch.cu_seqlens.cpu().numpy()
    hit_id = batch.hit_id.cpu().numpy()
    by_id = {int(np.asarray(e["event_id"])): e for e in events}
    if "sample" not in state:
        state["sample"] = (batch.to("cpu"), _plan_cpu(plan))
    for b, eid in enumerate(batch.event_id.cpu().numpy()):
        a, e = cu[b], cu[b + 1]
        yield restrict(by_id[int(eid)], hit_id[a:e]), labels[a:e]


def _plan_cpu(plan):
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    moved = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}
    moved["extra"] = {}
    return type(plan)(**moved)
