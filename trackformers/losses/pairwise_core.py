"""Memory-bounded pairwise losses: tiles of hit pairs with a custom autograd (recomputation).

A pairwise loss between the hits of an event depends on the embeddings only through dot
products ``s_ij = e_i . e_j`` and squared norms. Rather than an (N, N) matrix, rows are
processed in chunks of ``c`` anchors against their keys:

* ``EventLayout``     — keys are all hits of the anchor's event (exact, tile (c, n_event)),
* ``NeighbourLayout`` — keys are ``k`` given neighbours per hit (O(N k), e.g. the attention
  window), padded with -1.
* ``MaskedEventLayout`` — the pairs of a neighbour table, computed as event tiles with the
  table as a mask: cheaper than gathering k keys per hit when events are small (n ~ k).

Forward keeps only a few scalar statistics; backward recomputes every tile and accumulates
``dL/de`` directly, so peak memory is O(tile) + O(N D), never O(N^2). A ``PairLoss`` supplies
``tile_stats`` (statistics of a tile), ``finalize`` (loss from the summed statistics) and
``tile_grad`` (gradient of the loss w.r.t. the tile's dot products and squared norms).
"""

from __future__ import annotations

import torch
from torch import Tensor


class EventLayout:
    """All ordered pairs (i, j != i) of hits of the same event, rows in chunks.

    Small consecutive events are packed into one block (pairs across events masked) while the
    block's (hits x hits) stays within ``pack_elems``: fewer, larger tiles for many tiny events.
    """

    def __init__(self, cu_seqlens: Tensor, tile_elems: int, pack_elems: int = 1 << 16):
        self.tile_elems = int(tile_elems)
        bounds = [int(b) for b in cu_seqlens.tolist()]
        limit = min(self.tile_elems, int(pack_elems))
        self.groups: list[tuple[int, int]] = []
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            if e == s:
                continue
            if self.groups and (e - self.groups[-1][0]) ** 2 <= limit:
                self.groups[-1] = (self.groups[-1][0], e)
            else:
                self.groups.append((s, e))
        lengths = cu_seqlens.diff().long()
        self.seq = torch.repeat_interleave(
            torch.arange(lengths.numel(), device=cu_seqlens.device), lengths
        )  # (N,) event of each hit

    def tiles(self):
        """Yield the tiles (s, e, r0, r1): anchors [r0, r1) against the keys [s, e)."""
        for s, e in self.groups:
            n = e - s
            c = max(1, min(n, self.tile_elems // n))
            for r0 in range(s, e, c):
                yield (s, e, r0, min(r0 + c, e))

    def inputs(self, emb: Tensor, labels: Tensor, valid: Tensor, tile) -> tuple:
        """The ``math`` inputs of one tile.

        Args:
            emb: (N, D) embedding.
            labels: (N,) int64 particle ids (0 = noise).
            valid: (N,) bool, hits that take part.
            tile: one tile of ``tiles()``.
        """
        s, e, r0, r1 = tile
        seq = self.seq.to(emb.device)
        return (
            emb[r0:r1],
            emb[s:e],
            labels[r0:r1],
            labels[s:e],
            seq[r0:r1],
            seq[s:e],
            valid[r0:r1],
            valid[s:e],
            r0 - s,
        )

    @staticmethod
    def math(rows, keys, lab_r, lab_k, seq_r, seq_k, val_r, val_k, offset: int):
        """Dot products, squared norms, candidate and positive masks of one tile.

        Args:
            rows: (c, D) embedding of the anchors.
            keys: (n, D) embedding of the keys.
            lab_r: (c,) particle ids of the anchors.
            lab_k: (n,) particle ids of the keys.
            seq_r: (c,) event of each anchor.
            seq_k: (n,) event of each key.
            val_r: (c,) bool, anchors that take part.
            val_k: (n,) bool, keys that take part.
            offset: position of the first anchor among the keys (its self pair is left out).
        """
        dots = rows @ keys.T  # (c, n)
        row_sq = (rows * rows).sum(-1, keepdim=True)  # (c, 1)
        key_sq = (keys * keys).sum(-1)[None, :]  # (1, n)
        col = torch.arange(keys.shape[0], device=rows.device)
        row = torch.arange(rows.shape[0], device=rows.device) + offset
        cand = (seq_r[:, None] == seq_k[None, :]) & (col[None, :] != row[:, None])  # (c, n)
        cand = cand & val_r[:, None] & val_k[None, :]
        pos = cand & (lab_r[:, None] == lab_k[None, :]) & (lab_r[:, None] != 0)  # (c, n)
        return dots, row_sq, key_sq, cand, pos

    def accumulate(self, grad: Tensor, emb: Tensor, tile, g_dot: Tensor, g_sq: Tensor | None):
        """Add one tile's gradient w.r.t. the embedding into ``grad``.

        Args:
            grad: (N, D) gradient, updated in place.
            emb: (N, D) embedding.
            tile: one tile of ``tiles()``.
            g_dot: dL / d dots of the tile.
            g_sq: dL / d squared norms, per pair (the row's and the key's norm each get it);
                None when the loss reads dot products only.
        """
        s, e, r0, r1 = tile
        rows, keys = emb[r0:r1], emb[s:e]
        grad[r0:r1] += g_dot @ keys  # (c, D)
        grad[s:e] += g_dot.T @ rows  # (n, D)
        if g_sq is not None:
            grad[r0:r1] += 2.0 * g_sq.sum(1, keepdim=True) * rows
            grad[s:e] += 2.0 * g_sq.sum(0)[:, None] * keys


class MaskedEventLayout(EventLayout):
    """EventLayout restricted to the pairs (i, nbr[i, m]) of a (N, k) same-event table."""

    def __init__(self, cu_seqlens: Tensor, neighbours: Tensor, tile_elems: int):
        super().__init__(cu_seqlens, tile_elems)
        self.nbr = neighbours

    def inputs(self, emb: Tensor, labels: Tensor, valid: Tensor, tile) -> tuple:
        """The ``math`` inputs of one tile, the (c, n) mask of the table's pairs last.

        Args:
            emb: (N, D) embedding.
            labels: (N,) int64 particle ids (0 = noise).
            valid: (N,) bool, hits that take part.
            tile: one tile of ``tiles()``.
        """
        s, e, r0, r1 = tile
        nbr = self.nbr[r0:r1]  # (c, k) global rows inside [s, e), -1 = none
        n = e - s
        col = torch.where(nbr >= 0, nbr - s, n)  # (c, k); padding goes to a spare column
        allowed = torch.zeros(r1 - r0, n + 1, dtype=torch.bool, device=emb.device)
        allowed.scatter_(1, col, True)
        return (*super().inputs(emb, labels, valid, tile), allowed[:, :n])  # (c, n) mask

    @staticmethod
    def math(rows, keys, lab_r, lab_k, seq_r, seq_k, val_r, val_k, offset: int, allowed):
        """``EventLayout.math`` with the candidate and positive pairs limited to the table's.

        Args:
            rows: (c, D) embedding of the anchors.
            keys: (n, D) embedding of the keys.
            lab_r: (c,) particle ids of the anchors.
            lab_k: (n,) particle ids of the keys.
            seq_r: (c,) event of each anchor.
            seq_k: (n,) event of each key.
            val_r: (c,) bool, anchors that take part.
            val_k: (n,) bool, keys that take part.
            offset: position of the first anchor among the keys.
            allowed: (c, n) bool, the pairs of the neighbour table.
        """
        dots, row_sq, key_sq, cand, pos = EventLayout.math(
            rows, keys, lab_r, lab_k, seq_r, seq_k, val_r, val_k, offset
        )
        return dots, row_sq, key_sq, cand & allowed, pos & allowed


class NeighbourLayout:
    """Pairs (i, nbr[i, m]) for a (N, k) int64 neighbour table (-1 = no neighbour)."""

    def __init__(self, neighbours: Tensor, tile_elems: int, dim: int):
        self.nbr = neighbours
        n, k = neighbours.shape
        self.n, self.c = n, max(1, int(tile_elems) // max(1, k * dim))

    def tiles(self):
        """Yield the tiles (r0, r1): anchors [r0, r1) against their k neighbours."""
        for r0 in range(0, self.n, self.c):
            yield (r0, min(r0 + self.c, self.n))

    def inputs(self, emb: Tensor, labels: Tensor, valid: Tensor, tile) -> tuple:
        """The ``math`` inputs of one tile.

        Args:
            emb: (N, D) embedding.
            labels: (N,) int64 particle ids (0 = noise).
            valid: (N,) bool, hits that take part.
            tile: one tile of ``tiles()``.
        """
        r0, r1 = tile
        nbr = self.nbr[r0:r1]  # (c, k)
        idx = nbr.clamp(min=0)
        return (
            emb[r0:r1],
            emb[idx],
            labels[r0:r1],
            labels[idx],
            nbr >= 0,
            valid[r0:r1],
            valid[idx],
        )

    @staticmethod
    def math(rows, keys, lab_r, lab_k, has, val_r, val_k):
        """Dot products, squared norms, candidate and positive masks of one tile.

        Args:
            rows: (c, D) embedding of the anchors.
            keys: (c, k, D) embedding of each anchor's neighbours.
            lab_r: (c,) particle ids of the anchors.
            lab_k: (c, k) particle ids of the neighbours.
            has: (c, k) bool, table entries that are neighbours (not -1 padding).
            val_r: (c,) bool, anchors that take part.
            val_k: (c, k) bool, neighbours that take part.
        """
        dots = torch.einsum("cd,ckd->ck", rows, keys)  # (c, k)
        row_sq = (rows * rows).sum(-1, keepdim=True)  # (c, 1)
        key_sq = (keys * keys).sum(-1)  # (c, k)
        cand = has & val_r[:, None] & val_k  # (c, k)
        pos = cand & (lab_r[:, None] == lab_k) & (lab_r[:, None] != 0)  # (c, k)
        return dots, row_sq, key_sq, cand, pos

    def accumulate(self, grad: Tensor, emb: Tensor, tile, g_dot: Tensor, g_sq: Tensor | None):
        """Add one tile's gradient w.r.t. the embedding into ``grad``.

        Args:
            grad: (N, D) gradient, updated in place.
            emb: (N, D) embedding.
            tile: one tile of ``tiles()``.
            g_dot: dL / d dots of the tile.
            g_sq: dL / d squared norms, per pair (the row's and the key's norm each get it);
                None when the loss reads dot products only.
        """
        r0, r1 = tile
        idx = self.nbr[r0:r1].clamp(min=0)  # (c, k); padded entries carry zero gradient
        rows, keys = emb[r0:r1], emb[idx]
        grad[r0:r1] += torch.einsum("ck,ckd->cd", g_dot, keys)
        key_grad = g_dot[..., None] * rows[:, None, :]  # (c, k, D)
        if g_sq is not None:
            grad[r0:r1] += 2.0 * g_sq.sum(1, keepdim=True) * rows
            key_grad = key_grad + 2.0 * g_sq[..., None] * keys
        grad.index_add_(0, idx.reshape(-1), key_grad.reshape(-1, emb.shape[1]))


def _tile_stats(pair_loss, math, *inputs):
    return pair_loss.tile_stats(*math(*inputs))


def _tile_grad(pair_loss, math, d_stats, *inputs):
    return pair_loss.tile_grad(*math(*inputs), d_stats)


_COMPILED: dict[str, object] = {}


def tile_functions(compiled: bool):
    """(stats, grad) tile functions; compiled ones fuse the mask and softmax passes.

    Args:
        compiled: the torch.compile'd pair (compiled once per process, dynamic shapes).
    """
    if not compiled:
        return _tile_stats, _tile_grad
    if not _COMPILED:
        _COMPILED["stats"] = torch.compile(_tile_stats, dynamic=True)
        _COMPILED["grad"] = torch.compile(_tile_grad, dynamic=True)
    return _COMPILED["stats"], _COMPILED["grad"]


class _TiledPairLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, emb, labels, valid, pair_loss, layout, compiled):
        stats_fn, _ = tile_functions(compiled)
        with torch.autocast(emb.device.type, enabled=False):
            stats = None
            for tile in layout.tiles():
                st = stats_fn(pair_loss, layout.math, *layout.inputs(emb, labels, valid, tile))
                stats = st if stats is None else stats + st
            if stats is None:
                stats = pair_loss.empty_stats(emb)
        ctx.save_for_backward(emb, labels, valid, stats)
        ctx.pair_loss, ctx.layout, ctx.compiled = pair_loss, layout, compiled
        return pair_loss.finalize(stats)

    @staticmethod
    def backward(ctx, grad_out):
        emb, labels, valid, stats = ctx.saved_tensors
        pair_loss, layout = ctx.pair_loss, ctx.layout
        _, grad_fn = tile_functions(ctx.compiled)
        with torch.enable_grad():
            st = stats.detach().requires_grad_(True)
            (d_stats,) = torch.autograd.grad(pair_loss.finalize(st), st)
        d_stats = d_stats * grad_out
        grad = torch.zeros_like(emb)
        with torch.no_grad(), torch.autocast(emb.device.type, enabled=False):
            for tile in layout.tiles():
                inputs = layout.inputs(emb, labels, valid, tile)
                g_dot, g_sq = grad_fn(pair_loss, layout.math, d_stats, *inputs)
                layout.accumulate(grad, emb, tile, g_dot, g_sq)
        return grad, None, None, None, None, None


def tiled_pair_loss(
    emb: Tensor,
    labels: Tensor,
    valid: Tensor,
    pair_loss,
    cu_seqlens: Tensor | None = None,
    neighbours: Tensor | None = None,
    tile_elems: int = 1 << 24,
    compile: bool | None = None,
) -> Tensor:
    """Loss over all same-event pairs (``cu_seqlens``) or over a neighbour table.

    ``neighbours`` alone gathers each hit's k keys (O(N k)); with ``cu_seqlens`` too, the
    table (same-event rows only) masks event tiles instead (O(sum n_event^2), for small events).

    Args:
        emb: (N, D) embedding (half precision is computed in float32).
        labels: (N,) int64 particle ids (0 = noise).
        valid: (N,) bool, hits that take part at all (e.g. noise excluded).
        pair_loss: the PairLoss (statistics, finalize, gradient of a tile).
        cu_seqlens: (B + 1,) event offsets: all same-event pairs.
        neighbours: (N, k) int64 neighbour table, -1 = none.
        tile_elems: elements of one tile: the memory bound.
        compile: torch.compile the tile math (None = on CUDA only).
    """
    if cu_seqlens is None and neighbours is None:
        raise ValueError("give cu_seqlens (all pairs), neighbours (N, k) or both (masked)")
    if emb.dtype in (torch.float16, torch.bfloat16):
        emb = emb.float()  # the loss is computed in float32 (float64 stays float64)
    emb = emb.contiguous()
    if neighbours is not None and cu_seqlens is not None:
        layout = MaskedEventLayout(cu_seqlens, neighbours.long(), tile_elems)
    elif neighbours is not None:
        layout = NeighbourLayout(neighbours.long(), tile_elems, emb.shape[1])
    else:
        layout = EventLayout(cu_seqlens, tile_elems)
    compiled = emb.is_cuda if compile is None else bool(compile)
    return _TiledPairLoss.apply(emb, labels.long(), valid.bool(), pair_loss, layout, compiled)
