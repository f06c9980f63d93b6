"""Packed variable-length batches: events concatenated, never padded (DESIGN.md)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

# host copies of device cu_seqlens, recorded by PackedBatch.to(): id -> (tensor ref, version,
# values). Plan builders read them instead of syncing with the device (see host_cu_seqlens).
_HOST_CU: dict[int, tuple] = {}


def _remember_host_cu(device_cu: Tensor, values: list[int]) -> None:
    if device_cu.is_inference():  # no version counter: in-place changes would go unseen
        return
    key = id(device_cu)
    ref = weakref.ref(device_cu, lambda _: _HOST_CU.pop(key, None))
    _HOST_CU[key] = (ref, device_cu._version, values)


def host_cu_seqlens(cu_seqlens: Tensor) -> list[int] | None:
    """cu_seqlens as a host list WITHOUT a device sync, or None when that is not possible.

    CPU tensors are read directly; a device tensor is known when PackedBatch.to() moved it
    from the host (its values were recorded then) and it was not modified in place since
    (tensor version unchanged). Anything else returns None (the caller syncs), inference
    tensors (made under torch.inference_mode, no version counter) included.

    Args:
        cu_seqlens: (B+1,) event boundaries.
    """
    return cu_seqlens.tolist() if cu_seqlens.device.type == "cpu" else _recorded(cu_seqlens)


def _recorded(t: Tensor) -> list[int] | None:
    """The values recorded for this very tensor, if it was not modified since."""
    entry = None if t.is_inference() else _HOST_CU.get(id(t))
    if entry is None or entry[0]() is not t or entry[1] != t._version:
        return None
    return entry[2]


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
        """Number of events packed in the batch."""
        return self.cu_seqlens.numel() - 1

    @property
    def num_hits(self) -> int:
        """Number of hits (rows) of all events."""
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
        """The batch with every tensor moved to ``device``.

        Args:
            device: target device.
            non_blocking: asynchronous copies (from pinned memory).

        Returns:
            A new PackedBatch; its event boundaries stay known on the host (no sync to read them).
        """
        out = self._map(lambda t: t.to(device, non_blocking=non_blocking))
        if self.cu_seqlens.device.type == "cpu" and out.cu_seqlens.device.type != "cpu":
            _remember_host_cu(out.cu_seqlens, self.cu_seqlens.tolist())  # no sync later
        return out

    def pin_memory(self) -> PackedBatch:
        """The batch with every tensor in pinned host memory (DataLoader ``pin_memory``)."""
        return self._map(lambda t: t.pin_memory())
