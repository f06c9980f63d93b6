"""Supervised contrastive (InfoNCE) loss between hit embeddings (Khosla et al. 2020).

For an anchor hit i with particle p != 0, positives are the other hits of p, candidates the
other hits of the event (``negatives="event"``, exact, tiled) or of its attention window
(``negatives="window"``, O(N W)). With s_ij = e_i . e_j / tau:

    L_i = logsumexp_{j in cand(i)} s_ij - mean_{j in pos(i)} s_ij,   L = mean over anchors.

Noise hits (particle 0) are never anchors nor positives; ``noise="negative"`` keeps them as
negatives of every anchor (the model learns to push them away), ``noise="ignore"`` drops
them from the loss.

``negatives="topk"`` (HEPT-style hard negatives): the candidates of anchor i are its
positives and the ``topk`` hits of its event most similar to it that are not of its particle
(found without grad, trackformers.losses.mining), and each positive pair is an InfoNCE term
against those negatives only:

    L_i = mean_{p in pos(i)} -log( e^{s_ip} / (e^{s_ip} + sum_{n in neg_k(i)} e^{s_in}) ).

``anchors="signal"``: only hits with ``batch.targets["signal"]`` (reconstructable particles)
are anchors and positives; low-pT and noise hits remain negatives.

``kernel="triton"`` computes ``negatives="event"`` with the fused flash-style kernels of
:mod:`trackformers.kernels.supcon` (one pass per direction, O(N) memory, CUDA only) instead
of the torch tiles; same loss, same options.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from trackformers.kernels.supcon import supcon_loss
from trackformers.losses.pair_module import PairEmbeddingLoss


class SupConPairs:
    """PairLoss for pairwise_core: statistics are (sum of anchor losses, number of anchors)."""

    def __init__(self, temperature: float):
        self.tau = float(temperature)

    def empty_stats(self, emb: Tensor) -> Tensor:
        """The statistics of no tile: sum of anchor losses, number of anchors.

        Args:
            emb: (N, D) embedding (device and dtype of the zeros).
        """
        return emb.new_zeros(2)

    def _tile(self, dots, cand, pos):
        logits = (dots / self.tau).masked_fill(~cand, float("-inf"))  # (c, n)
        lse = torch.logsumexp(logits, dim=1)  # (c,)
        npos = pos.sum(1)  # (c,)
        anchor = npos > 0
        return logits, lse, npos, anchor

    def tile_stats(self, dots, row_sq, key_sq, cand, pos) -> Tensor:
        """The statistics of one tile (sum of anchor losses, number of anchors).

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors (unused).
            key_sq: (1, m) or (c, m) squared norms of the keys (unused).
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
        """
        logits, lse, npos, anchor = self._tile(dots, cand, pos)
        pos_mean = torch.where(pos, logits, 0.0).sum(1) / npos.clamp(min=1)
        li = torch.where(anchor, lse - pos_mean, 0.0)
        return torch.stack([li.sum(), anchor.sum().to(li.dtype)])

    def finalize(self, stats: Tensor) -> Tensor:
        """The loss from the statistics summed over the tiles.

        Args:
            stats: the sum of ``tile_stats`` over every tile.
        """
        return stats[0] / stats[1].clamp(min=1.0)

    def tile_grad(self, dots, row_sq, key_sq, cand, pos, d_stats):
        """(dL / d dots, None) of one tile.

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors (unused).
            key_sq: (1, m) or (c, m) squared norms of the keys (unused).
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
            d_stats: dL / d stats, the gradient of ``finalize``.
        """
        logits, lse, npos, anchor = self._tile(dots, cand, pos)
        soft = torch.exp(logits - lse[:, None])  # (c, n) softmax over candidates
        g = soft - pos.to(soft.dtype) / npos.clamp(min=1)[:, None]
        g = torch.where(anchor[:, None], g, 0.0) * (d_stats[0] / self.tau)
        return g, None


class HardInfoNCEPairs:
    """PairLoss over a (positives + hard negatives) neighbour table: per positive pair an
    InfoNCE term against the anchor's negatives; statistics (sum of anchor losses, anchors)."""

    def __init__(self, temperature: float):
        self.tau = float(temperature)

    def empty_stats(self, emb: Tensor) -> Tensor:
        """The statistics of no tile: sum of anchor losses, number of anchors.

        Args:
            emb: (N, D) embedding (device and dtype of the zeros).
        """
        return emb.new_zeros(2)

    def _tile(self, dots, cand, pos):
        logits = dots / self.tau  # (c, m)
        neg = cand & ~pos  # (c, m)
        neg_lse = torch.logsumexp(logits.masked_fill(~neg, float("-inf")), dim=1)  # (c,)
        gap = neg_lse[:, None] - logits  # (c, m); -inf without negatives
        npos = pos.sum(1)  # (c,)
        return logits, neg, neg_lse, gap, npos, npos > 0

    def tile_stats(self, dots, row_sq, key_sq, cand, pos) -> Tensor:
        """The statistics of one tile (sum of anchor losses, number of anchors).

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors (unused).
            key_sq: (1, m) or (c, m) squared norms of the keys (unused).
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
        """
        _, _, _, gap, npos, anchor = self._tile(dots, cand, pos)
        # -log(e^a / (e^a + e^b)) = softplus(b - a)
        li = torch.where(pos, F.softplus(gap), 0.0).sum(1) / npos.clamp(min=1)  # (c,)
        li = torch.where(anchor, li, 0.0)
        return torch.stack([li.sum(), anchor.sum().to(li.dtype)])

    def finalize(self, stats: Tensor) -> Tensor:
        """The loss from the statistics summed over the tiles.

        Args:
            stats: the sum of ``tile_stats`` over every tile.
        """
        return stats[0] / stats[1].clamp(min=1.0)

    def tile_grad(self, dots, row_sq, key_sq, cand, pos, d_stats):
        """(dL / d dots, None) of one tile.

        Args:
            dots: (c, m) dot products of the tile's anchors and keys.
            row_sq: (c, 1) squared norms of the anchors (unused).
            key_sq: (1, m) or (c, m) squared norms of the keys (unused).
            cand: (c, m) bool, candidate pairs.
            pos: (c, m) bool, positive pairs (same particle).
            d_stats: dL / d stats, the gradient of ``finalize``.
        """
        logits, neg, neg_lse, gap, npos, anchor = self._tile(dots, cand, pos)
        share = torch.where(pos, torch.sigmoid(gap), 0.0) / npos.clamp(min=1)[:, None]  # (c, m)
        soft = torch.where(neg, torch.exp(logits - neg_lse[:, None]), 0.0)  # (c, m) over negs
        g = soft * share.sum(1, keepdim=True) - share  # d L_i / d s_ij
        g = torch.where(anchor[:, None], g, 0.0) * (d_stats[0] / self.tau)
        return g, None


