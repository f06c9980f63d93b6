"""Pixel and strip clusters: the cells a hit's track lights up in its sensor, and their summary.

Cell model (per hit, in the frame of its module; u along r*phi, v along z in the barrel and
along r on the disks, w the sensor normal):

* the track crosses the sensor (thickness ``Geometry.thickness``: 0.15 mm pixel, 0.25 / 0.35 mm
  short / long strip, ACTS GenericDetector) as a straight segment through the true hit
  position, with projection (T d_u / abs(d_w), T d_v / abs(d_w)) on the module plane (capped at
  ``MAX_PATH_CELLS`` cells for grazing tracks);
* the charge is deposited in ``SUBSTEPS_PER_CELL`` points per crossed cell along the segment,
  each carrying the energy of its path length (``DEDX_MPV`` MeV/mm) and displaced by Gaussian
  diffusion ``DIFFUSION`` mm: a cell's charge is proportional to the path length inside it, and
  tracks near a cell boundary share their charge; each cell's charge then fluctuates by a
  Landau-like Moyal factor of relative width ``LANDAU_WIDTH``;
* cells below ``THRESHOLD`` MeV are dropped (the strongest cell of a hit is always kept);
* noise hits (particle id 0, no track) get one cell, or two neighbouring cells with
  probability ``NOISE_TWO_CELLS``, each with a MIP-like charge.

Cell channels are 0-based indices in the module (ch0 along u, ch1 along v), the cell value is
the deposited energy in MeV. :func:`cluster_summary` turns cells into the per-hit branches of
schema.CLUSTER_BRANCHES (simulation and the TrackML import use the same function, so a CSV
round trip reproduces them bit for bit).
"""

# numba kernels draw from numba's own generator (np.random.* inside njit), seeded per event
# ruff: noqa: NPY002
from __future__ import annotations

import math

import numba
import numpy as np

from trackformers.sim.geometry import CYLINDER, Geometry

DEDX_MPV = 0.27  # MeV/mm: most probable energy loss of a MIP in silicon (150-300 um sensors)
LANDAU_WIDTH = 0.15  # relative width of the Moyal factor of each deposit
DIFFUSION = 0.004  # mm: Gaussian spread of the drifting charge in the module plane
THRESHOLD = 0.004  # MeV per cell (about 1100 electrons)
NOISE_TWO_CELLS = 0.3  # probability that a noise hit has two neighbouring cells
MAX_PATH_CELLS = 100.0  # cap on the projected path of grazing tracks, in cells (u + v)
SUBSTEPS_PER_CELL = 2  # charge deposits per crossed cell (at least 2 * this per hit)
MAX_SUBSTEPS = 512


def volume_cells(geo: Geometry) -> dict[int, tuple[float, float, float]]:
    """Per sensitive volume id: (pitch_u, pitch_v, thickness) in mm.

    The pitches are the resolutions times sqrt(12) (the geometry YAML's pitch_u / pitch_v).
    Simulation and import both take them from here, so their cluster summaries agree.

    Args:
        geo: the detector geometry.
    """
    out: dict[int, tuple[float, float, float]] = {}
    thick = geo.thickness if geo.thickness is not None else np.full(geo.n_surfaces, 0.15)
    for s in np.flatnonzero(geo.sensitive):
        vid = int(geo.volume_id[s])
        if vid not in out:
            out[vid] = (
                float(geo.sigma_u[s] * math.sqrt(12.0)),
                float(geo.sigma_v[s] * math.sqrt(12.0)),
                float(thick[s]),
            )
    return out


