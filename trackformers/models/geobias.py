"""Learned locality of attention in (eta, phi): a per-head bias -w_h * dR^2 on the scores.

Hits of one track lie close in (eta, phi) seen from the origin; in a jet core several tracks
lie within dR ~ 0.01 of each other. Plain dot-product attention over the whole event finds a
hit's partners only as sharply as its learned queries resolve positions. This bias, one
learned width per head and layer (initialised log-spaced between ``r_min`` and ``r_max``),
lets each head restrict itself to a neighbourhood of a chosen size, as HEPT's RBF kernel over
coordinates does, while keeping exact attention over the event.

The distance is ``dR^2 = d_eta^2 + |u_i - u_j|^2`` with ``u = (cos phi, sin phi)``: the chord
form of ``d_phi^2`` (equal for small angles, periodic by construction). It expands into dot
products, so the bias is carried by four extra query/key columns instead of an (H, n, n)
tensor::

    -w dR^2 = w (2 eta_i eta_j + 2 u_i . u_j - eta_j^2) - w (eta_i^2 + 2)

and the last term, constant along a query's row, drops out of the softmax. Any attention
kernel then computes the biased attention in O(n) memory (the CPU and GPU flash kernels
included). The extra columns hold products of size ``w * eta^2``: the attention runs in
float32, where the cancellation costs ~1e-7 relative (bfloat16 would lose the bias).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXTRA = 4  # query/key columns that carry the bias


def eta_phi(coords: Tensor) -> Tensor:
    """(N, 3) hit x, y, z [mm] -> (N, 2) pseudorapidity and azimuth seen from the origin.

    Args:
        coords: (N, 3) hit positions x, y, z [mm].
    """
    x, y, z = coords.float().unbind(-1)
    r = torch.hypot(x, y).clamp_min(1e-6)
    return torch.stack([torch.asinh(z / r), torch.atan2(y, x)], dim=-1)


def geo_columns(coords: Tensor) -> tuple[Tensor, Tensor]:
    """Per-hit query and key columns whose dot product is ``-dR^2`` up to a per-query constant.

    Args:
        coords: (N, 3) hit positions x, y, z [mm].

    Returns:
        (N, 4) query columns ``(2 eta, 2 cos phi, 2 sin phi, -1)`` and (N, 4) key columns
        ``(eta, cos phi, sin phi, eta^2)``, float32.
    """
    eta, phi = eta_phi(coords).unbind(-1)  # (N,) each
    c, s = torch.cos(phi), torch.sin(phi)
    q = torch.stack([2 * eta, 2 * c, 2 * s, -torch.ones_like(eta)], dim=-1)  # (N, 4)
    k = torch.stack([eta, c, s, eta.square()], dim=-1)  # (N, 4)
    return q, k


class GeoBias(nn.Module):
    """Per-head bias ``-w_h * dR^2`` with learned widths, ``w_h = 1 / r_h^2``, applied by
    widening the heads' queries and keys (see the module docstring).

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

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, cols: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Widen (N, H, D) queries, keys and values to (N, H, D + 4), float32, so that
        attention at the default scale ``1 / sqrt(D + 4)`` gives the scores
        ``q . k / sqrt(D) - w_h dR^2`` (values padded with zeros: drop the last 4 outputs).

        Args:
            q: (N, H, D) queries.
            k: (N, H, D) keys.
            v: (N, H, D) values.
            cols: (query, key) columns of the hits, (N, 4) each (``geo_columns``).
        """
        n, h, d = q.shape
        qc, kc = cols
        w = self.log_w.float().exp()  # (H,)
        qe = qc[:, None, :] * (w * math.sqrt(d + EXTRA))[None, :, None]  # (N, H, 4)
        q = torch.cat([q.float() * math.sqrt((d + EXTRA) / d), qe], dim=-1)  # (N, H, D + 4)
        k = torch.cat([k.float(), kc[:, None, :].expand(n, h, EXTRA)], dim=-1)
        return q, k, F.pad(v.float(), (0, EXTRA))
