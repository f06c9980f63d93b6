"""The nn.Module shared by the pairwise embedding losses (contrastive, hinge): reads the
embedding and the particle labels of a batch and hands them to the tiled pair engine,
over whole events (``negatives="event"``) or each hit's phi-window (``negatives="window"``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import check_noise_mode, get_output, particle_labels, zero_loss
from trackformers.losses.neighbours import window_neighbours
from trackformers.losses.pairwise_core import tiled_pair_loss


class PairEmbeddingLoss(nn.Module):
    name: str

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
    ):
        super().__init__()
        if negatives not in ("event", "window"):
            raise ValueError(f"{self.name} negatives={negatives!r} must be 'event' or 'window'")
        self.pairs = pairs  # per-tile statistics and gradients (pairwise_core's PairLoss)
        self.compile = compile  # torch.compile the tile math; None = on CUDA
        self.output_key, self.negatives, self.window = output_key, negatives, int(window)
        self.noise = check_noise_mode(noise, ("negative", "ignore"), self.name)
        self.normalize, self.tile_elems = normalize, int(tile_elems)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        emb = get_output(outputs, self.output_key, self.name).float()  # (N, D)
        if self.normalize:
            emb = F.normalize(emb, dim=-1)
        labels = particle_labels(batch, self.name)  # (N,)
        valid = labels != 0 if self.noise == "ignore" else torch.ones_like(labels, dtype=bool)
        if emb.shape[0] < 2:
            return zero_loss(emb)
        if self.negatives == "window":
            nbr = window_neighbours(batch.cu_seqlens, self.window, coords=batch.coords)  # (N, 2W)
            pairs_of = dict(neighbours=nbr)
        else:
            pairs_of = dict(cu_seqlens=batch.cu_seqlens)
        return tiled_pair_loss(
            emb, labels, valid, self.pairs, tile_elems=self.tile_elems, compile=self.compile,
            **pairs_of,
        )  # fmt: skip
