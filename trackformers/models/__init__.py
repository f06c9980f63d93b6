"""trackformers.models: encoder, heads, TrackFormer (the LightningModule is in module.py)."""

from __future__ import annotations

from torch import Tensor, nn

from trackformers.models.encoder import Encoder
from trackformers.models.heads import (
    ClassifierHead,
    ContrastiveHead,
    HitFilterHead,
    JointHead,
    RegressorHead,
)


class TrackFormer(nn.Module):
    """Encoder + head. ``forward(batch)`` returns a dict of per-hit tensors in input order:

    "hidden"    (total_hits, d_model)  encoder output, always present
    "logits"    (total_hits, num_classes)  ClassifierHead / JointHead
    "params"    (total_hits, num_params)   RegressorHead / JointHead
    "embedding" (total_hits, embed_dim)    ContrastiveHead, unit L2 norm
    "filter_logit" (total_hits,)           HitFilterHead (``hit_filter``), when configured
    """

    def __init__(self, encoder: Encoder, head: nn.Module, hit_filter: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.hit_filter = hit_filter  # None: no hit filter (older configs and checkpoints)

    def forward(self, batch, plan=None) -> dict[str, Tensor]:
        h = self.encoder(batch, plan)  # (N, d_model)
        out = {"hidden": h}
        out.update(self.head(h))
        if self.hit_filter is not None:
            out.update(self.hit_filter(h))
        return out


__all__ = [
    "Encoder",
    "TrackFormer",
    "ClassifierHead",
    "RegressorHead",
    "JointHead",
    "ContrastiveHead",
    "HitFilterHead",
]
