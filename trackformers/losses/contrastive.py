"""Supervised contrastive (InfoNCE) loss between hit embeddings (Khosla et al. 2020).

For an anchor hit i with particle p != 0, positives are the other hits of p, candidates the
other hits of the event (``negatives="event"``, exact, tiled) or of its attention window
(``negatives="window"``, O(N W)). With s_ij = e_i . e_j / tau:

    L_i = logsumexp_{j in cand(i)} s_ij - mean_{j in pos(i)} s_ij,   L = mean over anchors.

Noise hits (particle 0) are never anchors nor positives; ``noise="negative"`` keeps them as
negatives of every anchor (the model learns to push them away), ``noise="ignore"`` drops
them from the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackformers.losses.pair_module import PairEmbeddingLoss


class SupConPairs:
    """PairLoss for pairwise_core: statistics are (sum of anchor losses, number of anchors)."""

    def __init__(self, temperature: float):
        self.tau = float(temperature)

    def empty_stats(self, emb: Tensor) -> Tensor:
        return emb.new_zeros(2)

    def _tile(self, dots, cand, pos):
        logits = (dots / self.tau).masked_fill(~cand, float("-inf"))  # (c, n)
        lse = torch.logsumexp(logits, dim=1)  # (c,)
        npos = pos.sum(1)  # (c,)
        anchor = npos > 0
        return logits, lse, npos, anchor

    def tile_stats(self, dots, row_sq, key_sq, cand, pos) -> Tensor:
        logits, lse, npos, anchor = self._tile(dots, cand, pos)
        pos_mean = torch.where(pos, logits, 0.0).sum(1) / npos.clamp(min=1)
        li = torch.where(anchor, lse - pos_mean, 0.0)
        return torch.stack([li.sum(), anchor.sum().to(li.dtype)])

    def finalize(self, stats: Tensor) -> Tensor:
        return stats[0] / stats[1].clamp(min=1.0)

    def tile_grad(self, dots, row_sq, key_sq, cand, pos, d_stats):
        logits, lse, npos, anchor = self._tile(dots, cand, pos)
        soft = torch.exp(logits - lse[:, None])  # (c, n) softmax over candidates
        g = soft - pos.to(soft.dtype) / npos.clamp(min=1)[:, None]
        g = torch.where(anchor[:, None], g, 0.0) * (d_stats[0] / self.tau)
        return g, None


def supcon_naive(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    cu_seqlens: Tensor,
    temperature: float,
    pair_mask: Tensor | None = None,
) -> Tensor:
    """Reference with (n, n) matrices per event (tests only); pair_mask (N, N) limits pairs."""
    total, count = emb.new_zeros(()), 0
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x, y, v = emb[s:e], labels[s:e], valid[s:e]
        logits = x @ x.T / temperature  # (n, n)
        cand = v[:, None] & v[None, :] & ~torch.eye(e - s, dtype=torch.bool, device=emb.device)
        if pair_mask is not None:
            cand = cand & pair_mask[s:e, s:e]
        pos = cand & (y[:, None] == y[None, :]) & (y[:, None] != 0)
        logits = logits.masked_fill(~cand, float("-inf"))
        npos = pos.sum(1)
        anchor = npos > 0
        if not bool(anchor.any()):
            continue
        lse = torch.logsumexp(logits[anchor], 1)
        pos_mean = torch.where(pos[anchor], logits[anchor], 0.0).sum(1) / npos[anchor]
        total = total + (lse - pos_mean).sum()
        count += int(anchor.sum())
    return total / max(count, 1)


class SupConLoss(PairEmbeddingLoss):
    name = "contrastive"

    def __init__(
        self,
        temperature: float = 0.1,
        output_key: str = "embedding",
        negatives: str = "event",
        window: int = 64,
        noise: str = "negative",
        normalize: bool = True,
        tile_elems: int = 1 << 24,
        compile: bool | None = None,
    ):
        if temperature <= 0:
            raise ValueError(f"contrastive temperature must be > 0, got {temperature}")
        pairs = SupConPairs(temperature)
        super().__init__(
            pairs, output_key, negatives, window, noise, tile_elems, compile, normalize=normalize
        )
