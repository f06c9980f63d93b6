"""The nn.Module shared by the pairwise embedding losses (contrastive, hinge): reads the
embedding and the particle labels of a batch and hands them to the tiled pair engine,
over whole events (``negatives="event"``), each hit's phi-window (``negatives="window"``) or
each anchor's positives and top-k hardest negatives of its event (``negatives="topk"``).

``anchors="signal"`` restricts anchors and positives to hits with ``batch.targets["signal"]``
(hits of reconstructable particles); the other hits stay candidates, i.e. negatives only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import (
    check_noise_mode,
    get_output,
    get_target,
    particle_labels,
    zero_loss,
)
from trackformers.losses.mining import hard_negatives, positive_table, signal_labels
from trackformers.losses.neighbours import window_neighbours
from trackformers.losses.pairwise_core import tiled_pair_loss

SIGNAL_TARGET = "signal"
TOPK_LAYOUTS = ("auto", "gather", "masked")
GATHER_COST = 4  # a gathered pair costs about this many dense-tile pairs (CPU and GPU)


def check_int(value, name: str, loss_name: str, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, else a ValueError naming the loss option and value.

    Args:
        value: the configured value.
        name: the option, for the error message.
        loss_name: the loss, for the error message.
        minimum: the smallest value allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"loss {loss_name!r}: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


class PairEmbeddingLoss(nn.Module):
    """Base of the pairwise embedding losses: the pairs of a batch, handed to the tile engine.

    Subclasses set ``name``, the modes they accept and the PairLoss (``pairs``) they compute.

    Args:
        pairs: the PairLoss of :mod:`trackformers.losses.pairwise_core` (statistics, finalize
            and gradient of one tile).
        output_key: model output holding the (N, D) embedding.
        negatives: one of ``negative_modes``: "event", "window" or "topk".
        window: hits each side of the phi window, >= 1.
        noise: "negative" (noise hits stay candidates) or "ignore" (left out).
        tile_elems: elements of one pair tile / search block: the memory bound, >= 1.
        compile: torch.compile the tile math (None = on CUDA).
        normalize: L2-normalise the embedding first.
        anchors: one of ``anchor_modes``: "all" or "signal".
        topk: hard negatives per anchor with ``negatives="topk"``, >= 1.
        topk_layout: "gather" (k keys per hit), "masked" (event tiles masked by the table) or
            "auto" (the cheaper of the two for the batch).
    """

    name: str
    negative_modes: tuple[str, ...] = ("event", "window")
    anchor_modes: tuple[str, ...] = ("all",)

    def __init__(
        self,
        pairs,
        output_key: str,
        negatives: str,
        window: int,
        noise: str,
        tile_elems: int,
        compile: bool | None,
        normalize: bool = False,
        anchors: str = "all",
        topk: int = 256,
        topk_layout: str = "auto",
    ):
        super().__init__()
        if negatives not in self.negative_modes:
            raise ValueError(
                f"{self.name} negatives={negatives!r} must be one of {self.negative_modes}"
            )
        if anchors not in self.anchor_modes:
            raise ValueError(f"{self.name} anchors={anchors!r} must be one of {self.anchor_modes}")
        self.pairs = pairs  # per-tile statistics and gradients (pairwise_core's PairLoss)
        self.compile = compile  # torch.compile the tile math; None = on CUDA
        self.output_key, self.negatives = output_key, negatives
        self.window = check_int(window, "window", self.name)
        self.topk = check_int(topk, "topk", self.name)
        self.noise = check_noise_mode(noise, ("negative", "ignore"), self.name)
        self.normalize, self.tile_elems = normalize, check_int(tile_elems, "tile_elems", self.name)
        self.anchors = anchors
        if topk_layout not in TOPK_LAYOUTS:
            raise ValueError(
                f"{self.name} topk_layout={topk_layout!r} must be one of {TOPK_LAYOUTS}"
            )
        self.topk_layout = topk_layout  # how the topk pairs are computed (same values)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        emb = get_output(outputs, self.output_key, self.name).float()  # (N, D)
        if self.normalize:
            emb = F.normalize(emb, dim=-1)
        labels = particle_labels(batch, self.name)  # (N,)
        valid = labels != 0 if self.noise == "ignore" else torch.ones_like(labels, dtype=bool)
        if self.anchors == "signal":
            signal = get_target(batch, SIGNAL_TARGET, self.name).to(labels.device)  # (N,) bool
            labels = signal_labels(labels, signal)  # non-signal hits: a label of their own
        if emb.shape[0] < 2:
            return zero_loss(emb)
        if self.negatives == "window":
            nbr = window_neighbours(batch.cu_seqlens, self.window, coords=batch.coords)  # (N, 2W)
            pairs_of = dict(neighbours=nbr)
        elif self.negatives == "topk":
            cu = batch.cu_seqlens
            pos = positive_table(labels, valid, cu)  # (N, P)
            anchors = (pos >= 0).any(1)  # (N,)
            if not bool(anchors.any()):
                return zero_loss(emb)
            neg = hard_negatives(
                emb.detach(), labels, valid, anchors, cu, self.topk, self.tile_elems
            )  # (N, K), no grad
            table = torch.cat([pos, neg], dim=1)  # (N, P + K)
            pairs_of = dict(neighbours=table)
            if self._masked(cu, table):
                pairs_of["cu_seqlens"] = cu  # event tiles masked by the table
        else:
            return self._event_loss(emb, labels, valid, batch)
        return tiled_pair_loss(
            emb,
            labels,
            valid,
            self.pairs,
            tile_elems=self.tile_elems,
            compile=self.compile,
            **pairs_of,
        )

    def _event_loss(self, emb: Tensor, labels: Tensor, valid: Tensor, batch) -> Tensor:
        """All same-event pairs (``negatives="event"``), tiled; subclasses may fuse it."""
        return tiled_pair_loss(
            emb,
            labels,
            valid,
            self.pairs,
            cu_seqlens=batch.cu_seqlens,
            tile_elems=self.tile_elems,
            compile=self.compile,
        )

    def _masked(self, cu_seqlens: Tensor, table: Tensor) -> bool:
        """Masked event tiles (O(sum n^2)) when cheaper than gathering (O(N (P + K)))."""
        if self.topk_layout != "auto":
            return self.topk_layout == "masked"
        dense = int((cu_seqlens.diff().long() ** 2).sum())
        return dense <= GATHER_COST * table.numel()
