"""Noise hits: random hits on the sensitive surfaces, particle id 0 and TrackML weight 0.

Rate. TrackML events carry noise hits, marked in the truth file by ``particle_id`` 0 (and
weight 0); see Amrouche et al., "The Tracking Machine Learning challenge: Accuracy phase",
arXiv:1904.06778, and the dataset description of the TrackML library / Kaggle data page. The
figure used here is measured on the public mu = 200 training event 1000: its hits file holds
120 939 hits, of which 103 305 belong to a particle (``truth.particle_id != 0``), leaving
17 634 noise hits = 0.171 per particle hit (14.6 % of all hits). The rate is set per particle
hit (Poisson mean ``noise_fraction * n_particle_hits``), so an event of any pile-up keeps
TrackML's noise-to-signal ratio; at mu = 200 it gives TrackML's ~17.6 k noise hits.

Spread. Noise hits are spread uniformly over the sensitive area (equal density per mm^2 on
every layer and disk, so each volume receives its share of the total sensitive area), each at
a uniform position on its surface, and get the module id of that position.

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


def noise_hits(
    geo: Geometry, n_particle_hits: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw Poisson(``fraction * n_particle_hits``) noise hits uniform over the sensitive area.

    Args:
        geo: the detector geometry.
        n_particle_hits: number of particle hits of the event (sets the Poisson mean).
        fraction: noise hits per particle hit (>= 0).
        rng: random generator of the event.

    Returns:
        ``surface`` (n,) int surface index of each noise hit and ``pos`` (n, 3) float64 its
        global position (mm) on that surface.
    """
    n = int(rng.poisson(fraction * n_particle_hits)) if fraction > 0 else 0
    area = geo.area()  # (S,) mm^2, 0 for passive surfaces
    surf = rng.choice(geo.n_surfaces, size=n, p=area / area.sum())
    phi = rng.uniform(-np.pi, np.pi, n)
    cyl = geo.kind[surf] == CYLINDER
    lo, hi = geo.lo[surf], geo.hi[surf]
    r = np.where(cyl, geo.pos[surf], np.sqrt(rng.uniform(lo**2, hi**2)))  # disks: uniform in area
    z = np.where(cyl, rng.uniform(lo, hi), geo.pos[surf])
    pos = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)  # (n, 3)
    return surf, pos
