"""Attention backend interface and registry (DESIGN.md, "Attention backends").

``plan = backend.plan(batch)`` once per batch (sort orders, masks, block metadata), reused
by every layer; ``out = backend(q, k, v, plan)`` with q, k, v of shape (total_hits, H, D)
in input order and the output in input order too.

Mask kinds, in the plan's sorted order (hits of one event stay contiguous):
  full    — i attends j iff same event.
  cluster — same event and |group_id[i] - group_id[j]| <= adjacency (groups contiguous).
  window  — same event and circular distance of sorted positions within the event <= window
            (wrap-around at +-pi after sorting by phi); an event with n <= 2*window+1 is full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class AttentionPlan:
    kind: str  # "full" | "cluster" | "window"
    cu_seqlens: Tensor  # (B+1,) int32 event boundaries (unchanged by sorting within events)
    max_seqlen: int
    perm: Tensor | None = None  # (N,) int64 sorted position -> input row; None = identity
    inv_perm: Tensor | None = None  # (N,) int64 input row -> sorted position
    group_id: Tensor | None = None  # (N,) int32 per sorted hit, non-decreasing within an event
    group_ptr: Tensor | None = None  # (G+1,) int32 sorted-row boundaries of groups
    adjacency: int = 1  # cluster: attend groups within +-adjacency
    window: int | None = None  # window: +-W sorted positions
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific cache (BlockMask, ...)


@dataclass(frozen=True)
class Capabilities:
    varlen: bool = True
    masks: tuple[str, ...] = ("full",)
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    devices: tuple[str, ...] = ("cpu", "cuda")
    needs_compile: bool = False


class AttentionBackend(torch.nn.Module):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def plan(self, batch) -> AttentionPlan:  # batch: trackformers.data.batch.PackedBatch
        raise NotImplementedError

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan) -> Tensor:
        raise NotImplementedError


_REGISTRY: dict[str, type[AttentionBackend]] = {}


def register(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[AttentionBackend]]:
    return dict(_REGISTRY)


def build(name: str, **kwargs) -> AttentionBackend:
    if name not in _REGISTRY:
        raise KeyError(f"unknown attention backend {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
