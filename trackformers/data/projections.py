"""Part-2 projections (TrackFormers Part 2, arXiv 2509.26411): hits seen from a vertex on the
beam axis are projected along the straight line vertex -> hit onto a barrel cylinder of radius
R = 91 mm (coordinates (R phi, z), region 0) or, when that line leaves the cylinder beyond
abs(z) = 920 mm, onto the endcap plane z = +-920 mm (coordinates (x, y), region +-1).

``project_part2`` with an array of candidate vertex z values re-projects every hit once per
candidate (shape (K, N)), for models that scan the luminous region.
"""

from __future__ import annotations

import numpy as np

BARREL_RADIUS = 91.0  # mm
ENDCAP_Z = 920.0  # mm


def project_part2(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    vertex_z: float | np.ndarray = 0.0,
    radius: float = BARREL_RADIUS,
    endcap_z: float = ENDCAP_Z,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, region) of each hit; arrays (N,) for a scalar vertex_z, (K, N) for K candidates.

    Barrel (region 0): u = R * phi (mm), v = z on the cylinder. Endcap (region +1 / -1 for
    z > 0 / z < 0): u, v = x, y on the plane. Hits on the axis (r = 0) go to the endcaps.

    Args:
        x: (N,) hit positions in mm.
        y: (N,)
        z: (N,)
        vertex_z: vertex z in mm, scalar or (K,) candidates.
        radius: barrel cylinder radius in mm.
        endcap_z: endcap plane position in mm.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    vz = np.asarray(vertex_z, dtype=np.float64)
    if vz.ndim == 1:
        vz = vz[:, None]  # (K, 1) against (N,) hits
    r = np.hypot(x, y)
    dz = z - vz
    with np.errstate(divide="ignore", invalid="ignore"):
        t_barrel = radius / r  # scale along vertex -> hit to reach the cylinder
        z_cyl = vz + t_barrel * dz
    barrel = np.isfinite(z_cyl) & (np.abs(z_cyl) <= endcap_z)
    side = np.where(dz >= 0, 1.0, -1.0)
    plane = side * endcap_z
    phi = np.arctan2(y, x)
    with np.errstate(divide="ignore", invalid="ignore"):  # t_end unused where barrel
        t_end = (plane - vz) / dz
        u = np.where(barrel, radius * phi, t_end * x)
        v = np.where(barrel, z_cyl, t_end * y)
    region = np.where(barrel, 0, side).astype(np.int8)
    return u.astype(np.float32), v.astype(np.float32), region
