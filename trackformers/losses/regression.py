"""Per-hit regression of the parameters of the hit's particle (TrackFormers "regressor").

Each parameter is either ``linear`` (one output column, e.g. theta, eta, charge q, q/pT) or
``angle`` (two output columns predicting sin and cos, e.g. phi, so that -pi and pi agree).
The model output ``outputs[output_key]`` has shape (total_hits, n_outputs) with the columns
in the order of ``params``. Noise hits have no particle and are excluded from the mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import check_noise_mode, get_output, get_target, zero_loss

KINDS = {"linear": 1, "angle": 2}


class ParameterRegressionLoss(nn.Module):
    """MSE or Huber loss over configured track parameters.

    params: {name: {kind: linear|angle, weight: float, scale: float}}; targets are divided
    by ``scale`` (so parameters of different size weigh alike) before comparison.
    """

    name = "regression"

    def __init__(
        self,
        params: Mapping[str, Mapping] | None = None,
        output_key: str = "params",
        kind: str = "mse",
        huber_delta: float = 1.0,
        noise: str = "ignore",
    ):
        super().__init__()
        params = params or {"theta": {}, "phi": {"kind": "angle"}, "q": {}, "qpt": {}}
        self.params = {}
        for pname, spec in params.items():
            spec = dict(spec or {})
            k = spec.get("kind", "linear")
            if k not in KINDS:
                raise ValueError(f"regression param {pname!r}: kind={k!r} not in {list(KINDS)}")
            self.params[pname] = {
                "kind": k,
                "weight": float(spec.get("weight", 1.0)),
                "scale": float(spec.get("scale", 1.0)),
            }
        if kind not in ("mse", "huber"):
            raise ValueError(f"regression kind={kind!r} must be 'mse' or 'huber'")
        self.kind, self.huber_delta = kind, huber_delta
        self.output_key = output_key
        self.noise = check_noise_mode(noise, ("ignore",), self.name)

    @property
    def n_outputs(self) -> int:
        return sum(KINDS[p["kind"]] for p in self.params.values())

    def _elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kind == "mse":
            return F.mse_loss(pred, target, reduction="none")
        return F.huber_loss(pred, target, reduction="none", delta=self.huber_delta)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        pred = get_output(outputs, self.output_key, self.name).float()  # (N, n_outputs)
        if pred.shape[-1] != self.n_outputs:
            raise ValueError(
                f"regression output {self.output_key!r} has {pred.shape[-1]} columns but params "
                f"{list(self.params)} need {self.n_outputs}"
            )
        keep = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
        if batch.particle_id is not None:
            keep = batch.particle_id != 0  # (N,) noise hits carry no parameters
        if not bool(keep.any()):
            return zero_loss(pred)
        total, col = pred.new_zeros(()), 0
        for pname, spec in self.params.items():
            target = get_target(batch, pname, self.name).float()[keep]  # (n_keep,)
            if spec["kind"] == "angle":
                p = pred[keep, col : col + 2]  # (n_keep, 2) predicted sin, cos
                t = torch.stack([torch.sin(target), torch.cos(target)], dim=-1)
                col += 2
            else:
                p = pred[keep, col]  # (n_keep,)
                t = target / spec["scale"]
                col += 1
            total = total + spec["weight"] * self._elementwise(p, t).mean()
        return total

    @torch.no_grad()
    def decode(self, pred: Tensor) -> dict[str, Tensor]:
        """Predicted physical parameters from the raw output columns (phi via atan2)."""
        out, col = {}, 0
        for pname, spec in self.params.items():
            if spec["kind"] == "angle":
                out[pname] = torch.atan2(pred[:, col], pred[:, col + 1])
                col += 2
            else:
                out[pname] = pred[:, col] * spec["scale"]
                col += 1
        return out
