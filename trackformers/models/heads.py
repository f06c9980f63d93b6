"""Output heads of the TrackFormers models, each a map (total_hits, d_model) -> dict.

Output keys (all per hit, first dim total_hits, input order):
  ClassifierHead (EncCla)    "logits"    (N, num_classes)  unnormalised scores over parameter bins
  RegressorHead (EncReg)     "params"    (N, num_params)   regressed track parameters
  JointHead (Part 2)         "params" and "logits"; the classifier sees [h, params]
  ContrastiveHead            "embedding" (N, embed_dim)    L2-normalised hit embedding
                             (+ "params" (N, aux_params) with an auxiliary regression)
  HitFilterHead              "filter_logit" (N,)           logit that the hit belongs to a
                                                           particle worth tracking (hit filter)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Two-layer perceptron Linear -> GELU -> Dropout -> Linear, the body of every head.

    Args:
        d_in: input width.
        d_hidden: hidden width.
        d_out: output width.
        dropout: dropout probability after the activation.
    """
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


class ClassifierHead(nn.Module):
    """EncCla: logits over ``num_classes`` bins of track-parameter space."""

    def __init__(self, d_model: int, num_classes: int, hidden: int | None = None, dropout=0.0):
        super().__init__()
        self.net = mlp(d_model, hidden or d_model, num_classes, dropout)

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(h)}  # (N, num_classes)


class RegressorHead(nn.Module):
    """EncReg: ``num_params`` track parameters per hit."""

    def __init__(self, d_model: int, num_params: int, hidden: int | None = None, dropout=0.0):
        super().__init__()
        self.net = mlp(d_model, hidden or d_model, num_params, dropout)

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        return {"params": self.net(h)}  # (N, num_params)


class JointHead(nn.Module):
    """Part-2 joint model: regressed parameters condition the bin classifier, one pass.

    ``detach_condition`` stops the classifier loss from flowing into the regressor output.
    """

    def __init__(
        self,
        d_model: int,
        num_params: int,
        num_classes: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        detach_condition: bool = False,
    ):
        super().__init__()
        self.regressor = mlp(d_model, hidden or d_model, num_params, dropout)
        self.classifier = mlp(d_model + num_params, hidden or d_model, num_classes, dropout)
        self.detach_condition = detach_condition

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        params = self.regressor(h)  # (N, num_params)
        cond = params.detach() if self.detach_condition else params
        logits = self.classifier(torch.cat([h, cond], dim=-1))  # (N, num_classes)
        return {"params": params, "logits": logits}


class ContrastiveHead(nn.Module):
    """Unit-norm hit embedding for metric-learning losses and clustering.

    Args:
        d_model: encoder width.
        embed_dim: embedding size.
        hidden: MLP hidden width (default d_model).
        dropout: MLP dropout.
        aux_params: also regress this many track parameters per hit (output "params", trained
            by an auxiliary ``ParameterRegressionLoss``, loss=contrastive_reg), so that the
            encoder must carry each hit's track direction and curvature; None = no.
    """

    def __init__(
        self,
        d_model: int,
        embed_dim: int = 32,
        hidden: int | None = None,
        dropout=0.0,
        aux_params: int | None = None,
    ):
        super().__init__()
        self.net = mlp(d_model, hidden or d_model, embed_dim, dropout)
        if aux_params is not None and (isinstance(aux_params, bool) or int(aux_params) < 1):
            raise ValueError(f"model.head.aux_params = {aux_params!r}: must be >= 1 or null")
        self.aux = mlp(d_model, hidden or d_model, int(aux_params), dropout) if aux_params else None

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        out = {"embedding": F.normalize(self.net(h), dim=-1)}  # (N, embed_dim)
        if self.aux is not None:
            out["params"] = self.aux(h)  # (N, aux_params)
        return out


class HitFilterHead(nn.Module):
    """Hit filter: one logit per hit that it belongs to a reconstructable particle above the
    pT threshold (trained jointly with BCE, ``trackformers.losses.HitFilterLoss``). Hits whose
    sigmoid falls below the clustering's ``filter_threshold`` are left out of the tracks."""

    def __init__(self, d_model: int, hidden: int | None = None, dropout=0.0):
        super().__init__()
        self.net = mlp(d_model, hidden or d_model, 1, dropout)

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        return {"filter_logit": self.net(h).squeeze(-1)}  # (N,)