def hit_cell_sizes(
    geo: Geometry, volume_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pitch_u, pitch_v, thickness) float64 arrays (n,) of hits in volumes ``volume_id``.

    Raises ValueError naming a volume id the geometry does not know.

    Args:
        geo: the detector geometry.
        volume_id: (n,) volume id of each hit.
    """
    table = volume_cells(geo)
    vols = np.asarray(volume_id)
    uniq, inv = np.unique(vols, return_inverse=True)
    missing = [int(v) for v in uniq if int(v) not in table]
    if missing:
        raise ValueError(f"volume id(s) {missing} are not sensitive volumes of the geometry")
    rows = np.asarray([table[int(v)] for v in uniq], dtype=np.float64).reshape(-1, 3)
    per_hit = rows[inv.reshape(-1)]  # (n, 3)
    return per_hit[:, 0], per_hit[:, 1], per_hit[:, 2]


@numba.njit(cache=True)
def _hit_paths(
    kind,
    g_pos,
    g_lo,
    g_hi,
    g_overlap,
    g_z_overlap,
    g_nphi,
    g_nz,
    ring_edges,
    ring_nphi,
    surf,
    x,
    y,
    z,
    mom,
    module,
    cos_c,
    sin_c,
    r,
    pitch_u,
    pitch_v,
    thick,
    noise,
    max_path_cells,
):
    """Each hit in the frame of its module: local position (u, v) from the module corner, the
    projected path (du, dv) through the sensor and its 3-D length, the module size in cells
    (n_u, n_v), and whether the hit has no track (noise flag or zero momentum).

    The module axes: u = (-sin, cos, 0) at the module centre phi (``cos_c``, ``sin_c``), v = z
    in the barrel and the radial direction (cos, sin, 0) on the disks, w the sensor normal.
    The barrel module's z row comes from its id (a module is one row plus ``g_z_overlap``
    long, reaching half of it into each neighbouring row), a disk module's ring from the hit
    radius ``r``; a module is one phi bin / (1 - ``g_overlap``) wide. The path is
    T d_u / abs(d_w), T d_v / abs(d_w) (T the sensor thickness), shrunk to at most
    ``max_path_cells`` cells (u + v) for grazing tracks.
    """
    n = surf.shape[0]
    n_rings = ring_nphi.shape[1]
    u = np.empty(n)
    v = np.empty(n)
    du = np.empty(n)
    dv = np.empty(n)
    length = np.empty(n)
    n_u = np.empty(n, np.int64)
    n_v = np.empty(n, np.int64)
    no_track = np.empty(n, np.bool_)
    for h in range(n):
        j = surf[h]
        c, s = cos_c[h], sin_c[h]
        cyl = kind[j] == CYLINDER
        one_minus_ov = 1.0 - g_overlap[j]
        if cyl:
            n_phi_b = max(g_nphi[j], 1)
            dz = (g_hi[j] - g_lo[j]) / max(g_nz[j], 1)
            iz = (np.int64(module[h]) - 1) // n_phi_b
            half_u = np.pi * g_pos[j] / (n_phi_b * one_minus_ov)
            z_ov = g_z_overlap[j]
            if z_ov > 0:
                v[h] = z[h] - (g_lo[j] + iz * dz - z_ov / 2)
                len_v = dz + z_ov
            else:
                v[h] = z[h] - (g_lo[j] + iz * dz)
                len_v = dz
        else:
            ring = 0
            for k in range(1, n_rings):  # count of inner ring edges at or below r
                if r[h] >= ring_edges[j, k]:
                    ring += 1
            r_lo, r_hi = ring_edges[j, ring], ring_edges[j, ring + 1]
            n_ring = max(ring_nphi[j, ring], 1)
            r_u = r_hi if math.isfinite(r_hi) else r[h]
            half_u = np.pi * r_u / (n_ring * one_minus_ov)
            v[h] = (x[h] * c + y[h] * s) - r_lo
            len_v = r_hi - r_lo if math.isfinite(r_hi) else 1.0
        u[h] = (x[h] * -s + y[h] * c) + half_u
        n_u[h] = np.int64(max(math.ceil(2 * half_u / pitch_u[h]), 1.0))
        n_v[h] = np.int64(max(math.ceil(len_v / pitch_v[h]), 1.0))
        # direction in the module frame, with the sums in the order of np.einsum over (x, y, z)
        mx, my, mz = mom[h, 0], mom[h, 1], mom[h, 2]
        p = math.sqrt((mx * mx + my * my) + mz * mz)
        pn = max(p, 1e-12)
        ex, ey, ez = mx / pn, my / pn, mz / pn
        d_u = (ex * -s + ey * c) + ez * 0.0
        d_r = (ex * c + ey * s) + ez * 0.0
        d_z = (ex * 0.0 + ey * 0.0) + ez * 1.0
        d_v, d_w = (d_z, d_r) if cyl else (d_r, d_z)
        d_w = max(abs(d_w), 1e-6)
        t = thick[h]
        du_h = t * d_u / d_w
        dv_h = t * d_v / d_w
        len_h = t / d_w
        span = abs(du_h) / pitch_u[h] + abs(dv_h) / pitch_v[h]
        shrink = min(1.0, max_path_cells / max(span, 1e-12))
        du[h], dv[h], length[h] = du_h * shrink, dv_h * shrink, len_h * shrink
        no_track[h] = noise[h] or p <= 0
    return u, v, du, dv, length, n_u, n_v, no_track


@numba.njit(cache=True)
def _landau_factor(width):
    """1 + width * Moyal (the Landau approximation: -ln of a chi2(1) variate), at least 0.3."""
    x = np.random.standard_normal()
    return max(1.0 + width * -math.log(max(x * x, 1e-12)), 0.3)


@numba.njit(cache=True)
def _deposit(
    u0,
    v0,
    du,
    dv,
    length,
    pitch_u,
    pitch_v,
    n_u,
    n_v,
    noise,
    energy,
    seed,
    threshold,
    diffusion,
    landau_width,
    noise_two,
    sub_per_cell,
    max_sub,
):
    """Cells of every hit: (hit row, ch0, ch1, value) flat, sorted by hit then (ch0, ch1)."""
    np.random.seed(seed)
    n = u0.shape[0]
    cap = 4 * n + 64
    o_row = np.empty(cap, np.int64)
    o_c0 = np.empty(cap, np.int32)
    o_c1 = np.empty(cap, np.int32)
    o_val = np.empty(cap, np.float64)
    m = 0
    b_c0 = np.empty(max_sub, np.int32)
    b_c1 = np.empty(max_sub, np.int32)
    b_val = np.empty(max_sub, np.float64)
    for h in range(n):
        nb = 0
        pu, pv = pitch_u[h], pitch_v[h]
        if noise[h]:
            i = min(max(int(math.floor(u0[h] / pu)), 0), n_u[h] - 1)
            k = min(max(int(math.floor(v0[h] / pv)), 0), n_v[h] - 1)
            b_c0[0], b_c1[0] = i, k
            nb = 1
            if np.random.random() < noise_two:
                if np.random.random() < 0.5:
                    i2, k2 = (i + 1 if i + 1 < n_u[h] else i - 1), k
                else:
                    i2, k2 = i, (k + 1 if k + 1 < n_v[h] else k - 1)
                if i2 >= 0 and k2 >= 0:
                    b_c0[1], b_c1[1] = i2, k2
                    nb = 2
            for j in range(nb):
                b_val[j] = energy[h] * _landau_factor(landau_width)
        else:
            span = abs(du[h]) / pu + abs(dv[h]) / pv
            ns = min(max(int(math.ceil(sub_per_cell * span)) + sub_per_cell, sub_per_cell), max_sub)
            de = length[h] * DEDX_MPV / ns
            for j in range(ns):
                t = (j + 0.5) / ns - 0.5
                uu = u0[h] + t * du[h] + diffusion * np.random.standard_normal()
                vv = v0[h] + t * dv[h] + diffusion * np.random.standard_normal()
                i = min(max(int(math.floor(uu / pu)), 0), n_u[h] - 1)
                k = min(max(int(math.floor(vv / pv)), 0), n_v[h] - 1)
                e = de
                found = -1
                for q in range(nb - 1, -1, -1):  # consecutive deposits mostly share a cell
                    if b_c0[q] == i and b_c1[q] == k:
                        found = q
                        break
                if found >= 0:
                    b_val[found] += e
                else:
                    b_c0[nb], b_c1[nb], b_val[nb] = i, k, e
                    nb += 1
            for q in range(nb):  # energy-loss fluctuation of each cell's deposit
                b_val[q] *= _landau_factor(landau_width)
            # threshold, keeping the strongest cell
            best = 0
            for q in range(1, nb):
                if b_val[q] > b_val[best]:
                    best = q
            kept = 0
            for q in range(nb):
                if b_val[q] >= threshold or q == best:
                    b_c0[kept], b_c1[kept], b_val[kept] = b_c0[q], b_c1[q], b_val[q]
                    if q == best:
                        best = kept
                    kept += 1
            nb = kept
        # sort this hit's cells by (ch0, ch1): insertion sort, a few cells
        for a in range(1, nb):
            c0, c1, val = b_c0[a], b_c1[a], b_val[a]
            q = a - 1
            while q >= 0 and (b_c0[q] > c0 or (b_c0[q] == c0 and b_c1[q] > c1)):
                b_c0[q + 1], b_c1[q + 1], b_val[q + 1] = b_c0[q], b_c1[q], b_val[q]
                q -= 1
            b_c0[q + 1], b_c1[q + 1], b_val[q + 1] = c0, c1, val
        if m + nb > cap:
            cap = 2 * cap + nb
            o_row = np.concatenate((o_row[:m], np.empty(cap - m, np.int64)))
            o_c0 = np.concatenate((o_c0[:m], np.empty(cap - m, np.int32)))
            o_c1 = np.concatenate((o_c1[:m], np.empty(cap - m, np.int32)))
            o_val = np.concatenate((o_val[:m], np.empty(cap - m, np.float64)))
        for q in range(nb):
            o_row[m], o_c0[m], o_c1[m], o_val[m] = h, b_c0[q], b_c1[q], b_val[q]
            m += 1
    return o_row[:m], o_c0[:m], o_c1[:m], o_val[:m]


def simulate_cells(
    geo: Geometry,
    surf: np.ndarray,
    pos: np.ndarray,
    mom: np.ndarray,
    module: np.ndarray,
    phi_c: np.ndarray,
    noise: np.ndarray,
    seed: int,
    sizes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells of hits on surfaces ``surf`` (n,) at true positions ``pos`` (n, 3) with momenta
    ``mom`` (n, 3), in modules ``module`` centred at ``phi_c``; ``noise`` (n,) marks hits
    without a track. ``sizes``: the hits' (pitch_u, pitch_v, thickness) when already known.

    Args:
        geo: the detector geometry.
        surf: (n,) surface index of each hit.
        pos: (n, 3) true hit positions in mm.
        mom: (n, 3) momenta at the hits in GeV.
        module: (n,) module ids.
        phi_c: (n,) module centre phi.
        noise: (n,) bool, hits without a track.
        seed: random seed of the event's deposits.
        sizes: the hits' (pitch_u, pitch_v, thickness), None to look them up.

    Returns:
        (row, ch0, ch1, value): hit row (n,) index int64, channels int32, value float32 (MeV),
        sorted by row then (ch0, ch1); every hit has at least one cell.
    """
    n = len(surf)
    if n == 0:
        z = np.zeros(0, np.int32)
        return np.zeros(0, np.int64), z, z.copy(), np.zeros(0, np.float32)
    pu, pv, thick = sizes if sizes is not None else hit_cell_sizes(geo, geo.volume_id[surf])
    x, y, z = (np.ascontiguousarray(pos[:, k], np.float64) for k in range(3))
    u, v, du, dv, length, n_u, n_v, is_noise = _hit_paths(
        geo.kind,
        geo.pos,
        geo.lo,
        geo.hi,
        geo.overlap,
        geo.z_overlaps(),
        geo.n_phi,
        geo.n_z,
        geo.ring_edges,
        geo.ring_nphi,
        np.asarray(surf, np.int64),
        x,
        y,
        z,
        np.ascontiguousarray(mom, np.float64),
        np.asarray(module, np.int64),
        np.cos(phi_c),
        np.sin(phi_c),
        np.hypot(x, y),
        pu,
        pv,
        thick,
        np.asarray(noise, np.bool_),
        MAX_PATH_CELLS,
    )
    row, c0, c1, val = _deposit(
        u,
        v,
        du,
        dv,
        length,
        pu,
        pv,
        n_u,
        n_v,
        is_noise,
        thick * DEDX_MPV,
        int(seed) % (2**32),
        THRESHOLD,
        DIFFUSION,
        LANDAU_WIDTH,
        NOISE_TWO_CELLS,
        SUBSTEPS_PER_CELL,
        MAX_SUBSTEPS,
    )
    return row, c0, c1, val.astype(np.float32)


