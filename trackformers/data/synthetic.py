"""Schema-complete events from exact helices through barrel cylinders, for tests and benchmarks.

Not a detector simulation (that is trackformers.sim): no material, no smearing, no modules.
Hits are the exact crossings of each charged particle's helix (Bz) with the barrel layers of
DESIGN.md, so track parameters computed from the particle truth can be checked against them.
"""

from __future__ import annotations

import numpy as np

from trackformers.data.features import B_FIELD_T, MM_PER_GEV_PER_T
from trackformers.data.schema import PROCESS_GENERATOR

BARREL_LAYERS = (  # (volume, layer, radius mm, half length mm)
    (8, 2, 32.0, 491.0),
    (8, 4, 72.0, 491.0),
    (8, 6, 116.0, 491.0),
    (8, 8, 172.0, 491.0),
    (13, 2, 260.0, 1084.0),
    (13, 4, 360.0, 1084.0),
    (13, 6, 500.0, 1084.0),
    (13, 8, 660.0, 1084.0),
    (17, 2, 820.0, 1084.0),
    (17, 4, 1020.0, 1084.0),
)


def helix_crossings(vx, vy, vz, px, py, pz, q, radius, bz=B_FIELD_T):
    """First crossing (x, y, z, arc) of one particle's helix with the cylinder r = radius;
    None if it never gets there.

    Args:
        vx: production vertex x in mm.
        vy: vertex y.
        vz: vertex z.
        px: momentum x in GeV.
        py: momentum y.
        pz: momentum z.
        q: charge.
        radius: cylinder radius in mm.
        bz: solenoid field in T.
    """
    pt = np.hypot(px, py)
    ux, uy = px / pt, py / pt
    s = np.sign(q * bz)
    R = pt * MM_PER_GEV_PER_T / abs(bz)
    cx, cy = vx + R * s * uy, vy - R * s * ux
    d = np.hypot(cx, cy)
    a = (radius**2 - R**2 + d**2) / (2 * d)
    h2 = radius**2 - a**2
    if h2 < 0:
        return None
    h = np.sqrt(h2)
    best = None
    for sign in (1.0, -1.0):
        x = a * cx / d - sign * h * cy / d
        y = a * cy / d + sign * h * cx / d
        dphi = np.arctan2(y - cy, x - cx) - np.arctan2(vy - cy, vx - cx)
        arc = (-s * dphi) % (2 * np.pi) * R  # forward distance along the motion
        if best is None or arc < best[3]:
            best = (x, y, vz + arc * pz / pt, arc)
    return best


def helix_event(
    rng: np.random.Generator,
    event_id: int,
    n_particles: int = 20,
    noise_fraction: float = 0.05,
    pt_range=(0.5, 10.0),
    eta_max: float = 1.5,
    d0_sigma: float = 0.05,
    z_sigma: float = 30.0,
) -> dict:
    """One schema-complete event (dict keyed by schema names).

    Args:
        rng: random generator.
        event_id: the event's id.
        n_particles: particles of the event.
        noise_fraction: noise hits per particle hit.
        pt_range: (min, max) pT in GeV.
        eta_max: abs(eta) bound.
        d0_sigma: transverse vertex spread in mm.
        z_sigma: longitudinal vertex spread in mm.
    """
    pt = rng.uniform(*pt_range, n_particles)
    phi = rng.uniform(-np.pi, np.pi, n_particles)
    eta = rng.uniform(-eta_max, eta_max, n_particles)
    q = rng.choice([-1, 1], n_particles)
    vx, vy = rng.normal(0, d0_sigma, (2, n_particles))
    vz = rng.normal(0, z_sigma, n_particles)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    pid = np.arange(1, n_particles + 1, dtype=np.uint64) + np.uint64(1000 * (event_id % 1000))
    rows: list[tuple] = []
    for i in range(n_particles):
        for vol, lay, rad, half in BARREL_LAYERS:
            c = helix_crossings(vx[i], vy[i], vz[i], px[i], py[i], pz[i], q[i], rad)
            if c is None or abs(c[2]) > half:
                continue
            rows.append((c[0], c[1], c[2], vol, lay, pid[i], i))
    n_noise = int(noise_fraction * len(rows))
    for _ in range(n_noise):
        vol, lay, rad, half = BARREL_LAYERS[rng.integers(len(BARREL_LAYERS))]
        ph = rng.uniform(-np.pi, np.pi)
        rows.append((rad * np.cos(ph), rad * np.sin(ph), rng.uniform(-half, half), vol, lay, 0, -1))
    rows.sort(key=lambda r: (r[3], r[4]))
    n = len(rows)
    col = lambda j, dt: np.array([r[j] for r in rows], dtype=dt)
    owner = np.array([r[6] for r in rows], dtype=np.int64)
    sig = owner >= 0
    nhits = np.bincount(owner[sig], minlength=n_particles).astype(np.int32)
    x, y, z = col(0, np.float32), col(1, np.float32), col(2, np.float32)
    t = lambda a: np.where(sig, a, 0).astype(np.float32)
    own = np.where(sig, owner, 0)
    return {
        "event_id": np.uint64(event_id),
        "pileup": np.int32(0),
        "hit_id": np.arange(1, n + 1, dtype=np.uint64),
        "hit_x": x,
        "hit_y": y,
        "hit_z": z,
        "hit_volume_id": col(3, np.int32),
        "hit_layer_id": col(4, np.int32),
        "hit_module_id": np.zeros(n, dtype=np.int32),
        "hit_particle_id": col(5, np.uint64),
        "hit_weight": np.where(sig, 1.0 / max(sig.sum(), 1), 0).astype(np.float32),
        "hit_tx": t(x),
        "hit_ty": t(y),
        "hit_tz": t(z),
        "hit_tpx": t(px[own]),
        "hit_tpy": t(py[own]),
        "hit_tpz": t(pz[own]),
        "part_particle_id": pid,
        "part_pdg_id": np.where(q > 0, -13, 13).astype(np.int32),
        "part_vertex_id": np.zeros(n_particles, dtype=np.int32),
        "part_vx": vx.astype(np.float32),
        "part_vy": vy.astype(np.float32),
        "part_vz": vz.astype(np.float32),
        "part_px": px.astype(np.float32),
        "part_py": py.astype(np.float32),
        "part_pz": pz.astype(np.float32),
        "part_q": q.astype(np.int32),
        "part_nhits": nhits,
        "part_parent_id": np.zeros(n_particles, np.uint64),
        "part_process": np.full(n_particles, PROCESS_GENERATOR, np.int32),
    }


def helix_events(n_events: int, seed: int = 0, first_id: int = 0, **kwargs) -> list[dict]:
    """Synthetic helix events (:func:`helix_event`) with consecutive event ids.

    Args:
        n_events: number of events.
        seed: random seed of all of them.
        first_id: event id of the first.
        **kwargs: passed on to :func:`helix_event`.

    Returns:
        Schema-complete event dicts.
    """
    rng = np.random.default_rng(seed)
    return [helix_event(rng, first_id + i, **kwargs) for i in range(n_events)]
