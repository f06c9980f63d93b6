"""Packed variable-length batches: events concatenated, never padded (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class PackedBatch:
    """B events packed hit after hit; event b owns rows cu_seqlens[b]:cu_seqlens[b+1]."""

    x: Tensor  # (total_hits, F) float32 model input features
    cu_seqlens: Tensor  # (B+1,) int32 event boundaries
    max_seqlen: int  # longest event in the batch
    coords: Tensor  # (total_hits, 3) float32 hit x, y, z in mm (for attention plans)
    particle_id: Tensor | None = None  # (total_hits,) int64, 0 = noise
    weight: Tensor | None = None  # (total_hits,) float32 TrackML weight
    hit_id: Tensor | None = None  # (total_hits,) int64
    volume_id: Tensor | None = None  # (total_hits,) int32
    event_id: Tensor | None = None  # (B,) int64
    targets: dict[str, Tensor] = field(
        default_factory=dict
    )  # per-hit targets, first dim total_hits

    @property
    def num_events(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_hits(self) -> int:
        return self.x.shape[0]

    def seq_index(self) -> Tensor:
        """(total_hits,) int64 event index of every hit."""
        lengths = self.cu_seqlens.diff().long()
        return torch.repeat_interleave(
            torch.arange(lengths.numel(), device=lengths.device), lengths
        )

    def _map(self, fn) -> PackedBatch:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = fn(v)
            elif isinstance(v, dict):
                v = {k: fn(t) for k, t in v.items()}
            out[f.name] = v
        return PackedBatch(**out)

    def to(self, device, non_blocking: bool = False) -> PackedBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        return self._map(lambda t: t.pin_memory())
