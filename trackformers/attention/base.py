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
    """Which keys each query attends, within its event, for one packed batch.

    Built by a backend's ``plan`` (``trackformers.attention.plans``) and read by its ``forward``.
    Hits may be sorted within each event (``perm``); the groups, window and adjacency describe the
    mask in sorted order.
    """

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
    """What a backend supports: variable-length batches, masks, dtypes, devices, and whether
    it needs ``torch.compile`` to be fast.
    """

    varlen: bool = True
    masks: tuple[str, ...] = ("full",)
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    devices: tuple[str, ...] = ("cpu", "cuda")
    needs_compile: bool = False


class AttentionBackend(torch.nn.Module):
    """An attention implementation: ``plan`` builds the mask of a batch, ``forward`` applies it.

    Subclasses set ``name`` (the registry key, ``conf/attention/<name>.yaml``) and
    ``capabilities`` and are registered with :func:`register`.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def plan(self, batch) -> AttentionPlan:  # batch: trackformers.data.batch.PackedBatch
        """The attention plan of a batch.

        Args:
            batch: a ``trackformers.data.batch.PackedBatch`` (events packed by ``cu_seqlens``).

        Returns:
            The plan that :meth:`forward` takes for this batch.
        """
        raise NotImplementedError

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan) -> Tensor:
        """Attention of every hit over the keys its plan allows.

        Args:
            q: (N, H, D) queries, rows in the batch's input order.
            k: (N, H, D) keys.
            v: (N, H, D) values.
            plan: the batch's plan from :meth:`plan`.

        Returns:
            (N, H, D) attention output, in q's dtype and row order.
        """
        raise NotImplementedError


_REGISTRY: dict[str, type[AttentionBackend]] = {}


def register(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    """Class decorator: make a backend buildable by its ``name``.

    Args:
        cls: the backend class.

    Returns:
        ``cls`` itself.
    """
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[AttentionBackend]]:
    """The registered backends.

    Returns:
        A copy of the registry, name -> backend class.
    """
    return dict(_REGISTRY)


def build(name: str, **kwargs) -> AttentionBackend:
    """Instantiate a registered backend.

    Args:
        name: registry key (``dense``, ``flex``, ``windowed``, ``fused``).
        **kwargs: constructor arguments of that backend.

    Returns:
        The backend module.

    Raises:
        KeyError: no backend has that name.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown attention backend {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
