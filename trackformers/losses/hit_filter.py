"""Hit-filter loss: binary cross-entropy of a per-hit logit against "this hit belongs to a
particle worth tracking" (reconstructable, above the pT threshold).

The label is ``batch.targets["signal"]`` (bool, from the data pipeline) when the batch holds
it; otherwise it is derived from the truth the batch carries: particle id != 0,
``targets["pt"] >= pt_min`` and at least ``min_hits`` hits of the particle in the event
(the pseudorapidity cut of the reconstructable definition is then not applied). Hits the
filter rejects are left out of clustering (``trackformers.cluster.filtering``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import get_output, particle_labels


class HitFilterLoss(nn.Module):
    """BCE on ``outputs[output_key]`` (total_hits,) logits.

    Args:
        output_key: model output with the per-hit logit (``HitFilterHead``: "filter_logit").
        target_key: bool per-hit label in ``batch.targets`` (used when present).
        pt_min: GeV, the fallback label's pT threshold (> 0).
        min_hits: the fallback label's minimum number of hits of the particle (>= 1).
        pos_weight: weight of the positive class in the BCE (> 0); null = 1.
    """

    name = "hit_filter"

    def __init__(
        self,
        output_key: str = "filter_logit",
        target_key: str = "signal",
        pt_min: float = 0.9,
        min_hits: int = 3,
        pos_weight: float | None = None,
    ):
        super().__init__()
        if not (math.isfinite(float(pt_min)) and float(pt_min) >= 0):
            raise ValueError(f"loss hit_filter: pt_min must be a finite value >= 0, got {pt_min}")
        if int(min_hits) < 1:
            raise ValueError(f"loss hit_filter: min_hits must be >= 1, got {min_hits}")
        if pos_weight is not None and not (float(pos_weight) > 0 and math.isfinite(pos_weight)):
            raise ValueError(f"loss hit_filter: pos_weight must be > 0 (or null), got {pos_weight}")
        self.output_key, self.target_key = output_key, target_key
        self.pt_min, self.min_hits = float(pt_min), int(min_hits)
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def labels(self, batch) -> Tensor:
        """(total_hits,) bool filter label of every hit (see the module docstring).

        Args:
            batch: the packed batch (``targets[target_key]``, else particle ids and pT).
        """
        if self.target_key in batch.targets:
            return batch.targets[self.target_key].bool()
        if "pt" not in batch.targets:
            raise KeyError(
                f"loss hit_filter needs batch.targets[{self.target_key!r}] or, to derive the "
                f"label, targets['pt']; the batch holds {sorted(batch.targets)}"
            )
        return derived_signal(batch, self.pt_min, self.min_hits)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        logit = get_output(outputs, self.output_key, self.name).float()  # (N,)
        if logit.dim() != 1:
            raise ValueError(
                f"loss hit_filter: {self.output_key!r} must be (N,), got {tuple(logit.shape)}"
            )
        target = self.labels(batch).to(logit.device, torch.float32)  # (N,)
        pw = None
        if self.pos_weight is not None:
            pw = torch.tensor(self.pos_weight, device=logit.device)
        return F.binary_cross_entropy_with_logits(logit, target, pos_weight=pw)


def derived_signal(batch, pt_min: float, min_hits: int) -> Tensor:
    """(total_hits,) bool: hit of a particle with pT >= pt_min and >= min_hits hits in its
    event, from ``batch.particle_id`` and ``batch.targets["pt"]`` (NaN for noise).

    Args:
        batch: the packed batch, with particle ids and ``targets["pt"]``.
        pt_min: GeV, the pT threshold.
        min_hits: the particle's minimum number of hits in the event.
    """
    pid = particle_labels(batch, "hit_filter")  # (N,)
    pt = batch.targets["pt"].float()  # (N,)
    cu = batch.cu_seqlens.long()
    n = pid.numel()
    event = torch.repeat_interleave(
        torch.arange(cu.numel() - 1, device=pid.device), cu.diff(), output_size=n
    )  # (N,)
    _, inv, counts = torch.unique(
        torch.stack([event, pid]), dim=1, return_inverse=True, return_counts=True
    )
    nhits = counts[inv]  # (N,) hits of the hit's particle in its event
    return (pid != 0) & (torch.nan_to_num(pt, nan=-1.0) >= pt_min) & (nhits >= min_hits)
