"""Encoder-only Transformer over packed hits with a pluggable attention backend.

Permutation-equivariant (no positional encoding). The attention plan is built once per
batch; if the plan reorders hits (cluster/window plans) the hidden states are permuted into
the plan's order once, every layer runs on the sorted rows, and the output is returned in
the batch's input order.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.attention import build as build_attention
from trackformers.attention.base import AttentionBackend, AttentionPlan
from trackformers.attention.plans import presorted
from trackformers.models.geobias import GeoBias, geo_columns
from trackformers.models.posenc import FeatureEncoding


def make_norm(kind: str, d: int) -> nn.Module:
    """The normalisation layer of a block; a ValueError names the choices otherwise.

    Args:
        kind: "layernorm" or "rmsnorm".
        d: normalised width (d_model).
    """
    if kind == "layernorm":
        return nn.LayerNorm(d)
    if kind == "rmsnorm":
        return nn.RMSNorm(d)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


class FeedForward(nn.Module):
    """GELU MLP or SwiGLU (hidden = ffn_mult * d_model; SwiGLU uses 2/3 of it per branch)."""

    def __init__(self, d_model: int, ffn_mult: float, kind: str, dropout: float):
        super().__init__()
        if kind not in ("gelu", "swiglu"):
            raise ValueError(f"ffn must be 'gelu' or 'swiglu', got {kind!r}")
        self.kind = kind
        hidden = int(ffn_mult * d_model)
        if kind == "swiglu":
            hidden = int(2 * hidden / 3)
            self.w_in = nn.Linear(d_model, 2 * hidden)
        else:
            self.w_in = nn.Linear(d_model, hidden)
        self.w_out = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.w_in(x)  # (N, hidden) or (N, 2 * hidden)
        if self.kind == "swiglu":
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = F.gelu(h)
        return self.w_out(self.drop(h))  # (N, d_model)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``backend``, with a learned (eta, phi) locality bias
    when ``geo_bias`` is given (``GeoBias`` arguments: the heads widened by its columns, the
    attention in float32)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        backend: AttentionBackend,
        dropout: float,
        geo_bias: dict | None = None,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.backend = backend
        self.drop = nn.Dropout(dropout)
        self.geo = GeoBias(n_heads, **geo_bias) if geo_bias else None

    def forward(self, x: Tensor, plan: AttentionPlan, geo_cols: tuple | None = None) -> Tensor:
        n, d = x.shape
        dh = d // self.n_heads
        qkv = self.qkv(x).view(n, 3, self.n_heads, dh)  # (N, 3, H, Dh)
        q, k, v = qkv.unbind(1)  # (N, H, Dh) each
        if self.geo is None:
            o = self.backend(q, k, v, plan)  # (N, H, Dh)
        else:  # geo_cols: (N, 4) query and key columns of the hits (geo_columns)
            q, k, v = self.geo(q, k, v, geo_cols)  # (N, H, Dh + 4) float32
            with torch.autocast(x.device.type, enabled=False):
                o = self.backend(q, k, v, plan)[..., :dh]  # (N, H, Dh)
        return self.drop(self.out(o.reshape(n, d)))  # (N, d_model)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + Attn(norm(x)), then x + FFN(norm(x))."""

    def __init__(self, d_model, n_heads, backend, ffn, ffn_mult, norm, dropout, geo_bias=None):
        super().__init__()
        self.norm1 = make_norm(norm, d_model)
        self.attn = SelfAttention(d_model, n_heads, backend, dropout, geo_bias)
        self.norm2 = make_norm(norm, d_model)
        self.ffn = FeedForward(d_model, ffn_mult, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, plan: AttentionPlan, geo_cols: tuple | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), plan, geo_cols)  # (N, d_model)
        return x + self.drop(self.ffn(self.norm2(x)))  # (N, d_model)