@numba.njit(cache=True)
def _cell_sums(row, ch0, ch1, value, n_hits):
    """Per hit: number of cells, summed value (in cell order, float64) and extent in cells
    (max - min + 1) along ch0 and ch1; zeros for hits without cells. ``row`` is sorted."""
    ncells = np.zeros(n_hits, np.int64)
    charge = np.zeros(n_hits)
    size_u = np.zeros(n_hits, np.int64)
    size_v = np.zeros(n_hits, np.int64)
    m = row.shape[0]
    i = 0
    while i < m:
        h = row[i]
        lo0 = hi0 = ch0[i]
        lo1 = hi1 = ch1[i]
        total = 0.0
        j = i
        while j < m and row[j] == h:
            lo0, hi0 = min(lo0, ch0[j]), max(hi0, ch0[j])
            lo1, hi1 = min(lo1, ch1[j]), max(hi1, ch1[j])
            total += value[j]
            j += 1
        ncells[h] = j - i
        charge[h] = total
        size_u[h] = hi0 - lo0 + 1
        size_v[h] = hi1 - lo1 + 1
        i = j
    return ncells, charge, size_u, size_v


def cluster_summary(
    row: np.ndarray,
    ch0: np.ndarray,
    ch1: np.ndarray,
    value: np.ndarray,
    n_hits: int,
    pitch_u: np.ndarray,
    pitch_v: np.ndarray,
    thickness: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-hit cluster branches (schema.CLUSTER_BRANCHES) from cells.

    Args:
        row: (m,) int hit row of each cell, non-decreasing (cells grouped by hit).
        ch0, ch1: (m,) int channels along the module's u and v axes.
        value: (m,) float32 cell values (MeV).
        n_hits: number of hits.
        pitch_u, pitch_v, thickness: (n_hits,) float64 cell pitches and sensor thickness, mm.

    Returns:
        hit_ncells, hit_charge (sum of values, summed in cell order in float64), hit_size_u,
        hit_size_v (extent in cells, max - min + 1), hit_leta = asinh(T / hypot(l_u, l_v)) and
        hit_lphi = atan2(l_v, l_u) with l = size * pitch: the local direction estimate of the
        cluster (the "leta/lphi" cluster-shape features of the TrackML GNN trackers). Hits
        without cells get zeros.
    """
    row = np.asarray(row, np.int64)
    if len(row) > 1 and np.any(np.diff(row) < 0):
        raise ValueError("cluster_summary: cells must be grouped by hit (row non-decreasing)")
    if len(row) and (row[0] < 0 or row[-1] >= n_hits):
        raise ValueError(
            f"cluster_summary: cell hit rows must lie in [0, {n_hits}), got {row[0]}..{row[-1]}"
        )
    ncells, charge, size_u, size_v = _cell_sums(
        row,
        np.asarray(ch0, np.int64),
        np.asarray(ch1, np.int64),
        np.asarray(value, np.float64),
        int(n_hits),
    )
    has = ncells > 0
    l_u = size_u * np.asarray(pitch_u, np.float64)
    l_v = size_v * np.asarray(pitch_v, np.float64)
    l_uv = np.hypot(l_u, l_v)
    with np.errstate(divide="ignore", invalid="ignore"):
        leta = np.where(has, np.arcsinh(np.asarray(thickness) / np.where(has, l_uv, 1.0)), 0.0)
    lphi = np.where(has, np.arctan2(l_v, l_u), 0.0)
    return {
        "hit_ncells": ncells.astype(np.int32),
        "hit_charge": charge.astype(np.float32),
        "hit_size_u": size_u.astype(np.int32),
        "hit_size_v": size_v.astype(np.int32),
        "hit_leta": leta.astype(np.float32),
        "hit_lphi": lphi.astype(np.float32),
    }


def event_clusters(
    geo: Geometry,
    surf: np.ndarray,
    pos: np.ndarray,
    mom: np.ndarray,
    module: np.ndarray,
    phi_c: np.ndarray,
    noise: np.ndarray,
    hit_id: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """Cluster summary and cell branches of one simulated event (hits in final order).

    Args:
        geo: the detector geometry.
        surf: (n,) surface index of each hit.
        pos: (n, 3) true hit positions in mm.
        mom: (n, 3) momenta at the hits in GeV.
        module: (n,) module ids.
        phi_c: (n,) module centre phi.
        noise: (n,) bool, hits without a track.
        hit_id: (n,) hit ids (the cells' ``cell_hit_id``).
        seed: random seed of the event's deposits.

    Returns:
        ``hit_ncells``, ``hit_charge``, ... and the ``cell_*`` branches, keyed by schema names.
    """
    pu, pv, thick = sizes = hit_cell_sizes(geo, geo.volume_id[surf])
    row, c0, c1, val = simulate_cells(geo, surf, pos, mom, module, phi_c, noise, seed, sizes)
    out = cluster_summary(row, c0, c1, val, len(surf), pu, pv, thick)
    out.update(
        cell_hit_id=np.asarray(hit_id, np.uint64)[row],
        cell_ch0=c0,
        cell_ch1=c1,
        cell_value=val,
    )
    return out