def hard_infonce_naive(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    cu_seqlens: Tensor,
    temperature: float,
    k: int,
    anchor_mask: Tensor | None = None,
) -> Tensor:
    """Reference of ``negatives="topk"`` with (n, n) matrices per event (tests only).

    Args:
        emb: (N, D) embedding.
        labels: (N,) int64 particle ids (0 = noise).
        valid: (N,) bool, hits that take part.
        cu_seqlens: (B + 1,) event offsets.
        temperature: tau > 0.
        k: hard negatives per anchor.
        anchor_mask: (N,) bool, limits anchors and positives (``anchors="signal"``).
    """
    total, count = emb.new_zeros(()), 0
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x, y, v = emb[s:e], labels[s:e], valid[s:e]
        a = torch.ones_like(v) if anchor_mask is None else anchor_mask[s:e]
        logits = x @ x.T / temperature  # (n, n)
        cand = v[:, None] & v[None, :] & ~torch.eye(e - s, dtype=torch.bool, device=emb.device)
        same = y[:, None] == y[None, :]
        pos = cand & same & (y[:, None] != 0) & a[:, None] & a[None, :]
        other = cand & ~same  # (n, n) possible negatives
        if e - s < 2:
            continue
        top, idx = logits.detach().masked_fill(~other, float("-inf")).topk(min(k, e - s), 1)
        hard = torch.zeros_like(other).scatter_(1, idx, top > float("-inf"))  # (n, n)
        neg_lse = torch.logsumexp(logits.masked_fill(~hard, float("-inf")), 1)  # (n,)
        term = torch.logaddexp(logits, neg_lse[:, None]) - logits  # (n, n)
        npos = pos.sum(1)
        anchor = npos > 0
        if not bool(anchor.any()):
            continue
        li = torch.where(pos, term, 0.0).sum(1)[anchor] / npos[anchor]
        total = total + li.sum()
        count += int(anchor.sum())
    return total / max(count, 1)


