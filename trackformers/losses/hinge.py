"""Pairwise hinge (metric-learning) loss, as in the Exa.TrkX embedding stage.

For pairs (i, j != i) of one event (or of i's attention window) with squared distance
q_ij = |e_i - e_j|^2:

    same particle (p != 0):   q_ij                         (pull together)
    otherwise:                max(0, margin - sqrt(q_ij))^2 (push beyond the margin)

    L = w_pos * mean over positive pairs + w_neg * mean over negative pairs.

Noise hits are never positive; ``noise="negative"`` keeps them in negative pairs (pushed
away from everything), ``noise="ignore"`` drops them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackformers.losses.pair_module import PairEmbeddingLoss

EPS = 1e-12


class HingePairs:
    """PairLoss: statistics (sum pos q, n pos, sum neg hinge, n neg)."""

    def __init__(self, margin: float, pos_weight: float, neg_weight: float):
        self.margin, self.pos_weight, self.neg_weight = float(margin), pos_weight, neg_weight

    def empty_stats(self, emb: Tensor) -> Tensor:
        """The statistics of no tile: (sum pos q, n pos, sum neg hinge, n neg).

        Args:
            emb: (N, D) embedding (device and dtype of the zeros).
        """
        return emb.new_zeros(4)

    def _tile(self, dots, row_sq, key_sq, cand, pos):
        raw = row_sq + key_sq - 2.0 * dots  # (c, n) squared distances
        q = raw.clamp(min=0.0)
        r = torch.sqrt(q + EPS)
        neg = cand & ~pos
        return raw, q, r, neg

    def tile_stats(self, dots, row_sq, key_sq, cand, pos) -> Tensor:
        """The statistics of one tile: (sum pos q, n pos, sum neg hinge, n neg).

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors.
            key_sq: (1, m) or (c, m) squared norms of the keys.
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
        """
        _, q, r, neg = self._tile(dots, row_sq, key_sq, cand, pos)
        hinge = torch.relu(self.margin - r) ** 2
        return torch.stack(
            [
                torch.where(pos, q, 0.0).sum(),
                pos.sum().to(q.dtype),
                torch.where(neg, hinge, 0.0).sum(),
                neg.sum().to(q.dtype),
            ]
        )

    def finalize(self, stats: Tensor) -> Tensor:
        """The loss from the statistics summed over the tiles.

        Args:
            stats: the sum of ``tile_stats`` over every tile.
        """
        return self.pos_weight * stats[0] / stats[1].clamp(min=1.0) + self.neg_weight * stats[
            2
        ] / stats[3].clamp(min=1.0)

    def tile_grad(self, dots, row_sq, key_sq, cand, pos, d_stats):
        """(dL / d dots, dL / d squared norms per pair) of one tile.

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors.
            key_sq: (1, m) or (c, m) squared norms of the keys.
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
            d_stats: dL / d stats, the gradient of ``finalize``.
        """
        raw, q, r, neg = self._tile(dots, row_sq, key_sq, cand, pos)
        g_q = torch.where(pos, d_stats[0], 0.0)
        g_q = g_q + torch.where(neg, -d_stats[2] * torch.relu(self.margin - r) / r, 0.0)
        g_q = g_q * (raw >= 0)  # clamp(min=0) passes no gradient below zero
        return -2.0 * g_q, g_q  # d/d dots, d/d squared norms


def hinge_naive(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    cu_seqlens: Tensor,
    margin: float,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
    pair_mask: Tensor | None = None,
) -> Tensor:
    """Reference with (n, n) matrices per event (tests only).

    Args:
        emb: (N, D) embedding.
        labels: (N,) int64 particle ids (0 = noise).
        valid: (N,) bool, hits that take part.
        cu_seqlens: (B + 1,) event offsets.
        margin: distance beyond which negative pairs cost nothing.
        pos_weight: weight of the positive-pair mean.
        neg_weight: weight of the negative-pair mean.
        pair_mask: (N, N) bool, limits the pairs (e.g. to the phi window).
    """
    sums = emb.new_zeros(4)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x, y, v = emb[s:e], labels[s:e], valid[s:e]
        sq = (x * x).sum(-1)
        q = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0)  # (n, n)
        cand = v[:, None] & v[None, :] & ~torch.eye(e - s, dtype=torch.bool, device=emb.device)
        if pair_mask is not None:
            cand = cand & pair_mask[s:e, s:e]
        pos = cand & (y[:, None] == y[None, :]) & (y[:, None] != 0)
        neg = cand & ~pos
        hinge = torch.relu(margin - torch.sqrt(q + EPS)) ** 2
        sums = sums + torch.stack([q[pos].sum(), pos.sum(), hinge[neg].sum(), neg.sum()])
    return pos_weight * sums[0] / sums[1].clamp(min=1) + neg_weight * sums[2] / sums[3].clamp(min=1)


class PairwiseHingeLoss(PairEmbeddingLoss):
    """Pairwise hinge loss of the hit embedding (see the module docstring).

    Args:
        margin: distance beyond which negative pairs cost nothing.
        output_key: model output holding the (N, D) embedding.
        negatives: "event" (all other hits, tiled) or "window" (phi window of ``window`` hits
            each side).
        window: hits each side of the phi window, >= 1.
        noise: "negative" (noise in negative pairs) or "ignore" (left out).
        pos_weight: weight w_pos of the positive-pair mean.
        neg_weight: weight w_neg of the negative-pair mean.
        tile_elems: elements of one pair tile: the loss memory bound, >= 1.
        compile: torch.compile the tile math (None = on CUDA).
    """

    name = "hinge"

    def __init__(
        self,
        margin: float = 1.0,
        output_key: str = "embedding",
        negatives: str = "event",
        window: int = 64,
        noise: str = "negative",
        pos_weight: float = 1.0,
        neg_weight: float = 1.0,
        tile_elems: int = 1 << 24,
        compile: bool | None = None,
    ):
        pairs = HingePairs(margin, pos_weight, neg_weight)
        super().__init__(pairs, output_key, negatives, window, noise, tile_elems, compile)
