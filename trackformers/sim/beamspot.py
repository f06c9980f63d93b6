"""Luminous-region (beam-spot) widths from which primary vertices are drawn.

Every process (gun, Pythia8 hard scatter and pile-up) draws each primary vertex from a
Gaussian of widths (sigma_xy, sigma_xy, sigma_z) around the origin. The default is TrackML's:
its mu = 200 events (event 1000 of the public training sample: 204 primary vertices) show
sigma_z = 5.5-5.7 mm and sigma_xy = 0.015-0.02 mm (design guide, "TrackML facts to match").
The HL-LHC luminous region (sigma_z ~ 50 mm) is kept as a named option for robustness studies:
``python -m trackformers.simulate vertex=hllhc`` (conf/simulate/vertex/*.yaml).
"""

from __future__ import annotations

BEAMSPOTS: dict[str, dict[str, float]] = {
    "trackml": {"sigma_xy": 0.015, "sigma_z": 5.5},  # mm, TrackML
    "hllhc": {"sigma_xy": 0.015, "sigma_z": 50.0},  # mm, HL-LHC luminous region
}
DEFAULT_BEAMSPOT = "trackml"


def vertex_widths(vertex: dict | None) -> tuple[float, float]:
    """(sigma_xy, sigma_z) in mm from a ``vertex`` settings section; TrackML's where absent.

    Args:
        vertex: mapping with optional keys ``sigma_xy`` and ``sigma_z`` (mm), or None.

    Returns:
        The two widths, each checked to be finite and >= 0.
    """
    default = BEAMSPOTS[DEFAULT_BEAMSPOT]
    vertex = dict(vertex or {})
    unknown = sorted(set(vertex) - {"sigma_xy", "sigma_z"})
    if unknown:
        raise ValueError(
            f"unknown vertex setting(s) {unknown}; use vertex.sigma_xy, vertex.sigma_z"
        )
    out = []
    for key in ("sigma_xy", "sigma_z"):
        value = float(vertex.get(key, default[key]))
        if not 0.0 <= value < float("inf"):
            raise ValueError(f"vertex.{key} must be a finite width >= 0 mm, got {value}")
        out.append(value)
    return out[0], out[1]
