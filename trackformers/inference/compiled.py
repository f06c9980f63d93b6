"""Inference forward of a TrackFormer with each encoder block's dense parts compiled.

Same weights and math as ``Encoder.forward`` in eval mode (dropout off), regrouped around the
attention call so that torch.compile can fuse what eager mode runs as separate kernels:

    pre(x)     = split_heads(qkv(LayerNorm1(x)))          -> q, k, v contiguous (N, H, Dh)
    attention  = the encoder's backend on the shared plan  (not compiled)
    post(x, o) = x' + FFN(LayerNorm2(x')),  x' = x + out(o)

``pre`` and ``post`` are pure functions of tensors (weights passed in), so ONE compile serves
every block of the same shape. Blocks with another norm or feed-forward kind (rmsnorm,
swiglu) and models without the standard encoder run their own modules (``supported``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trackformers.attention.plans import presorted


def _pre(x: Tensor, ln_w, ln_b, w, b, eps: float, heads: int):
    n, d = x.shape
    h = F.layer_norm(x, (d,), ln_w, ln_b, eps)  # (N, d)
    q, k, v = F.linear(h, w, b).view(n, 3, heads, d // heads).unbind(1)  # (N, H, Dh) each
    return q.contiguous(), k.contiguous(), v.contiguous()


def _post(
    x: Tensor, o: Tensor, w_o, b_o, ln_w, ln_b, eps: float, w_in, b_in, w_out, b_out, chunk: int = 0
):
    x = x + F.linear(o, w_o, b_o)  # (N, d)
    h = F.layer_norm(x, (x.shape[1],), ln_w, ln_b, eps)
    if not chunk or chunk >= x.shape[0]:
        return x + F.linear(F.gelu(F.linear(h, w_in, b_in)), w_out, b_out)  # (N, d)
    # rows in chunks: the (rows, ffn) hidden activations exist for one chunk at a time
    parts = [
        xc + F.linear(F.gelu(F.linear(hc, w_in, b_in)), w_out, b_out)
        for xc, hc in zip(x.split(chunk), h.split(chunk), strict=True)
    ]
    return torch.cat(parts)  # (N, d)


def supported(model) -> bool:
    """True when every encoder block is pre-norm LayerNorm + GELU feed-forward and attention
    goes through the backend (no learned (eta, phi) bias, ``Encoder.geo_bias``).

    Args:
        model: a TrackFormer.
    """
    enc = getattr(model, "encoder", None)
    blocks = getattr(enc, "blocks", None)
    if not blocks or not hasattr(enc, "embed") or getattr(enc, "geo_bias", False):
        return False
    return all(
        isinstance(b.norm1, torch.nn.LayerNorm)
        and isinstance(b.norm2, torch.nn.LayerNorm)
        and getattr(b.ffn, "kind", None) == "gelu"
        for b in blocks
    )


class CompiledForward:
    """``model(batch, plan)`` in eval mode with compiled block parts (``compile=False``: the
    same regrouped functions eagerly, for tests). ``ffn_chunk`` > 0: the feed-forward runs
    over that many rows at a time (same math; lower peak memory: its hidden activations are
    ``ffn_mult`` times the width of the residual stream)."""

    def __init__(self, model, compile: bool = True, ffn_chunk: int = 0):
        if not supported(model):
            raise ValueError(
                "CompiledForward needs LayerNorm + GELU encoder blocks without geo_bias"
            )
        if ffn_chunk < 0:
            raise ValueError(f"ffn_chunk must be >= 0 (0: all rows at once), got {ffn_chunk}")
        self.model, self.ffn_chunk = model, int(ffn_chunk)
        self.pre = torch.compile(_pre) if compile else _pre
        self.post = torch.compile(_post) if compile else _post

    def __call__(self, batch, plan) -> dict[str, Tensor]:
        enc = self.model.encoder
        h = enc.embed(batch.x)  # (N, d)
        layer_plan = plan
        if plan.perm is not None:
            h = h[plan.perm]  # (N, d) plan order for all layers
            layer_plan = presorted(plan)
        for blk in enc.blocks:
            att = blk.attn
            q, k, v = self.pre(
                h,
                blk.norm1.weight,
                blk.norm1.bias,
                att.qkv.weight,
                att.qkv.bias,
                blk.norm1.eps,
                att.n_heads,
            )
            o = att.backend(q, k, v, layer_plan)  # (N, H, Dh)
            ffn = blk.ffn
            h = self.post(
                h,
                o.reshape(h.shape[0], -1),
                att.out.weight,
                att.out.bias,
                blk.norm2.weight,
                blk.norm2.bias,
                blk.norm2.eps,
                ffn.w_in.weight,
                ffn.w_in.bias,
                ffn.w_out.weight,
                ffn.w_out.bias,
                self.ffn_chunk,
            )
        h = enc.final_norm(h)
        if plan.inv_perm is not None:
            h = h[plan.inv_perm]  # (N, d) input order
        out = {"hidden": h, **self.model.head(h)}
        if getattr(self.model, "hit_filter", None) is not None:
            out.update(self.model.hit_filter(h))
        return out
