"""Helix propagation of particles through the detector surfaces (numba, one pass).

Each charged particle moves on a helix in a field B along z: uniform (``field_tesla``) or, as a
hook for real fields, an (r, z) map of Bz (``Geometry.field_map``) read by :func:`_field_bz` at
the start of every step, so the track is a piecewise helix between surfaces. From its
current state the nearest surface crossing is found analytically (cylinder: circle circle
intersection plus full turns for loopers; disk: linear in z), solving only the surfaces that a
lower bound on the path to them does not rule out (:func:`_helix_next_sorted`; the same
result, bit for bit, as solving all of them in :func:`_helix_next`), a hit is recorded with
probability ``efficiency`` on sensitive surfaces, then material effects are applied: Highland
multiple scattering and ionisation loss (Bethe mean with Landau-like fluctuations), both with
the thickness corrected for the incidence angle (x / cos(alpha)), plus mean bremsstrahlung for
electrons. Neutral particles (photons, neutral hadrons) fly on straight lines and leave no hits.

Interactions in the material end a particle and are returned for
:mod:`trackformers.sim.interactions` to turn into secondaries: photon conversions with
probability 1 - exp(-7/9 f(E) x/X0) per crossing, f(E) the energy dependence of the
pair-production cross section (:func:`pair_production_fraction`), and inelastic nuclear
interactions of hadrons with probability 1 - exp(-x/lambda), lambda = ``lambda_over_x0`` X0,
optionally per species and momentum as Fatras parametrises it (:func:`absorption_scale`).

A particle starting below ``p_min`` is not simulated (as Fatras' minimum momentum of simulated
particles). A particle stops when it crosses the world boundary, finds no further surface,
interacts, falls below ``p_min``, exceeds ``max_crossings`` or (loop protection, as the ACTS
propagator's ``loopProtection``) has travelled more than ``loop_fraction`` of one full helix
turn, the turn computed from its momentum and the field at its start: 2 pi p / (|q| c B).
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
SI_LAMBDA_OVER_X0 = 465.2 / 93.7  # silicon: nuclear interaction length / radiation length
CONVERSION_PER_X0 = 7.0 / 9.0  # pair production: mean free path 9/7 X0 (high-energy limit)
# pair-production cross section below its high-energy limit: sigma(E) / sigma(inf) = 1 - xi(E),
# xi = A + B (E / GeV)^C, the fit of ATLAS Fatras (ISF_FatrasTools PhotonConversionTool::
# pairProduction) to Y.-S. Tsai, Rev. Mod. Phys. 46 (1974) 815 over 0.1-100 GeV
# (0.70 at 0.1 GeV, 0.89 at 0.5 GeV, 0.93 at 1 GeV, 0.99 at 10 GeV)
TSAI_A, TSAI_B, TSAI_C = -7.01612e-03, 7.69040e-02, -0.607682
# nuclear absorption length per species, as ATLAS Fatras (ISF_FatrasTools
# HadIntProcessorParametric::absorptionLength) and acts-fatras (2018, ParametricNuclearInt::
# absorptionLength) parametrise it, from comparisons with Geant4: lambda = lambda_I x 0.7 for
# (anti)nucleons, x 0.9 for pions, and for pions and kaons a dip at the Delta(1232) resonance,
# x 1 / (1 + exp(-(p - 0.27 GeV)^2 / (2 (0.06 GeV)^2))); lambda_I for other hadrons (hyperons)
NUCLEON_LAMBDA_SCALE = 0.7
PION_LAMBDA_SCALE = 0.9
RESONANCE_P, RESONANCE_WIDTH = 0.27, 0.06  # GeV
_EPS = 1e-3  # mm: crossings closer than this are the current one

# species codes (``species`` argument of the kernel); every code >= HADRON is a hadron
OTHER, ELECTRON, PHOTON, HADRON, NUCLEON, PION, KAON = 0, 1, 2, 3, 4, 5, 6
# interaction kinds (``kind`` of the returned interactions)
CONVERSION, NUCLEAR = 1, 2


def species_of(pdg: np.ndarray) -> np.ndarray:
    """Species code per pdg id: electron, photon, nucleon, pion, kaon, other hadron
    (abs(pdg) >= 100) or other (muons, ...).

    Args:
        pdg: PDG ids.

    Returns:
        int8 species codes (``ELECTRON``, ``PHOTON``, ``NUCLEON``, ...), same shape.
    """
    a = np.abs(np.asarray(pdg, np.int64))
    out = np.full(a.shape, OTHER, np.int8)
    out[a == 11] = ELECTRON
    out[a == 22] = PHOTON
    out[a >= 100] = HADRON
    out[(a == 2212) | (a == 2112)] = NUCLEON
    out[(a == 211) | (a == 111)] = PION
    out[(a == 321) | (a == 130) | (a == 310) | (a == 311)] = KAON
    return out


@numba.njit(cache=True)
def pair_production_fraction(e):
    """Pair-production cross section at photon energy ``e`` (GeV) over its high-energy limit
    (Tsai's, as fitted by ATLAS Fatras; clipped to [0, 1]).

    Args:
        e: photon energy in GeV.

    Returns:
        The fraction in [0, 1].
    """
    return min(max(1.0 - (TSAI_A + TSAI_B * max(e, 1e-3) ** TSAI_C), 0.0), 1.0)


@numba.njit(cache=True)
def absorption_scale(species, p):
    """Nuclear absorption length of a hadron of momentum ``p`` (GeV) in units of lambda_I
    (the Fatras per-species parametrisation; 1 for other hadrons).

    Args:
        species: species code of the hadron.
        p: momentum in GeV.

    Returns:
        The absorption length in units of lambda_I.
    """
    scale = 1.0
    if species == PION or species == KAON:
        scale = 1.0 / (1.0 + math.exp(-0.5 * ((p - RESONANCE_P) / RESONANCE_WIDTH) ** 2))
    if species == NUCLEON:
        scale *= NUCLEON_LAMBDA_SCALE
    elif species == PION:
        scale *= PION_LAMBDA_SCALE
    return scale


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
def _helix_next(x, y, z, phi0, kappa, tanl, kind, pos, lo, hi):
    """Nearest surface crossing of a helix: (transverse arc length s, surface index or -1)."""
    xc = x - math.sin(phi0) / kappa
    yc = y + math.cos(phi0) / kappa
    rho = 1.0 / abs(kappa)
    d = math.sqrt(xc * xc + yc * yc)
    period = 2.0 * math.pi * rho
    best_s = np.inf
    best_j = -1
    for j in range(kind.shape[0]):
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
    return best_s, best_j


@numba.njit(cache=True)
def _line_next(x, y, z, dx, dy, dz, kind, pos, lo, hi):
    """Nearest surface crossing of a straight line (unit direction d): (path s, index or -1)."""
    best_s = np.inf
    best_j = -1
    a = dx * dx + dy * dy
    for j in range(kind.shape[0]):
        if kind[j] == CYLINDER:
            if a < 1e-18:
                continue
            b = x * dx + y * dy
            c = x * x + y * y - pos[j] * pos[j]
            disc = b * b - a * c
            if disc < 0:
                continue
            root = math.sqrt(disc)
            for s in ((-b - root) / a, (-b + root) / a):
                if s >= _EPS and s < best_s:
                    zs = z + dz * s
                    if zs >= lo[j] and zs <= hi[j]:
                        best_s = s
                        best_j = j
        else:
            if dz == 0.0:
                continue
            s = (pos[j] - z) / dz
            if s < _EPS or s >= best_s:
                continue
            xs, ys = x + dx * s, y + dy * s
            r = math.sqrt(xs * xs + ys * ys)
            if r >= lo[j] and r <= hi[j]:
                best_s = s
                best_j = j
    return best_s, best_j


@numba.njit(cache=True)
def _first_at_or_above(a, v):
    """Index of the first element of the ascending array ``a`` that is >= v (len(a) if none)."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def _nearer(s, j, best_s, best_j):
    """True if crossing (s, j) comes before (best_s, best_j): smaller s, ties to the lower index
    (the order in which the exhaustive searches keep their first minimum)."""
    return s < best_s or (s == best_s and j < best_j)


@numba.njit(cache=True)
def _cylinder_s(j, x, y, z, phi0, kappa, tanl, xc, yc, rho, d, period, pos, lo, hi):
    """Transverse arc length to the nearest crossing of cylinder j by the helix, inf if none
    (the cylinder branch of :func:`_helix_next`)."""
    best = np.inf
    R = pos[j]
    if d < 1e-12 or d > R + rho or d < abs(R - rho):
        return best
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
        if s < best:
            best = s
    return best


@numba.njit(cache=True)
def _helix_next_sorted(x, y, z, phi0, kappa, tanl, pos, lo, hi, cyl, cyl_r, disk, disk_z):
    """:func:`_helix_next` (same result, bit for bit) visiting surfaces nearest first.

    ``cyl`` / ``disk``: surface indices of the cylinders by radius ``cyl_r`` and of the disks by
    z ``disk_z`` (ascending). The transverse radius changes by at most the transverse arc, so
    reaching radius R from radius r takes an arc of at least abs(R - r), and at least
    (r_max - r) + (r_max - R) for an inner cylinder while the particle moves outwards (it must
    first turn at the circle's largest radius r_max = d + rho; likewise inwards through
    r_min = abs(d - rho)); a disk takes exactly (z_disk - z) / tanl. The search walks outwards
    and inwards over the cylinders and along z over the disks, always solving the surface of
    the smallest bound, and stops once that bound exceeds the nearest crossing found: only
    the few surfaces ahead of the particle are solved.
    """
    sin0, cos0 = math.sin(phi0), math.cos(phi0)
    xc = x - sin0 / kappa
    yc = y + cos0 / kappa
    rho = 1.0 / abs(kappa)
    d = math.sqrt(xc * xc + yc * yc)
    period = 2.0 * math.pi * rho
    r0 = math.sqrt(x * x + y * y)
    tol = 1e-6 + 1e-12 * rho  # mm: rounding of the computed arc lengths, far above it
    nc, nd = cyl_r.shape[0], disk_z.shape[0]
    up = _first_at_or_above(cyl_r, r0)
    dn = up - 1
    # radial direction of motion: the extra arc to turn back first (0 when unsure)
    v_r = x * cos0 + y * sin0
    turn_out = 0.0  # added to the bound of the inner cylinders: 2 (r_max - r0)
    turn_in = 0.0  # added to the bound of the outer cylinders: 2 (r0 - r_min)
    if v_r > 1e-9 * r0:
        turn_out = max(2.0 * (d + rho - r0), 0.0)
    elif v_r < -1e-9 * r0:
        turn_in = max(2.0 * (r0 - abs(d - rho)), 0.0)
    if tanl > 0.0:
        k = _first_at_or_above(disk_z, z)
        k_step = 1
    elif tanl < 0.0:
        k = _first_at_or_above(disk_z, z) - 1
        k_step = -1
    else:
        k, k_step = -1, 0
    best_s = np.inf
    best_j = -1
    while True:
        b_up = cyl_r[up] - r0 + turn_in if up < nc else np.inf
        b_dn = r0 - cyl_r[dn] + turn_out if dn >= 0 else np.inf
        b_k = (disk_z[k] - z) / tanl if 0 <= k < nd else np.inf  # exactly the disk's s
        if b_k == np.inf and b_up == np.inf and b_dn == np.inf:
            break
        if b_k <= b_up - tol and b_k <= b_dn - tol:
            if not b_k <= best_s:
                break
            j = disk[k]
            k += k_step
            s = b_k
            if s < _EPS or not _nearer(s, j, best_s, best_j):
                continue
            ph = phi0 + kappa * s
            xs = x + (math.sin(ph) - sin0) / kappa
            ys = y - (math.cos(ph) - cos0) / kappa
            r = math.sqrt(xs * xs + ys * ys)
            if r >= lo[j] and r <= hi[j]:
                best_s = s
                best_j = j
            continue
        if b_up <= b_dn:
            if not b_up - tol <= best_s:
                break
            j = cyl[up]
            up += 1
        else:
            if not b_dn - tol <= best_s:
                break
            j = cyl[dn]
            dn -= 1
        s = _cylinder_s(j, x, y, z, phi0, kappa, tanl, xc, yc, rho, d, period, pos, lo, hi)
        if _nearer(s, j, best_s, best_j):
            best_s = s
            best_j = j
    return best_s, best_j


@numba.njit(cache=True)
def _line_next_sorted(x, y, z, dx, dy, dz, pos, lo, hi, cyl, cyl_r, disk, disk_z):
    """:func:`_line_next` (same result, bit for bit) visiting surfaces nearest first, as
    :func:`_helix_next_sorted`: a straight path of length s moves at most s in radius, and
    once moving outwards it never comes back to a smaller radius."""
    a = dx * dx + dy * dy
    b = x * dx + y * dy
    r0 = math.sqrt(x * x + y * y)
    tol = 1e-6 + 1e-9 / math.sqrt(max(a, 1e-18))  # mm: rounding of the roots, far above it
    nc, nd = cyl_r.shape[0], disk_z.shape[0]
    up = _first_at_or_above(cyl_r, r0)
    dn = up - 1
    if dz > 0.0:
        k = _first_at_or_above(disk_z, z)
        k_step = 1
    elif dz < 0.0:
        k = _first_at_or_above(disk_z, z) - 1
        k_step = -1
    else:
        k, k_step = -1, 0
    if a < 1e-18:
        up, dn = nc, -1  # along the beam line: no cylinder crossing
    elif b > 1e-9 * r0 and a > 1e-6:
        dn = -1  # moving outwards: both roots of every inner cylinder are negative
    best_s = np.inf
    best_j = -1
    while True:
        b_up = cyl_r[up] - r0 if up < nc else np.inf
        b_dn = r0 - cyl_r[dn] if dn >= 0 else np.inf
        b_k = (disk_z[k] - z) / dz if 0 <= k < nd else np.inf  # exactly the disk's s
        if b_k == np.inf and b_up == np.inf and b_dn == np.inf:
            break
        if b_k <= b_up - tol and b_k <= b_dn - tol:
            if not b_k <= best_s:
                break
            j = disk[k]
            k += k_step
            s = b_k
            if s < _EPS or not _nearer(s, j, best_s, best_j):
                continue
            xs, ys = x + dx * s, y + dy * s
            r = math.sqrt(xs * xs + ys * ys)
            if r >= lo[j] and r <= hi[j]:
                best_s = s
                best_j = j
            continue
        if b_up <= b_dn:
            if not b_up - tol <= best_s:
                break
            j = cyl[up]
            up += 1
        else:
            if not b_dn - tol <= best_s:
                break
            j = cyl[dn]
            dn -= 1
        c = x * x + y * y - pos[j] * pos[j]
        disc = b * b - a * c
        if disc < 0:
            continue
        root = math.sqrt(disc)
        for s in ((-b - root) / a, (-b + root) / a):
            if s >= _EPS and _nearer(s, j, best_s, best_j):
                zs = z + dz * s
                if zs >= lo[j] and zs <= hi[j]:
                    best_s = s
                    best_j = j
    return best_s, best_j


@numba.njit(cache=True)
def _scatter(mx, my, mz, p, theta0):
    """Momentum (mx, my, mz) of magnitude p turned by two Gaussian angles of width theta0."""
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
    dx, dy, dz = dx + t1 * e1x + t2 * e2x, dy + t1 * e1y + t2 * e2y, dz + t1 * e1z + t2 * e2z
    nrm = math.sqrt(dx * dx + dy * dy + dz * dz)
    return p * dx / nrm, p * dy / nrm, p * dz / nrm


@numba.njit(cache=True)
def _interacts(species, p, t, lambda_over_x0, conversions, nuclear, per_species):
    """Interaction kind (CONVERSION, NUCLEAR) in a layer of t radiation lengths, or 0.

    Photons convert with the energy-dependent pair-production cross section; hadrons interact
    over lambda_I (``lambda_over_x0`` X0), scaled per species when ``per_species``."""
    if species == PHOTON and conversions:
        mu = CONVERSION_PER_X0 * pair_production_fraction(p)
        if np.random.random() < -math.expm1(-mu * t):  # noqa: NPY002
            return CONVERSION
    elif species >= HADRON and nuclear and lambda_over_x0 > 0:
        lam = lambda_over_x0 * (absorption_scale(species, p) if per_species else 1.0)
        if np.random.random() < -math.expm1(-t / lam):  # noqa: NPY002
            return NUCLEAR
    return 0


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
    species,
    kind,
    pos,
    lo,
    hi,
    x0,
    sensitive,
    kill,
    cyl,
    cyl_r,
    disk,
    disk_z,
    exhaustive,
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
    loop_fraction,
    conversions,
    nuclear,
    lambda_over_x0,
    nuclear_per_species,
    seed,
    out_part,
    out_surf,
    out_state,
    int_part,
    int_kind,
    int_state,
):
    np.random.seed(seed)  # noqa: NPY002 (numba's per-thread generator)
    nh = 0
    ni = 0
    cap = out_part.shape[0]
    int_cap = int_part.shape[0]
    for i in range(vx.shape[0]):
        x, y, z = vx[i], vy[i], vz[i]
        mx, my, mz = px[i], py[i], pz[i]
        hits_i = 0
        path = 0.0  # 3D path length travelled (mm)
        path_limit = np.inf
        p0 = math.sqrt(mx * mx + my * my + mz * mz)
        if p0 < p_min:
            continue  # not simulated (as Fatras' minimum momentum of simulated particles)
        if q[i] != 0 and loop_fraction > 0:
            b0 = abs(_field_bz(bz, map_r, map_z, map_bz, math.sqrt(x * x + y * y), z))
            if b0 > 0:
                path_limit = loop_fraction * 2.0 * math.pi * p0 / (abs(q[i]) * C_LIGHT * b0)
        for _ in range(max_crossings):
            pt = math.sqrt(mx * mx + my * my)
            p = math.sqrt(pt * pt + mz * mz)
            if p < 1e-9 or nh >= cap:
                break
            if q[i] == 0:
                dx, dy, dz = mx / p, my / p, mz / p
                if exhaustive:
                    best_s, best_j = _line_next(x, y, z, dx, dy, dz, kind, pos, lo, hi)
                else:
                    best_s, best_j = _line_next_sorted(
                        x, y, z, dx, dy, dz, pos, lo, hi, cyl, cyl_r, disk, disk_z
                    )
                if best_j < 0 or kill[best_j]:
                    break
                x, y, z = x + mx / p * best_s, y + my / p * best_s, z + mz / p * best_s
            else:
                if pt < 1e-9:
                    break
                b_local = _field_bz(bz, map_r, map_z, map_bz, math.sqrt(x * x + y * y), z)
                kappa = -q[i] * b_local * C_LIGHT / pt  # signed curvature (1/mm)
                if abs(kappa) < 1e-12:
                    kappa = 1e-12
                phi0 = math.atan2(my, mx)
                tanl = mz / pt
                if exhaustive:
                    best_s, best_j = _helix_next(x, y, z, phi0, kappa, tanl, kind, pos, lo, hi)
                else:
                    best_s, best_j = _helix_next_sorted(
                        x, y, z, phi0, kappa, tanl, pos, lo, hi, cyl, cyl_r, disk, disk_z
                    )
                if best_j < 0 or kill[best_j]:
                    break
                path += best_s * p / pt
                if path > path_limit:
                    break  # loop protection
                ph = phi0 + kappa * best_s
                x = x + (math.sin(ph) - math.sin(phi0)) / kappa
                y = y - (math.cos(ph) - math.cos(phi0)) / kappa
                z = z + tanl * best_s
                mx = pt * math.cos(ph)
                my = pt * math.sin(ph)
                if (
                    sensitive[best_j] and hits_i < max_hits and np.random.random() < efficiency  # noqa: NPY002
                ):
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
            if kind[best_j] == CYLINDER:
                r = math.sqrt(x * x + y * y)
                cos_inc = abs(x * mx + y * my) / (r * p)
            else:
                cos_inc = abs(mz) / p
            t = x0[best_j] / max(cos_inc, 0.02)
            if t <= 0:
                continue
            what = _interacts(
                species[i], p, t, lambda_over_x0, conversions, nuclear, nuclear_per_species
            )
            if what != 0:
                if ni < int_cap:
                    int_part[ni] = i
                    int_kind[ni] = what
                    int_state[ni, 0] = x
                    int_state[ni, 1] = y
                    int_state[ni, 2] = z
                    int_state[ni, 3] = mx
                    int_state[ni, 4] = my
                    int_state[ni, 5] = mz
                ni += 1  # counted past the capacity too: the caller reruns with room
                break
            if q[i] == 0:
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
                    mx, my, mz = _scatter(mx, my, mz, p, theta0)
            if energy_loss:
                # ionisation: Bethe mean plus Landau-like (Moyal) fluctuations of width xi,
                # sampled as -ln(Z^2) with Z ~ N(0, 1), shifted so the mean stays the Bethe mean
                de = SI_DEDX_PER_X0 * t / (beta * beta)
                g = np.random.standard_normal()  # noqa: NPY002
                moyal = -math.log(max(g * g, 1e-300))
                de = max(de + SI_XI_PER_X0 * t / (beta * beta) * (moyal - MOYAL_MEAN), 0.0)
                if species[i] == ELECTRON:
                    de += e * (1.0 - math.exp(-t))  # mean bremsstrahlung loss
                e_new = e - de
                if e_new <= mass[i]:
                    break
                p_new = math.sqrt(e_new * e_new - mass[i] * mass[i])
                if p_new < p_min:
                    break
                f = p_new / p
                mx, my, mz = mx * f, my * f, mz * f
    return nh, ni


