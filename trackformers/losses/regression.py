"""Per-hit regression of the parameters of the hit's particle (TrackFormers "regressor").

Targets come from the data layer: ``batch.targets["params"]`` (total_hits, P) with columns in
the order of the data config's ``targets`` (e.g. eta, sin_phi, cos_phi, q_over_pt, d0, z0:
phi enters as sin/cos so that -pi and pi agree, charge through the sign of q/pT), and
``batch.targets["valid"]`` (total_hits,) False for noise hits, hits without truth and
particles below the target pT cut; those hits are excluded from the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import check_noise_mode, get_output, get_target, zero_loss


def valid_hits(batch, n: int, device) -> Tensor:
    """(N,) bool hits that carry targets: targets["valid"], else non-noise, else all.

    Args:
        batch: the packed batch.
        n: N, the number of hits (for the all-valid case).
        device: the device of the all-valid mask.
    """
    if "valid" in batch.targets:
        return batch.targets["valid"].bool()
    if batch.particle_id is not None:
        return batch.particle_id != 0
    return torch.ones(n, dtype=torch.bool, device=device)


class ParameterRegressionLoss(nn.Module):
    """MSE or Huber loss, mean over valid hits, weighted sum over parameter columns.

    Args:
        columns: names of the target columns (the data config's ``targets``); None: the
            columns are unnamed (no weights or scales by name).
        weights: {column: weight} of the per-column losses (default 1).
        scales: {column: scale}: targets and predictions are divided by it, so parameters
            of different size weigh alike (default 1).
        output_key: model output of (N, P) predictions.
        target_key: ``batch.targets`` entry of (N, P) targets.
        kind: "mse" or "huber".
        huber_delta: the Huber loss's delta.
        noise: "ignore" (noise hits carry no targets).
    """

    name = "regression"

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        scales: Mapping[str, float] | None = None,
        output_key: str = "params",
        target_key: str = "params",
        kind: str = "mse",
        huber_delta: float = 1.0,
        noise: str = "ignore",
    ):
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValueError(f"regression kind={kind!r} must be 'mse' or 'huber'")
        self.columns = list(columns) if columns is not None else None
        for what, d in (("weights", weights), ("scales", scales)):
            unknown = set(d or {}) - set(self.columns or [])
            if unknown:
                raise ValueError(
                    f"regression {what} name columns {sorted(unknown)}, "
                    f"not in columns {self.columns}"
                )
        self.weights, self.scales = dict(weights or {}), dict(scales or {})
        self.kind, self.huber_delta = kind, huber_delta
        self.output_key, self.target_key = output_key, target_key
        self.noise = check_noise_mode(noise, ("ignore",), self.name)

    @property
    def n_outputs(self) -> int | None:
        """Output columns the head must give (None: not known from the config)."""
        return None if self.columns is None else len(self.columns)

    def _column_vectors(self, p: int, device) -> tuple[Tensor, Tensor]:
        names = self.columns or [str(j) for j in range(p)]
        w = torch.tensor([self.weights.get(c, 1.0) for c in names], device=device)
        s = torch.tensor([self.scales.get(c, 1.0) for c in names], device=device)
        return w, s  # (P,), (P,)

    def per_column(self, outputs: dict[str, Tensor], batch) -> Tensor:
        """(P,) loss of each column, mean over valid hits.

        Args:
            outputs: the model's output dict.
            batch: the packed batch.
        """
        pred = get_output(outputs, self.output_key, self.name).float()  # (N, P)
        target = get_target(batch, self.target_key, self.name).float()  # (N, P)
        if target.ndim == 1:
            target = target[:, None]
        if pred.shape != target.shape:
            raise ValueError(
                f"regression: output {self.output_key!r} has shape {tuple(pred.shape)} but "
                f"targets[{self.target_key!r}] has {tuple(target.shape)}; set the head's "
                "num_params to the number of data targets"
            )
        if self.columns is not None and len(self.columns) != pred.shape[1]:
            raise ValueError(
                f"regression columns {self.columns} do not match the {pred.shape[1]} target columns"
            )
        keep = valid_hits(batch, pred.shape[0], pred.device)  # (N,)
        keep = keep & torch.isfinite(target).all(1)
        if not bool(keep.any()):
            return pred.new_zeros(pred.shape[1]) + zero_loss(pred)
        _, scale = self._column_vectors(pred.shape[1], pred.device)
        p, t = pred[keep] / scale, target[keep] / scale  # (n_keep, P)
        if self.kind == "mse":
            err = F.mse_loss(p, t, reduction="none")
        else:
            err = F.huber_loss(p, t, reduction="none", delta=self.huber_delta)
        return err.mean(0)  # (P,)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        cols = self.per_column(outputs, batch)  # (P,)
        w, _ = self._column_vectors(cols.shape[0], cols.device)
        return (w * cols).sum()
