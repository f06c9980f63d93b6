"""Cross-entropy over bins of track-parameter space (TrackFormers "classifier", EncCla).

The data layer bins the parameters (quantile bins, trackformers.data.binning) into one joint
class per hit, ``batch.targets["class"]`` (total_hits,) int64, -1 where the hit has no valid
particle. The model gives ``outputs["logits"]`` (total_hits, num_classes).

Noise: ``noise="ignore"`` leaves class -1 hits out; ``noise="class"`` trains the last logit
as an explicit noise class for hits with particle id 0 (the head then has one more class).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import check_noise_mode, get_output, get_target, zero_loss


class BinnedCrossEntropyLoss(nn.Module):
    """Cross-entropy of the per-hit logits against the hit's parameter-bin class.

    Args:
        output_key: model output of (N, C) logits.
        target_key: ``batch.targets`` entry of (N,) int64 classes (-1: no valid particle).
        class_weights: C weights of the classes (None: all 1).
        noise: "ignore" (class -1 hits left out) or "class" (noise hits train the last logit).
        label_smoothing: cross-entropy label smoothing in [0, 1).
    """

    name = "classification"

    def __init__(
        self,
        output_key: str = "logits",
        target_key: str = "class",
        class_weights: Sequence[float] | None = None,
        noise: str = "ignore",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.noise = check_noise_mode(noise, ("ignore", "class"), self.name)
        self.output_key, self.target_key = output_key, target_key
        self.label_smoothing = float(label_smoothing)
        cw = None if class_weights is None else torch.as_tensor(list(class_weights)).float()
        self.register_buffer("class_weights", cw)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        logits = get_output(outputs, self.output_key, self.name).float()  # (N, C)
        target = get_target(batch, self.target_key, self.name).long()  # (N,)
        n_cls = logits.shape[1]
        if self.class_weights is not None and self.class_weights.numel() != n_cls:
            raise ValueError(
                f"classification: class_weights has {self.class_weights.numel()} entries, "
                f"the model gives {n_cls} classes"
            )
        if int(target.max()) >= n_cls - (1 if self.noise == "class" else 0):
            raise ValueError(
                f"classification: target class {int(target.max())} does not fit the "
                f"{n_cls} logits{' (last one = noise)' if self.noise == 'class' else ''}; "
                "set the head's num_classes to the data's num_classes"
                + (" + 1" if self.noise == "class" else "")
            )
        if self.noise == "class":
            if batch.particle_id is None:
                raise ValueError("classification noise='class' needs batch.particle_id")
            target = torch.where(batch.particle_id == 0, n_cls - 1, target)
        if not bool((target >= 0).any()):
            return zero_loss(logits)
        return F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=-1,
            label_smoothing=self.label_smoothing,
        )
