"""Standard errors of the pooled rates (efficiencies, fake rate) over a set of events."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def binomial_err(k: float, n: float) -> float:
    """Binomial standard error of the rate k / n (nan for n = 0).

    Args:
        k: successes.
        n: trials.
    """
    if not n:
        return math.nan
    p = k / n
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def ratio_err(per_event: Sequence[Mapping], k_key: str, n_key: str) -> float:
    """Standard error of the pooled ratio sum(k) / sum(n) over events: the larger of the
    binomial error and the event-to-event (cluster-robust) one,
    sqrt(E / (E - 1) * sum_i (k_i - R n_i)^2) / sum(n).

    Particles of one event are not independent (the event's pile-up, its jets, the clustering
    of its crowded regions move them together), so the binomial error alone understates the
    spread between two sets of events; the event-level one takes that in.

    Args:
        per_event: per-event dicts.
        k_key: key of the numerator count.
        n_key: key of the denominator count.

    Returns:
        The standard error (nan when sum(n) = 0).
    """
    k = np.array([float(e[k_key]) for e in per_event])
    n = np.array([float(e[n_key]) for e in per_event])
    total = n.sum()
    if not total:
        return math.nan
    binom = binomial_err(k.sum(), total)
    if len(k) < 2:
        return binom
    r = k.sum() / total
    robust = math.sqrt(len(k) / (len(k) - 1) * float(((k - r * n) ** 2).sum())) / total
    return max(binom, robust)
