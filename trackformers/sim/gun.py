"""Particle gun: n particles from one beam-spot vertex, flat in pT (or log pT), eta and phi."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from trackformers.sim.beamspot import BEAMSPOTS, DEFAULT_BEAMSPOT
from trackformers.sim.particle_id import encode_particle_id

# |pdg| -> (mass GeV, charge of the positive pdg code)
GUN_SPECIES = {
    11: (0.000511, -1),
    13: (0.105658, -1),
    211: (0.139570, 1),
    321: (0.493677, 1),
    2212: (0.938272, 1),
}


@dataclass
class GunConfig:
    """Particle-gun settings (``process=gun``): ranges sampled uniformly per particle."""

    n_particles: tuple[int, int] = (10, 10)  # inclusive range, uniform
    pt: tuple[float, float] = (1.0, 10.0)  # GeV
    pt_spectrum: str = "uniform"  # "uniform" or "log"
    eta: tuple[float, float] = (-1.0, 1.0)
    phi: tuple[float, float] = (-np.pi, np.pi)
    charge: int = 0  # +1, -1, or 0 for random signs
    pdg_id: int = 13
    # vertex spread (mm), filled from the ``vertex`` settings section by build_generator
    sigma_xy: float = BEAMSPOTS[DEFAULT_BEAMSPOT]["sigma_xy"]
    sigma_z: float = BEAMSPOTS[DEFAULT_BEAMSPOT]["sigma_z"]

    def check(self) -> None:
        """Raise ValueError naming the first ``gun.*`` setting out of range."""
        lo, hi = self.n_particles
        if lo < 0 or hi < lo:
            raise ValueError(f"gun.n_particles must be a range 0 <= min <= max, got {lo}, {hi}")
        if not 0 < self.pt[0] <= self.pt[1]:
            raise ValueError(f"gun.pt must be a positive range, got {self.pt}")
        if self.eta[1] < self.eta[0] or self.phi[1] < self.phi[0]:
            raise ValueError(f"gun.eta / gun.phi ranges must be ordered: {self.eta}, {self.phi}")
        if self.pt_spectrum not in ("uniform", "log"):
            raise ValueError(
                f"gun.pt_spectrum must be 'uniform' or 'log', not {self.pt_spectrum!r}"
            )
        if self.charge not in (-1, 0, 1):
            raise ValueError(f"gun.charge must be -1, 0 (random) or 1, got {self.charge}")
        if abs(self.pdg_id) not in GUN_SPECIES:
            raise ValueError(f"gun.pdg_id {self.pdg_id} unknown; choose from {list(GUN_SPECIES)}")


class ParticleGun:
    """Generate particle tables (see :mod:`trackformers.sim.detector`) from a :class:`GunConfig`."""

    def __init__(self, config: GunConfig):
        config.check()
        self.config = config

    def provenance(self) -> dict:
        """Gun settings, stored with the simulated files."""
        return {"gun": asdict(self.config)}

    def event(self, rng: np.random.Generator, index: int = 0) -> tuple[dict, int]:
        """Particles of one gun event, all from the origin.

        Args:
            rng: random generator of the event.
            index: event index (unused: the gun depends on ``rng`` only).

        Returns:
            The particle table and the number of pile-up vertices (0).
        """
        c = self.config
        n = int(rng.integers(c.n_particles[0], c.n_particles[1] + 1))
        if c.pt_spectrum == "log":
            pt = np.exp(rng.uniform(np.log(c.pt[0]), np.log(c.pt[1]), n))
        else:
            pt = rng.uniform(c.pt[0], c.pt[1], n)
        eta = rng.uniform(c.eta[0], c.eta[1], n)
        phi = rng.uniform(c.phi[0], c.phi[1], n)
        q = rng.choice([-1, 1], n) if c.charge == 0 else np.full(n, c.charge)
        mass, q_pos = GUN_SPECIES[abs(c.pdg_id)]
        pdg = abs(c.pdg_id) * q * q_pos
        vtx = [rng.normal(0, c.sigma_xy), rng.normal(0, c.sigma_xy), rng.normal(0, c.sigma_z)]
        particles = {
            "particle_id": encode_particle_id(np.zeros(n), np.arange(n)),
            "pdg_id": pdg.astype(np.int64),
            "vertex_id": np.zeros(n, np.int64),
            "vx": np.full(n, vtx[0]),
            "vy": np.full(n, vtx[1]),
            "vz": np.full(n, vtx[2]),
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": pt * np.sinh(eta),
            "q": q.astype(np.float64),
            "mass": np.full(n, mass),
        }
        return particles, 0