class Encoder(nn.Module):
    """Input MLP over hit features -> ``n_layers`` pre-norm blocks -> final norm.

    Args:
        in_features: F, width of ``PackedBatch.x``.
        attention: a backend instance or a registry name (``"dense"``, ``"flex"``, ...).
        attention_kwargs: passed to the registry when ``attention`` is a name.
        posenc: optional sinusoidal encoding of some input columns appended to the inputs
            (``FeatureEncoding`` keyword arguments: fields, dim_per_feature, alpha; null = none).
        feature_names: names of the input columns (``data.features.features``); needed by
            ``posenc``.
        geo_bias: optional learned (eta, phi) locality bias of every attention layer
            (``GeoBias`` keyword arguments r_min, r_max; null = none). Its float32 widened
            heads run through the dense backend.
    """

    def __init__(
        self,
        in_features: int,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 6,
        ffn: str = "gelu",
        ffn_mult: float = 4.0,
        norm: str = "layernorm",
        dropout: float = 0.0,
        attention: AttentionBackend | str = "dense",
        attention_kwargs: dict | None = None,
        posenc: dict | None = None,
        feature_names: list[str] | None = None,
        geo_bias: dict | None = None,
    ):
        super().__init__()
        for key, value in (
            ("in_features", in_features),
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("n_layers", n_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"model.encoder.{key} = {value!r}: must be an integer >= 1")
        if isinstance(attention, str):
            attention = build_attention(attention, **(attention_kwargs or {}))
        if not isinstance(attention, AttentionBackend):
            raise TypeError(f"attention must be an AttentionBackend or a name, got {attention!r}")
        self.in_features = in_features
        self.d_model = d_model
        self.attention = attention
        self.posenc = None
        width = in_features
        if posenc:
            if feature_names is None or len(feature_names) != in_features:
                raise ValueError(
                    f"model.encoder.posenc needs feature_names for the {in_features} input "
                    f"columns, got {feature_names!r}"
                )
            self.posenc = FeatureEncoding(feature_names, **dict(posenc))
            width += self.posenc.out_features
        self.input_mlp = nn.Sequential(
            nn.Linear(width, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        if geo_bias and attention.name != "dense":
            raise ValueError(
                f"model.encoder.geo_bias needs attention=dense (float32 heads of width "
                f"d_model / n_heads + 4), "
                f"got attention {attention.name!r}"
            )
        self.geo_bias = bool(geo_bias)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, n_heads, attention, ffn, ffn_mult, norm, dropout, geo_bias)
            for _ in range(n_layers)
        )
        self.final_norm = make_norm(norm, d_model)

    def forward(self, batch, plan: AttentionPlan | None = None) -> Tensor:
        """batch: PackedBatch -> (total_hits, d_model) in the batch's input order."""
        x = batch.x
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"PackedBatch.x has shape {tuple(x.shape)}; encoder expects "
                f"(total_hits, {self.in_features})"
            )
        if plan is None:
            plan = self.attention.plan(batch)
        h = self.embed(x)  # (N, d_model)
        if plan.perm is not None:
            h = h[plan.perm]  # (N, d_model) in plan order, permuted once for all layers
            layer_plan = presorted(plan)
        else:
            layer_plan = plan
        geo_cols = None  # the bias's query/key columns, built once for all layers
        if self.geo_bias:
            geo_cols = geo_columns(batch.coords)  # (N, 4) each
            if plan.perm is not None:
                geo_cols = tuple(c[plan.perm] for c in geo_cols)
        for block in self.blocks:
            h = block(h, layer_plan, geo_cols)  # (N, d_model)
        h = self.final_norm(h)
        return h if plan.inv_perm is None else h[plan.inv_perm]

    def embed(self, x: Tensor) -> Tensor:
        """Input features -> first hidden state (the encoding appended, then the input MLP).

        Args:
            x: (N, F) hit features.

        Returns:
            (N, d_model) hidden states.
        """
        if self.posenc is not None:
            x = torch.cat([x, self.posenc(x)], dim=1)  # (N, F + encoded)
        return self.input_mlp(x)  # (N, d_model)

    @torch.no_grad()
    def build_plan(self, batch) -> AttentionPlan:
        """The attention plan of ``batch`` (built once per batch, reused by every layer).

        Args:
            batch: the PackedBatch.
        """
        return self.attention.plan(batch)
