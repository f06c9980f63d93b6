"""Cross-entropy over binned track parameters (TrackFormers "classifier").

Each parameter's range [low, high] is cut into ``bins`` equal bins; the model predicts one
group of logits per parameter, concatenated in the order of ``params`` in
``outputs[output_key]`` (total_hits, n_outputs). Values outside the range go to the edge
bins. Noise hits are either ignored or, with ``noise="class"``, get an extra last class in
every group so the model learns to tag them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackformers.losses.base import check_noise_mode, get_output, get_target, zero_loss


class BinnedCrossEntropyLoss(nn.Module):
    """params: {name: {low, high, bins, weight, class_weights: list | None}}."""

    name = "classification"

    def __init__(
        self,
        params: Mapping[str, Mapping] | None = None,
        output_key: str = "logits",
        noise: str = "ignore",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        params = params or {"phi": {"low": -torch.pi, "high": torch.pi, "bins": 32}}
        self.noise = check_noise_mode(noise, ("ignore", "class"), self.name)
        self.output_key, self.label_smoothing = output_key, label_smoothing
        self.params: dict[str, dict] = {}
        for pname, spec in params.items():
            spec = dict(spec)
            for req in ("low", "high", "bins"):
                if req not in spec:
                    raise ValueError(f"classification param {pname!r} lacks {req!r}")
            low, high, bins = float(spec["low"]), float(spec["high"]), int(spec["bins"])
            if not (high > low and bins >= 2):
                raise ValueError(f"classification param {pname!r}: need high > low, bins >= 2")
            n_cls = bins + (1 if self.noise == "class" else 0)
            cw = spec.get("class_weights")
            if cw is not None:
                cw = torch.as_tensor(list(cw), dtype=torch.float32)
                if cw.numel() != n_cls:
                    raise ValueError(
                        f"classification param {pname!r}: class_weights has {cw.numel()} "
                        f"entries, needs {n_cls} (bins{' + noise' if n_cls > bins else ''})"
                    )
                self.register_buffer(f"class_weights_{pname}", cw)
            self.params[pname] = {
                "low": low,
                "high": high,
                "bins": bins,
                "n_classes": n_cls,
                "weight": float(spec.get("weight", 1.0)),
                "has_cw": cw is not None,
            }

    @property
    def n_outputs(self) -> int:
        return sum(p["n_classes"] for p in self.params.values())

    def bin_index(self, pname: str, values: Tensor) -> Tensor:
        """(N,) int64 bin of each value, clamped to [0, bins - 1]."""
        spec = self.params[pname]
        rel = (values.float() - spec["low"]) / (spec["high"] - spec["low"])
        return (rel * spec["bins"]).floor().long().clamp(0, spec["bins"] - 1)

    def forward(self, outputs: dict[str, Tensor], batch) -> Tensor:
        logits = get_output(outputs, self.output_key, self.name).float()  # (N, n_outputs)
        if logits.shape[-1] != self.n_outputs:
            raise ValueError(
                f"classification output {self.output_key!r} has {logits.shape[-1]} columns, "
                f"params {list(self.params)} need {self.n_outputs}"
            )
        noise = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        if batch.particle_id is not None:
            noise = batch.particle_id == 0  # (N,)
        keep = ~noise if self.noise == "ignore" else torch.ones_like(noise)
        if not bool(keep.any()):
            return zero_loss(logits)
        total, col = logits.new_zeros(()), 0
        for pname, spec in self.params.items():
            group = logits[:, col : col + spec["n_classes"]]  # (N, n_classes)
            col += spec["n_classes"]
            target = self.bin_index(pname, get_target(batch, pname, self.name))  # (N,)
            if self.noise == "class":
                target = torch.where(noise, spec["bins"], target)
            cw = getattr(self, f"class_weights_{pname}") if spec["has_cw"] else None
            ce = F.cross_entropy(
                group[keep], target[keep], weight=cw, label_smoothing=self.label_smoothing
            )
            total = total + spec["weight"] * ce
        return total
