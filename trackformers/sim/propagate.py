"""Helix propagation of charged particles through the detector surfaces (numba, one pass).

Each particle moves on a helix in a field B along z: uniform (``field_tesla``) or, as a hook
for real fields, an (r, z) map of Bz (``Geometry.field_map``) read by :func:`_field_bz` at the
start of every step, so the track is a piecewise helix between surfaces. From its
current state the next crossing with every surface is found analytically (cylinder: circle
circle intersection plus full turns for loopers; disk: linear in z), the nearest one is taken,
a hit is recorded with probability ``efficiency`` on sensitive surfaces, then material effects
are applied: Highland multiple scattering and ionisation loss (Bethe mean with Landau-like
fluctuations), both with the thickness corrected for the incidence angle (x / cos(alpha)),
plus mean bremsstrahlung for electrons. A particle stops when it crosses the world boundary,
finds no further surface, falls below ``p_min`` or exceeds ``max_crossings``; loopers
therefore leave their repeated hits as in real data.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from trackformers.sim.geometry import CYLINDER, Geometry

C_LIGHT = 0.299792458e-3  # GeV / (T mm)
SI_DEDX_PER_X0 = 0.0363  # GeV: minimum-ionising loss in silicon per radiation length
# Landau width xi = (K/2)(Z/A) rho x / beta^2 for silicon, per radiation length (GeV)
SI_XI_PER_X0 = 0.001671
MOYAL_MEAN = 0.5772156649 + math.log(2.0)  # mean of the Moyal distribution (Euler + ln 2)
_EPS = 1e-3  # mm: crossings closer than this are the current one


@numba.njit(cache=True)
def _wrap_positive(a):
    two_pi = 2.0 * math.pi
    a = a % two_pi
    if a < 0:
        a += two_pi
    return a


@numba.njit(cache=True)
def _field_bz(bz, map_r, map_z, map_bz, r, z):
    """Bz (T) at (r, z): the uniform ``bz`` without a map, else bilinear in the (r, z) grid."""
    if map_r.shape[0] == 0:
        return bz
    ir = min(max(np.searchsorted(map_r, r) - 1, 0), map_r.shape[0] - 2)
    iz = min(max(np.searchsorted(map_z, z) - 1, 0), map_z.shape[0] - 2)
    fr = min(max((r - map_r[ir]) / (map_r[ir + 1] - map_r[ir]), 0.0), 1.0)
    fz = min(max((z - map_z[iz]) / (map_z[iz + 1] - map_z[iz]), 0.0), 1.0)
    return (
        (1 - fr) * (1 - fz) * map_bz[ir, iz]
        + fr * (1 - fz) * map_bz[ir + 1, iz]
        + (1 - fr) * fz * map_bz[ir, iz + 1]
        + fr * fz * map_bz[ir + 1, iz + 1]
    )


@numba.njit(cache=True)
def _propagate(
    vx,
    vy,
    vz,
    px,
    py,
    pz,
    q,
    mass,
    is_electron,
    kind,
    pos,
    lo,
    hi,
    x0,
    sensitive,
    kill,
    bz,
    map_r,
    map_z,
    map_bz,
    efficiency,
    scattering,
    energy_loss,
    p_min,
    max_crossings,
    max_hits,
    seed,
    out_part,
    out_surf,
    out_state,
):
    np.random.seed(seed)  # noqa: NPY002 (numba's per-thread generator)
    n_surf = kind.shape[0]
    nh = 0
    cap = out_part.shape[0]
    two_pi = 2.0 * math.pi
    for i in range(vx.shape[0]):
        if q[i] == 0:
            continue
        x, y, z = vx[i], vy[i], vz[i]
        mx, my, mz = px[i], py[i], pz[i]
        hits_i = 0
        for _ in range(max_crossings):
            pt = math.sqrt(mx * mx + my * my)
            if pt < 1e-9 or nh >= cap:
                break
            b_local = _field_bz(bz, map_r, map_z, map_bz, math.sqrt(x * x + y * y), z)
            kappa = -q[i] * b_local * C_LIGHT / pt  # signed curvature (1/mm)
            if abs(kappa) < 1e-12:
                kappa = 1e-12
            phi0 = math.atan2(my, mx)
            tanl = mz / pt
            xc = x - math.sin(phi0) / kappa
            yc = y + math.cos(phi0) / kappa
            rho = 1.0 / abs(kappa)
            d = math.sqrt(xc * xc + yc * yc)
            period = two_pi * rho
            best_s = np.inf
            best_j = -1
            for j in range(n_surf):
                if kind[j] == CYLINDER:
                    R = pos[j]
                    if d < 1e-12 or d > R + rho or d < abs(R - rho):
                        continue
                    a = (R * R - rho * rho + d * d) / (2.0 * d)
                    h = math.sqrt(max(R * R - a * a, 0.0))
                    ux, uy = xc / d, yc / d
                    for sgn in (-1.0, 1.0):
                        hx = a * ux - sgn * h * uy
                        hy = a * uy + sgn * h * ux
                        phip = math.atan2(kappa * (hx - xc), -kappa * (hy - yc))
                        if kappa > 0:
                            s = _wrap_positive(phip - phi0) / kappa
                        else:
                            s = _wrap_positive(phi0 - phip) / (-kappa)
                        if s < _EPS:
                            s += period
                        zs = z + tanl * s
                        if zs < lo[j] or zs > hi[j]:
                            step = tanl * period  # z advance per full turn
                            if zs > hi[j] and step < 0:
                                s += math.ceil((zs - hi[j]) / -step) * period
                            elif zs < lo[j] and step > 0:
                                s += math.ceil((lo[j] - zs) / step) * period
                            else:
                                continue
                            zs = z + tanl * s
                            if zs < lo[j] or zs > hi[j]:
                                continue
                        if s < best_s:
                            best_s = s
                            best_j = j
                else:
                    if tanl == 0.0:
                        continue
                    s = (pos[j] - z) / tanl
                    if s < _EPS or s >= best_s:
                        continue
                    ph = phi0 + kappa * s
                    xs = x + (math.sin(ph) - math.sin(phi0)) / kappa
                    ys = y - (math.cos(ph) - math.cos(phi0)) / kappa
                    r = math.sqrt(xs * xs + ys * ys)
                    if r >= lo[j] and r <= hi[j]:
                        best_s = s
                        best_j = j
            if best_j < 0 or kill[best_j]:
                break
            ph = phi0 + kappa * best_s
            x = x + (math.sin(ph) - math.sin(phi0)) / kappa
            y = y - (math.cos(ph) - math.cos(phi0)) / kappa
            z = z + tanl * best_s
            mx = pt * math.cos(ph)
            my = pt * math.sin(ph)
            if sensitive[best_j] and hits_i < max_hits and np.random.random() < efficiency:  # noqa: NPY002
                out_part[nh] = i
                out_surf[nh] = best_j
                out_state[nh, 0] = x
                out_state[nh, 1] = y
                out_state[nh, 2] = z
                out_state[nh, 3] = mx
                out_state[nh, 4] = my
                out_state[nh, 5] = mz
                nh += 1
                hits_i += 1
            # material: thickness along the path, corrected for the incidence angle
            p = math.sqrt(pt * pt + mz * mz)
            if kind[best_j] == CYLINDER:
                r = math.sqrt(x * x + y * y)
                cos_inc = abs(x * mx + y * my) / (r * p)
            else:
                cos_inc = abs(mz) / p
            t = x0[best_j] / max(cos_inc, 0.02)
            if t <= 0:
                continue
            e = math.sqrt(p * p + mass[i] * mass[i])
            beta = p / e
            if scattering:
                theta0 = (
                    0.0136
                    / (beta * p)
                    * abs(q[i])
                    * math.sqrt(t)
                    * (1.0 + 0.038 * math.log(t * q[i] * q[i] / (beta * beta)))
                )
                if theta0 > 0:
                    dx, dy, dz = mx / p, my / p, mz / p
                    # orthonormal basis (e1, e2) perpendicular to the direction
                    if abs(dz) < 0.99:
                        e1x, e1y, e1z = dy, -dx, 0.0
                    else:
                        e1x, e1y, e1z = 0.0, dz, -dy
                    nrm = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
                    e1x, e1y, e1z = e1x / nrm, e1y / nrm, e1z / nrm
                    e2x = dy * e1z - dz * e1y
                    e2y = dz * e1x - dx * e1z
                    e2z = dx * e1y - dy * e1x
                    t1 = math.tan(theta0 * np.random.standard_normal())  # noqa: NPY002
                    t2 = math.tan(theta0 * np.random.standard_normal())  # noqa: NPY002
                    dx, dy, dz = (
                        dx + t1 * e1x + t2 * e2x,
                        dy + t1 * e1y + t2 * e2y,
                        dz + t1 * e1z + t2 * e2z,
                    )
                    nrm = math.sqrt(dx * dx + dy * dy + dz * dz)
                    mx, my, mz = p * dx / nrm, p * dy / nrm, p * dz / nrm
            if energy_loss:
                # ionisation: Bethe mean plus Landau-like (Moyal) fluctuations of width xi,
                # sampled as -ln(Z^2) with Z ~ N(0, 1), shifted so the mean stays the Bethe mean
                de = SI_DEDX_PER_X0 * t / (beta * beta)
                g = np.random.standard_normal()  # noqa: NPY002
                moyal = -math.log(max(g * g, 1e-300))
                de = max(de + SI_XI_PER_X0 * t / (beta * beta) * (moyal - MOYAL_MEAN), 0.0)
                if is_electron[i]:
                    de += e * (1.0 - math.exp(-t))  # mean bremsstrahlung loss
                e_new = e - de
                if e_new <= mass[i]:
                    break
                p_new = math.sqrt(e_new * e_new - mass[i] * mass[i])
                if p_new < p_min:
                    break
                f = p_new / p
                mx, my, mz = mx * f, my * f, mz * f
    return nh


def propagate(
    geo: Geometry,
    vertex: np.ndarray,
    momentum: np.ndarray,
    charge: np.ndarray,
    mass: np.ndarray,
    pdg: np.ndarray,
    *,
    seed: int,
    efficiency: float = 0.99,
    scattering: bool = True,
    energy_loss: bool = True,
    p_min: float = 0.01,
    max_crossings: int = 200,
    max_hits: int = 100,
) -> dict[str, np.ndarray]:
    """Propagate particles; return their true crossings of sensitive surfaces.

    vertex, momentum: (n, 3) mm and GeV; charge, mass, pdg: (n,). Returns ``particle``
    (index into the inputs), ``surface`` (index into the geometry), ``pos`` (nh, 3) and
    ``mom`` (nh, 3), in crossing order per particle.
    """
    n = len(charge)
    vertex = np.ascontiguousarray(vertex, dtype=np.float64).reshape(n, 3)
    momentum = np.ascontiguousarray(momentum, dtype=np.float64).reshape(n, 3)
    cap = max(1024, int(n * 16))
    while True:
        out_part = np.empty(cap, np.int64)
        out_surf = np.empty(cap, np.int64)
        out_state = np.empty((cap, 6), np.float64)  # (cap, x y z px py pz)
        nh = _propagate(
            vertex[:, 0],
            vertex[:, 1],
            vertex[:, 2],
            momentum[:, 0],
            momentum[:, 1],
            momentum[:, 2],
            np.asarray(charge, np.float64),
            np.asarray(mass, np.float64),
            np.abs(np.asarray(pdg)) == 11,
            geo.kind,
            geo.pos,
            geo.lo,
            geo.hi,
            geo.x_over_x0,
            geo.sensitive,
            geo.kill,
            geo.field_tesla,
            *geo.field_map_arrays(),
            float(efficiency),
            bool(scattering),
            bool(energy_loss),
            float(p_min),
            int(max_crossings),
            int(max_hits),
            int(seed) % (2**32),
            out_part,
            out_surf,
            out_state,
        )
        if nh < cap:
            break
        cap *= 4  # output full: rerun with room (same seed, same result)
    return {
        "particle": out_part[:nh],
        "surface": out_surf[:nh],
        "pos": out_state[:nh, :3],
        "mom": out_state[:nh, 3:],
    }
