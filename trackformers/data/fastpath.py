"""Numba loops for the per-chunk hot path of the loader (one pass each, no temporaries).

    row = join_particle_rows(hit_pid, hit_offsets, part_pid, part_offsets)   # (N,) -1 = none
    params = track_parameters(px, py, pz, vx, vy, vz, q, bz)                 # (npart, 9) f64
    out, valid, pt = gather_targets(row, table, pt, pt_min)                  # per hit

The join matches every hit to the flat row of its particle in the same event with a small
open-addressing hash table per event (O(hits + particles), ~10 ns per hit), whatever the id
values (dense 1..n, vertex-encoded ``vertex << 32 | i``, TrackML 64-bit ids). The parameter
kernel evaluates the formulas of :func:`trackformers.data.features.perigee` in float64 per
particle; the gather writes per-hit float32 targets with NaN where the target is invalid.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# columns of the track_parameters table
PARAM_COLUMNS = ("pt", "eta", "theta", "phi", "sin_phi", "cos_phi", "q_over_pt", "d0", "z0")


@numba.njit(cache=True, nogil=True)
def _join(hit_pid, hit_off, part_pid, part_off, out):  # pragma: no cover - compiled
    n_ev = len(hit_off) - 1
    max_np = 0
    for e in range(n_ev):
        max_np = max(max_np, part_off[e + 1] - part_off[e])
    bits = 4
    while (1 << bits) < 2 * max_np:
        bits += 1
    size = 1 << bits
    mask = size - 1
    shift = np.uint64(64 - bits)
    keys = np.zeros(size, dtype=np.uint64)
    slots = np.full(size, -1, dtype=np.int64)
    for e in range(n_ev):
        c, d = part_off[e], part_off[e + 1]
        for p in range(c, d):  # insert; on a duplicate id the first row is kept
            k = part_pid[p]
            h = np.int64((k * _GOLDEN) >> shift)
            while slots[h] >= 0 and keys[h] != k:
                h = (h + 1) & mask
            if slots[h] < 0:
                keys[h] = k
                slots[h] = p
        for i in range(hit_off[e], hit_off[e + 1]):
            k = hit_pid[i]
            r = -1
            if k != 0 and d > c:
                h = np.int64((k * _GOLDEN) >> shift)
                while slots[h] >= 0:
                    if keys[h] == k:
                        r = slots[h]
                        break
                    h = (h + 1) & mask
            out[i] = r
        for p in range(c, d):  # clear only the slots this event used
            k = part_pid[p]
            h = np.int64((k * _GOLDEN) >> shift)
            while slots[h] >= 0:
                slots[h] = -1
                h = (h + 1) & mask


def join_particle_rows(
    hit_pid: np.ndarray, hit_offsets: np.ndarray, part_pid: np.ndarray, part_offsets: np.ndarray
) -> np.ndarray:
    """(N,) int64 flat particle row of each hit's particle within its event; -1 for id 0 (noise)
    and ids missing from the event's particle table. Duplicate particle ids: first row wins.

    Args:
        hit_pid: (N,) particle id of each hit.
        hit_offsets: (n + 1,) hit offsets of the events.
        part_pid: (P,) particle ids of the tables.
        part_offsets: (n + 1,) particle offsets of the events.
    """
    out = np.empty(len(hit_pid), dtype=np.int64)  # (N,)
    _join(
        np.ascontiguousarray(hit_pid).view(np.uint64)
        if hit_pid.dtype.itemsize == 8
        else hit_pid.astype(np.uint64),
        np.ascontiguousarray(hit_offsets, dtype=np.int64),
        np.ascontiguousarray(part_pid).view(np.uint64)
        if part_pid.dtype.itemsize == 8
        else part_pid.astype(np.uint64),
        np.ascontiguousarray(part_offsets, dtype=np.int64),
        out,
    )
    return out


@numba.njit(cache=True, nogil=True)
def _params(px, py, pz, vx, vy, vz, q, bz, mm_per_gev_per_t, want, out):  # pragma: no cover
    nan = np.nan
    helix = want[7] or want[8]
    for i in range(len(px)):
        pt = math.hypot(px[i], py[i])
        safe_pt = max(pt, 1e-12)
        ux, uy = px[i] / safe_pt, py[i] / safe_pt
        cot = pz[i] / safe_pt
        d0 = z0 = nan
        if not helix:
            pass
        elif q[i] != 0 and bz != 0:
            r = pt * mm_per_gev_per_t / max(abs(bz), 1e-12)
            s = 1.0 if q[i] * bz > 0 else -1.0
            cx, cy = vx[i] + r * s * uy, vy[i] - r * s * ux  # circle centre
            dc = max(math.hypot(cx, cy), 1e-12)
            ppx, ppy = cx - r * cx / dc, cy - r * cy / dc  # closest point to the z axis
            nx, ny = (cx - ppx) / r, (cy - ppy) / r
            tx, ty = -s * ny, s * nx  # direction of motion at the closest point
            d0 = tx * ppy - ty * ppx
            # angle from V to P seen from the centre, in (-pi, pi]: one atan2 of cross and dot
            ax, ay, bx, by = vx[i] - cx, vy[i] - cy, ppx - cx, ppy - cy
            dphi = math.atan2(ax * by - ay * bx, ax * bx + ay * by)
            z0 = vz[i] + (-s * dphi * r) * cot
        else:  # straight line: closest point V - (V.u) u
            d0 = ux * vy[i] - uy * vx[i]
            z0 = vz[i] - (vx[i] * ux + vy[i] * uy) * cot
        out[i, 0] = pt
        out[i, 1] = math.asinh(cot) if want[1] else nan
        out[i, 2] = math.atan2(pt, pz[i]) if want[2] else nan
        out[i, 3] = math.atan2(py[i], px[i]) if want[3] else nan
        out[i, 4] = uy
        out[i, 5] = ux
        out[i, 6] = q[i] / safe_pt
        out[i, 7] = d0
        out[i, 8] = z0


def track_parameters(
    px, py, pz, vx, vy, vz, q, bz: float, mm_per_gev_per_t: float, columns=PARAM_COLUMNS
) -> np.ndarray:
    """(npart, 9) float64 parameters in PARAM_COLUMNS order (see features.perigee); columns
    not in ``columns`` may be left NaN (pt, sin/cos phi and q/pt are always filled).

    Args:
        px: (npart,) momentum x in GeV.
        py: (npart,) momentum y.
        pz: (npart,) momentum z.
        vx: (npart,) production vertex x in mm.
        vy: (npart,) vertex y.
        vz: (npart,) vertex z.
        q: (npart,) charge.
        bz: solenoid field in T.
        mm_per_gev_per_t: curvature constant (mm per GeV per T).
        columns: the parameters wanted.
    """
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)
    want = np.array([c in columns for c in PARAM_COLUMNS], dtype=np.bool_)
    out = np.empty((len(px), len(PARAM_COLUMNS)), dtype=np.float64)  # (npart, 9)
    _params(
        f64(px),
        f64(py),
        f64(pz),
        f64(vx),
        f64(vy),
        f64(vz),
        f64(q),
        float(bz),
        float(mm_per_gev_per_t),
        want,
        out,
    )
    return out


@numba.njit(cache=True, nogil=True)
def _gather(row, table, pt, pt_min, out, valid, hit_pt):  # pragma: no cover - compiled
    n_cols = table.shape[1]
    nan = np.float32(np.nan)
    for i in range(len(row)):
        r = row[i]
        ok = r >= 0 and pt[r] >= pt_min
        valid[i] = ok
        hit_pt[i] = np.float32(pt[r]) if r >= 0 else nan
        for j in range(n_cols):
            out[i, j] = table[r, j] if ok else nan


def gather_targets(
    row: np.ndarray, table: np.ndarray, pt: np.ndarray, pt_min: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-hit (N, P) float32 rows of ``table`` (npart, P) float32, NaN where not valid;
    valid (N,) bool = has a particle with pt >= pt_min; hit pt (N,) float32, NaN without one.

    Args:
        row: (N,) particle row of each hit, -1 for none.
        table: (npart, P) float32 particle parameters.
        pt: (npart,) particle pT in GeV.
        pt_min: hits of particles below it are not valid.
    """
    n = len(row)
    out = np.empty((n, table.shape[1]), dtype=np.float32)  # (N, P)
    valid = np.empty(n, dtype=np.bool_)  # (N,)
    hit_pt = np.empty(n, dtype=np.float32)  # (N,)
    _gather(
        np.ascontiguousarray(row, dtype=np.int64),
        np.ascontiguousarray(table, dtype=np.float32),
        np.ascontiguousarray(pt, dtype=np.float64),
        float(pt_min),
        out,
        valid,
        hit_pt,
    )
    return out, valid, hit_pt


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once, e.g. at DataLoader worker start,
    so the first chunk does not pay the ~0.5 s start-up of numba."""
    one = np.ones(1, dtype=np.uint64)
    span = np.array([0, 1], dtype=np.int64)
    row = join_particle_rows(one, span, one, span)
    table = track_parameters(*[np.ones(1)] * 7, 2.0, 1000.0)
    gather_targets(row, table.astype(np.float32), table[:, 0], 0.0)
