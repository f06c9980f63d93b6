"""Noise hits: random hits on the sensitive surfaces, particle id 0 and TrackML weight 0.

Rate. TrackML events carry noise hits, marked in the truth file by ``particle_id`` 0 (and
weight 0); see Amrouche et al., "The Tracking Machine Learning challenge: Accuracy phase",
arXiv:1904.06778, and the dataset description of the TrackML library / Kaggle data page. The
figure used here is counted on the public mu = 200 training event 1000 (no rate is quoted in
the paper text we could read): its hits file holds 120 939 hits (120 940 lines with the
header), of which 103 305 belong to a particle (``truth.particle_id != 0``), leaving
17 634 noise hits = 0.171 per particle hit (14.6 % of all hits). The rate is set per particle
hit (Poisson mean ``noise_fraction * n_particle_hits``), so an event of any pile-up keeps
TrackML's noise-to-signal ratio; at mu = 200 it gives TrackML's ~17.6 k noise hits.

Spread (``detector.noise_spread``). ``area`` (default): uniform over the sensitive area, equal
density per mm^2 on every layer and disk, so each volume receives its share of the total
sensitive area (pixel volumes ~4 %). ``module``: the same mean count in every module (pixel
~17 %). ``channel``: the same mean count per readout channel (pixel ~74 %, since a pixel is
~35x smaller than a short-strip cell). Which one TrackML used is not stated in the material
we could read; the per-volume share of particle-id-0 hits in a real TrackML event decides it.
Each noise hit gets the module id of its position.

Default by process (conf/simulate.yaml ``detector.noise_fraction: null``): the physics
processes (ttbar, tth, minbias) get TrackML's rate; the particle gun and re-simulated particle
tables get none, since they serve controlled single-particle and hit-count studies (set
``detector.noise_fraction=0.171`` to add TrackML's noise to them).
"""

from __future__ import annotations

import numpy as np

from trackformers.sim.geometry import CYLINDER, Geometry

TRACKML_EVENT1000_HITS = 120_939  # hits file of TrackML training event 1000 (mu = 200)
TRACKML_EVENT1000_PARTICLE_HITS = 103_305  # of them with a particle (truth particle_id != 0)
TRACKML_NOISE_FRACTION = round(
    (TRACKML_EVENT1000_HITS - TRACKML_EVENT1000_PARTICLE_HITS) / TRACKML_EVENT1000_PARTICLE_HITS,
    3,
)  # 0.171 noise hits per particle hit
NOISY_PROCESSES = ("ttbar", "tth", "minbias")


def default_noise_fraction(process: str) -> float:
    """Noise hits per particle hit when ``detector.noise_fraction`` is null.

    Args:
        process: the process name (``process.name`` of the settings).

    Returns:
        :data:`TRACKML_NOISE_FRACTION` for the physics processes, 0.0 otherwise.
    """
    return TRACKML_NOISE_FRACTION if process in NOISY_PROCESSES else 0.0


NOISE_SPREADS = ("area", "module", "channel")


def noise_regions(geo: Geometry, spread: str = "area") -> dict[str, np.ndarray]:
    """Regions noise hits are drawn from (a barrel layer, or one ring of a disk) and their weights.

    Args:
        geo: the detector geometry.
        spread: ``area`` (equal density per mm^2), ``module`` (equal mean count per module) or
            ``channel`` (equal mean count per readout channel: area / (pitch_u x pitch_v), with
            pitch = resolution x sqrt(12), so pixels get far more noise per mm^2 than strips).

    Returns:
        ``surface`` (G,) int, ``lo``/``hi`` (G,) the region's z range (barrel) or r range (disk
        ring) in mm, and ``p`` (G,) the probability that a noise hit falls in the region.
    """
    if spread not in NOISE_SPREADS:
        raise ValueError(f"detector.noise_spread must be one of {NOISE_SPREADS}, got {spread!r}")
    surf, lo, hi, n_mod = [], [], [], []
    for s in np.flatnonzero(geo.sensitive):
        if geo.kind[s] == CYLINDER:
            surf.append(s), lo.append(geo.lo[s]), hi.append(geo.hi[s])
            n_mod.append(geo.n_phi[s] * geo.n_z[s])
            continue
        for i in np.flatnonzero(geo.ring_nphi[s] > 0):
            r0 = max(geo.ring_edges[s, i], geo.lo[s])
            r1 = min(geo.ring_edges[s, i + 1], geo.hi[s])
            surf.append(s), lo.append(r0), hi.append(r1), n_mod.append(geo.ring_nphi[s, i])
    surf, lo, hi = np.asarray(surf), np.asarray(lo, float), np.asarray(hi, float)
    cyl = geo.kind[surf] == CYLINDER
    area = np.where(cyl, 2 * np.pi * geo.pos[surf] * (hi - lo), np.pi * (hi**2 - lo**2))
    weight = {
        "area": area,
        "module": np.asarray(n_mod, float),
        "channel": area / (12.0 * geo.sigma_u[surf] * geo.sigma_v[surf]),  # pitch = sigma*sqrt(12)
    }[spread]
    return {"surface": surf, "lo": lo, "hi": hi, "p": weight / weight.sum()}


def noise_hits(
    geo: Geometry,
    n_particle_hits: int,
    fraction: float,
    rng: np.random.Generator,
    spread: str = "area",
) -> tuple[np.ndarray, np.ndarray]:
    """Draw Poisson(``fraction * n_particle_hits``) noise hits over the sensitive surfaces.

    Args:
        geo: the detector geometry.
        n_particle_hits: number of particle hits of the event (sets the Poisson mean).
        fraction: noise hits per particle hit (>= 0).
        rng: random generator of the event.
        spread: how they are shared between regions (:func:`noise_regions`); inside a region
            the position is uniform in area.

    Returns:
        ``surface`` (n,) int surface index of each noise hit and ``pos`` (n, 3) float64 its
        global position (mm) on that surface.
    """
    n = int(rng.poisson(fraction * n_particle_hits)) if fraction > 0 else 0
    reg = noise_regions(geo, spread)
    pick = rng.choice(len(reg["p"]), size=n, p=reg["p"])  # (n,) region of each noise hit
    surf, lo, hi = reg["surface"][pick], reg["lo"][pick], reg["hi"][pick]
    phi = rng.uniform(-np.pi, np.pi, n)
    cyl = geo.kind[surf] == CYLINDER
    r = np.where(cyl, geo.pos[surf], np.sqrt(rng.uniform(lo**2, hi**2)))  # disks: uniform in area
    z = np.where(cyl, rng.uniform(lo, hi), geo.pos[surf])
    pos = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)  # (n, 3)
    return surf, pos
