"""Weighted sum of losses, each selected and weighted in config (conf/loss/*.yaml).

    loss:
      _target_: trackformers.losses.CombinedLoss
      terms:
        regression: {_target_: trackformers.losses.ParameterRegressionLoss, ...}
        contrastive: {_target_: trackformers.losses.SupConLoss, temperature: 0.1}
      weights: {regression: 1.0, contrastive: 0.5}

A term with weight 0 is not computed. ``forward`` returns the total and every term's value
(for logging as ``train/loss_<name>``).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class CombinedLoss(nn.Module):
    """Weighted sum of named loss terms; returns (total, {name: detached value}).

    Args:
        terms: name -> loss module (``loss(outputs, batch) -> scalar``).
        weights: name -> weight >= 0 (missing: 1; 0: the term is not computed).
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None):
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        weights = dict(weights or {})
        unknown = set(weights) - set(terms)
        if unknown:
            raise ValueError(
                f"loss weights name unknown terms {sorted(unknown)}; terms: {list(terms)}"
            )
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights.get(name, 1.0)) for name in terms}
        bad = {k: w for k, w in self.weights.items() if not w >= 0 or w == float("inf")}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
        if all(w == 0 for w in self.weights.values()):
            raise ValueError(f"all loss weights are zero: {self.weights}")

    def forward(self, outputs: dict[str, Tensor], batch) -> tuple[Tensor, dict[str, Tensor]]:
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            w = self.weights[name]
            if w == 0:
                continue
            value = term(outputs, batch)
            parts[name] = value.detach()
            total = w * value if total is None else total + w * value
        assert total is not None
        return total, parts

    def output_sizes(self) -> dict[str, int]:
        """Output columns each term expects, by output key (to size model heads)."""
        sizes: dict[str, int] = {}
        for term in self.terms.values():
            if getattr(term, "n_outputs", None) is not None:
                sizes[term.output_key] = term.n_outputs
        return sizes