def supcon_naive(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    cu_seqlens: Tensor,
    temperature: float,
    pair_mask: Tensor | None = None,
    anchor_mask: Tensor | None = None,
) -> Tensor:
    """Reference with (n, n) matrices per event (tests only).

    Args:
        emb: (N, D) embedding.
        labels: (N,) int64 particle ids (0 = noise).
        valid: (N,) bool, hits that take part.
        cu_seqlens: (B + 1,) event offsets.
        temperature: tau > 0.
        pair_mask: (N, N) bool, limits the pairs (e.g. to the phi window).
        anchor_mask: (N,) bool, limits anchors and positives (``anchors="signal"``).
    """
    total, count = emb.new_zeros(()), 0
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        x, y, v = emb[s:e], labels[s:e], valid[s:e]
        logits = x @ x.T / temperature  # (n, n)
        cand = v[:, None] & v[None, :] & ~torch.eye(e - s, dtype=torch.bool, device=emb.device)
        if pair_mask is not None:
            cand = cand & pair_mask[s:e, s:e]
        pos = cand & (y[:, None] == y[None, :]) & (y[:, None] != 0)
        if anchor_mask is not None:
            pos = pos & anchor_mask[s:e, None] & anchor_mask[None, s:e]
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
    """Supervised contrastive loss of the hit embedding (see the module docstring).

    Args:
        temperature: tau > 0 of s_ij = e_i . e_j / tau.
        output_key: model output holding the (N, D) embedding.
        negatives: "event" (all other hits, tiled), "window" (phi window of ``window`` hits
            each side) or "topk" (positives + ``topk`` hardest negatives, HEPT InfoNCE).
        window: hits each side of the phi window, >= 1.
        noise: "negative" (noise repels every anchor) or "ignore" (left out).
        normalize: L2-normalise the embedding first.
        tile_elems: elements of one pair tile / search block: the loss memory bound, >= 1.
        compile: torch.compile the tile math (None = on CUDA).
        anchors: "all" (hits of every particle) or "signal" (``batch.targets["signal"]``).
        topk: hard negatives per anchor with ``negatives="topk"``, >= 1.
        topk_layout: how the topk pairs are computed, same values: "gather" (k keys per hit,
            O(N (P + k))), "masked" (event tiles masked by the table, for small events) or
            "auto" (the cheaper of the two for the batch).
        kernel: how ``negatives="event"`` is computed: "tiled" (torch tiles, any device) or
            "triton" (fused kernels, CUDA; tile_elems and compile do not apply).
    """

    name = "contrastive"
    negative_modes = ("event", "window", "topk")
    anchor_modes = ("all", "signal")
    kernels = ("tiled", "triton")

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
        anchors: str = "all",
        topk: int = 256,
        topk_layout: str = "auto",
        kernel: str = "tiled",
    ):
        if kernel not in self.kernels:
            raise ValueError(f"loss 'contrastive': kernel={kernel!r} must be one of {self.kernels}")
        if kernel == "triton" and negatives != "event":
            raise ValueError(
                f"loss 'contrastive': kernel='triton' computes negatives='event' only, got "
                f"negatives={negatives!r}; use kernel: tiled"
            )
        if kernel == "triton" and importlib.util.find_spec("triton") is None:
            raise RuntimeError("loss 'contrastive': kernel='triton' needs the triton package")
        self.kernel = kernel
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(
                f"loss 'contrastive': temperature must be a number, got {temperature!r}"
            )
        if not temperature > 0:
            raise ValueError(f"loss 'contrastive': temperature must be > 0, got {temperature!r}")
        pairs = HardInfoNCEPairs(temperature) if negatives == "topk" else SupConPairs(temperature)
        super().__init__(
            pairs,
            output_key,
            negatives,
            window,
            noise,
            tile_elems,
            compile,
            normalize=normalize,
            anchors=anchors,
            topk=topk,
            topk_layout=topk_layout,
        )

    def _event_loss(self, emb: Tensor, labels: Tensor, valid: Tensor, batch) -> Tensor:
        if self.kernel == "tiled":
            return super()._event_loss(emb, labels, valid, batch)
        if emb.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise RuntimeError(
                f"loss 'contrastive': kernel='triton' needs CUDA tensors (got {emb.device}); "
                "use kernel: tiled on CPU"
            )
        return supcon_loss(
            emb,
            labels,
            batch.cu_seqlens,
            self.pairs.tau,
            valid=None if self.noise == "negative" else valid,
            max_seqlen=batch.max_seqlen,
        )
