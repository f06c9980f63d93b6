"""Learned locality of attention in (eta, phi): a per-head bias -w_h * dR^2 on the scores.

Hits of one track lie close in (eta, phi) seen from the origin; in a jet core several tracks
lie within dR ~ 0.01 of each other. Plain dot-product attention over the whole event finds a
hit's partners only as sharply as its learned queries resolve positions. This bias, one
learned width per head and layer (initialised log-spaced between ``r_min`` and ``r_max``),
lets each head restrict itself to a neighbourhood of a chosen size, as HEPT's RBF kernel over
coordinates does, while keeping exact attention over the event. Dense per event: O(n^2)
memory per event, so it suits events of up to a few thousand hits (mu = 0 / 20 pixel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def eta_phi(coords: Tensor) -> Tensor:
    """(N, 3) hit x, y, z [mm] -> (N, 2) pseudorapidity and azimuth seen from the origin.

    Args:
        coords: (N, 3) hit positions x, y, z [mm].
    """
    x, y, z = coords.float().unbind(-1)
    r = torch.hypot(x, y).clamp_min(1e-6)
    return torch.stack([torch.asinh(z / r), torch.atan2(y, x)], dim=-1)


def delta_r2(etaphi: Tensor) -> Tensor:
    """(n, 2) eta, phi of one event -> (n, n) squared distance, phi wrapped to [-pi, pi).

    Args:
        etaphi: (n, 2) eta and phi of the hits of one event (``eta_phi``).
    """
    d_eta = etaphi[:, None, 0] - etaphi[None, :, 0]
    d_phi = torch.remainder(etaphi[:, None, 1] - etaphi[None, :, 1] + math.pi, 2 * math.pi)
    return d_eta.square() + (d_phi - math.pi).square()  # (n, n)


class GeoBias(nn.Module):
    """Per-head bias ``-w_h * dR^2`` with learned widths, ``w_h = 1 / r_h^2``.

    Args:
        n_heads: attention heads of the layer.
        r_min, r_max: initial neighbourhood radii in dR of the sharpest and widest head
            (log-spaced between them); 0 < r_min <= r_max.
    """

    def __init__(self, n_heads: int, r_min: float = 0.02, r_max: float = 1.0):
        super().__init__()
        if not (0 < r_min <= r_max < math.inf):
            raise ValueError(
                f"model.encoder.geo_bias: need 0 < r_min <= r_max, got r_min={r_min!r}, "
                f"r_max={r_max!r}"
            )
        radii = torch.logspace(math.log10(r_min), math.log10(r_max), n_heads)
        self.log_w = nn.Parameter(-2.0 * radii.log())  # (H,) log(1 / r^2)

    def forward(self, d2: Tensor) -> Tensor:
        """(n, n) squared distances -> (H, n, n) additive attention bias."""
        return -self.log_w.exp()[:, None, None] * d2[None].to(self.log_w.dtype)


def biased_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """q, k, v (n, H, D) of one event, bias (H, n, n) -> (n, H, D) exact attention.

    Args:
        q: (n, H, D) queries of one event.
        k: (n, H, D) keys.
        v: (n, H, D) values.
        bias: (H, n, n) additive attention bias (``GeoBias``).
    """
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],
        k.transpose(0, 1)[None],
        v.transpose(0, 1)[None],
        attn_mask=bias[None].to(q.dtype),
    )  # (1, H, n, D)
    return out[0].transpose(0, 1)
