"""Multi-frequency (sinusoidal) encoding of selected hit features, appended to the inputs.

A linear layer + GELU sees a hit's scaled coordinates as smooth functions: two tracks 0.01
apart in eta or phi (a jet core) get almost the same input embedding, and attention cannot
single out the hits of one track. Sines and cosines of each feature at frequencies from
``alpha / 100`` to ``alpha`` (log spaced, as the positional encodings of hepattn's trackers)
let the first layer resolve differences of ~1 / alpha in the feature's scaled units.

    enc(x)_k = sin(omega_k x), cos(omega_k x),   omega_k = alpha * 100^(-k / (n - 1))

for n = ``dim_per_feature`` / 2 frequencies. Encode sin_phi and cos_phi (not phi) so that the
encoding is continuous across phi = +-pi.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import torch
from torch import Tensor, nn


class FeatureEncoding(nn.Module):
    """(N, F) features -> (N, len(fields) * dim_per_feature) sinusoids of the chosen columns.

    Args:
        feature_names: the names of the F input columns (``data.features.features``).
        fields: the columns to encode (a subset of ``feature_names``).
        dim_per_feature: even number of outputs per field (half sines, half cosines).
        alpha: highest angular frequency, in units of the scaled feature (> 0).
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        fields: Sequence[str],
        dim_per_feature: int = 16,
        alpha: float = 1000.0,
    ):
        super().__init__()
        names = list(feature_names)
        fields = list(fields)
        if not fields:
            raise ValueError("model.encoder.posenc.fields is empty: name the features to encode")
        missing = [f for f in fields if f not in names]
        if missing:
            raise ValueError(
                f"model.encoder.posenc.fields {missing} are not input features {names}"
            )
        if (
            isinstance(dim_per_feature, bool)
            or not isinstance(dim_per_feature, Integral)
            or dim_per_feature < 2
            or dim_per_feature % 2
        ):
            raise ValueError(
                f"model.encoder.posenc.dim_per_feature = {dim_per_feature!r}: must be an even "
                "integer >= 2"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not alpha > 0:
            raise ValueError(f"model.encoder.posenc.alpha = {alpha!r}: must be a number > 0")
        n = dim_per_feature // 2
        steps = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
        self.register_buffer(
            "columns", torch.tensor([names.index(f) for f in fields]), persistent=False
        )
        self.register_buffer("omega", float(alpha) * 100.0 ** (-steps), persistent=False)
        self.out_features = len(fields) * dim_per_feature

    def forward(self, x: Tensor) -> Tensor:
        phase = x[:, self.columns, None].float() * self.omega  # (N, fields, n)
        enc = torch.cat([phase.sin(), phase.cos()], dim=-1)  # (N, fields, 2n)
        return enc.flatten(1).to(x.dtype)  # (N, fields * 2n)
