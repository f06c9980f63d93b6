"""trackformers.losses: per-hit and correlation-aware training losses, combined in config.

Every loss is ``loss(outputs: dict[str, Tensor], batch: PackedBatch) -> Tensor``;
``CombinedLoss`` returns ``(total, {term: value})``.
"""

from trackformers.losses.classification import BinnedCrossEntropyLoss
from trackformers.losses.combined import CombinedLoss
from trackformers.losses.contrastive import SupConLoss, hard_infonce_naive, supcon_naive
from trackformers.losses.hinge import PairwiseHingeLoss, hinge_naive
from trackformers.losses.hit_filter import HitFilterLoss
from trackformers.losses.mining import hard_negatives, positive_table, signal_labels
from trackformers.losses.neighbours import phi_sort, window_neighbours
from trackformers.losses.pairwise_core import tiled_pair_loss
from trackformers.losses.regression import ParameterRegressionLoss

__all__ = [
    "BinnedCrossEntropyLoss",
    "CombinedLoss",
    "HitFilterLoss",
    "PairwiseHingeLoss",
    "ParameterRegressionLoss",
    "SupConLoss",
    "hard_infonce_naive",
    "hard_negatives",
    "hinge_naive",
    "phi_sort",
    "positive_table",
    "signal_labels",
    "supcon_naive",
    "tiled_pair_loss",
    "window_neighbours",
]
