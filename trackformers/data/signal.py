"""The per-hit "signal" label: the hit belongs to a reconstructable particle.

A particle is signal when it passes the efficiency denominator's cuts
(:class:`trackformers.metrics.efficiency.Reconstructable`): pT > ``pt_min`` GeV,
|eta| < ``abs_eta_max`` and at least ``min_hits`` hits among the hits kept by the volume
selection. Noise hits and hits of other particles are not signal. The label lands in
``batch.targets["signal"]`` ((N,) bool) when ``data.features.signal`` is set; losses anchor on
it (low-pT and noise hits stay negatives only) and a hit-filter head learns it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from trackformers.metrics.efficiency import Reconstructable

OPTION = "data.features.signal"


@dataclass(frozen=True)
class SignalConfig:
    """Cuts of the signal particles (the metrics' reconstructable definition)."""

    pt_min: float = 0.9  # GeV, strict: pt > pt_min
    abs_eta_max: float = 4.0  # strict: |eta| < abs_eta_max
    min_hits: int = 3  # hits of the particle among the selected hits

    def __post_init__(self):
        pt_min, eta_max, min_hits = self.pt_min, self.abs_eta_max, self.min_hits
        if isinstance(pt_min, bool) or not isinstance(pt_min, (int, float)):
            raise ValueError(f"{OPTION}.pt_min must be a number (GeV), got {pt_min!r}")
        if not (math.isfinite(pt_min) and pt_min >= 0):
            raise ValueError(f"{OPTION}.pt_min must be finite and >= 0 GeV, got {pt_min!r}")
        if isinstance(eta_max, bool) or not isinstance(eta_max, (int, float)):
            raise ValueError(f"{OPTION}.abs_eta_max must be a number, got {eta_max!r}")
        if not eta_max > 0:  # also rejects NaN; inf keeps every eta
            raise ValueError(f"{OPTION}.abs_eta_max must be > 0, got {eta_max!r}")
        if isinstance(min_hits, bool) or not isinstance(min_hits, (int, np.integer)):
            raise ValueError(f"{OPTION}.min_hits must be an integer, got {min_hits!r}")
        if min_hits < 1:
            raise ValueError(f"{OPTION}.min_hits must be >= 1, got {min_hits!r}")

    @classmethod
    def from_value(cls, value) -> SignalConfig | None:
        """None (no signal target), a SignalConfig, or a mapping of its fields.

        Args:
            value: the ``features.signal`` setting.
        """
        if value is None or isinstance(value, SignalConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"{OPTION} must be null or a mapping {{pt_min, abs_eta_max, min_hits}}, "
                f"got {value!r}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{OPTION} has unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(value))


def signal_hits(row: np.ndarray, pt: np.ndarray, eta: np.ndarray, cfg: SignalConfig) -> np.ndarray:
    """(N,) bool: hit belongs to a signal particle.

    Args:
        row: (N,) int64 particle-table row of each hit, -1 for noise / no truth.
        pt: (npart,) particle pT in GeV.
        eta: (npart,) particle pseudorapidity.
        cfg: the cuts.

    Returns:
        (N,) bool signal label; hit counts are over the hits given (the selected volumes).
    """
    row = np.asarray(row, dtype=np.int64)
    has = row >= 0  # (N,)
    nhits = np.bincount(row[has], minlength=len(pt))  # (npart,) hits per particle
    cuts = Reconstructable(pt_min=cfg.pt_min, abs_eta_max=cfg.abs_eta_max, min_hits=cfg.min_hits)
    with np.errstate(invalid="ignore"):
        part_signal = cuts.select(np.asarray(pt), np.asarray(eta), nhits, nhits)  # (npart,)
    out = np.zeros(len(row), dtype=np.bool_)
    out[has] = part_signal[row[has]]
    return out