def _surfaces_by_position(geo: Geometry) -> tuple[np.ndarray, ...]:
    """(cylinder indices, their radii, disk indices, their z), each pair in ascending order."""
    cyl = np.flatnonzero(geo.kind == CYLINDER)
    disk = np.flatnonzero(geo.kind != CYLINDER)
    cyl = cyl[np.argsort(geo.pos[cyl], kind="stable")]
    disk = disk[np.argsort(geo.pos[disk], kind="stable")]
    return cyl, np.ascontiguousarray(geo.pos[cyl]), disk, np.ascontiguousarray(geo.pos[disk])


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
    loop_fraction: float = 0.0,
    conversions: bool = False,
    nuclear: bool = False,
    lambda_over_x0: float = SI_LAMBDA_OVER_X0,
    nuclear_per_species: bool = False,
    exhaustive_search: bool = False,
) -> dict[str, np.ndarray]:
    """Propagate particles; return their true crossings of sensitive surfaces and interactions.

    Args:
        geo: the detector geometry.
        vertex, momentum: (n, 3) start positions (mm) and momenta (GeV).
        charge, mass, pdg: (n,) per particle; neutral particles fly straight and leave no hits.
        seed: seed of the kernel's random numbers (same seed, same result).
        efficiency: probability that a sensitive crossing leaves a hit.
        scattering, energy_loss: material effects on charged particles.
        p_min: GeV, particles below this momentum are not simulated, or stop when they fall
            below it.
        max_crossings, max_hits: per particle.
        loop_fraction: path limit in units of one full helix turn at the start (ACTS loop
            protection, ACTS default 0.5); 0 disables it.
        conversions: photons convert in the material (probability 1 - exp(-7/9 f(E) x/X0),
            f from :func:`pair_production_fraction`).
        nuclear: hadrons interact inelastically (probability 1 - exp(-x/lambda)).
        lambda_over_x0: lambda_I / X0 of the material (silicon: 4.97).
        nuclear_per_species: lambda = lambda_I x :func:`absorption_scale` (Fatras' per-species
            parametrisation) instead of lambda_I for every hadron.
        exhaustive_search: find each next crossing by solving every surface (the reference the
            default nearest-first search reproduces bit for bit; for tests).

    Returns:
        ``particle`` (index into the inputs), ``surface`` (index into the geometry), ``pos``
        (nh, 3) and ``mom`` (nh, 3) per crossing, in crossing order per particle; and per
        interaction (the particle ends there) ``int_particle``, ``int_kind`` (CONVERSION or
        NUCLEAR), ``int_pos`` (ni, 3), ``int_mom`` (ni, 3) before the interaction.
    """
    n = len(charge)
    vertex = np.ascontiguousarray(vertex, dtype=np.float64).reshape(n, 3)
    momentum = np.ascontiguousarray(momentum, dtype=np.float64).reshape(n, 3)
    if not loop_fraction >= 0:
        raise ValueError(f"loop_fraction must be >= 0 (0 = off), got {loop_fraction}")
    cap = max(1024, int(n * 16))
    int_cap = max(256, n // 4)
    while True:
        out_part = np.empty(cap, np.int64)
        out_surf = np.empty(cap, np.int64)
        out_state = np.empty((cap, 6), np.float64)  # (cap, x y z px py pz)
        int_part = np.empty(int_cap, np.int64)
        int_kind = np.empty(int_cap, np.int8)
        int_state = np.empty((int_cap, 6), np.float64)  # (int_cap, x y z px py pz)
        nh, ni = _propagate(
            vertex[:, 0],
            vertex[:, 1],
            vertex[:, 2],
            momentum[:, 0],
            momentum[:, 1],
            momentum[:, 2],
            np.asarray(charge, np.float64),
            np.asarray(mass, np.float64),
            species_of(pdg),
            geo.kind,
            geo.pos,
            geo.lo,
            geo.hi,
            geo.x_over_x0,
            geo.sensitive,
            geo.kill,
            *_surfaces_by_position(geo),
            bool(exhaustive_search),
            geo.field_tesla,
            *geo.field_map_arrays(),
            float(efficiency),
            bool(scattering),
            bool(energy_loss),
            float(p_min),
            int(max_crossings),
            int(max_hits),
            float(loop_fraction),
            bool(conversions),
            bool(nuclear),
            float(lambda_over_x0),
            bool(nuclear_per_species),
            int(seed) % (2**32),
            out_part,
            out_surf,
            out_state,
            int_part,
            int_kind,
            int_state,
        )
        if nh < cap and ni <= int_cap:
            break
        # output full: rerun with room (same seed, same result)
        cap = cap * 4 if nh >= cap else cap
        int_cap = max(int_cap, 2 * ni)
    return {
        "particle": out_part[:nh],
        "surface": out_surf[:nh],
        "pos": out_state[:nh, :3],
        "mom": out_state[:nh, 3:],
        "int_particle": int_part[:ni],
        "int_kind": int_kind[:ni],
        "int_pos": int_state[:ni, :3],
        "int_mom": int_state[:ni, 3:],
    }
