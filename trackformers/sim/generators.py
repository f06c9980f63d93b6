"""Event sources by process name: the particle gun, Pythia8 physics, or a particle table.

:func:`build_generator` turns the ``process`` config section into an object with
``event(rng, index) -> (particle_table, n_pileup_vertices)`` and ``provenance() -> dict``.
Every error in the settings is raised here, before any event is generated.
"""

from __future__ import annotations

from collections.abc import Mapping

from trackformers.sim.beamspot import vertex_widths
from trackformers.sim.gun import GunConfig, ParticleGun
from trackformers.sim.particle_table import ParticleTableSource
from trackformers.sim.pythia import PythiaSource

PHYSICS_PROCESSES = ("ttbar", "tth", "minbias")
PROCESSES = ("gun", *PHYSICS_PROCESSES, "particles")


def _tuple(v):
    return tuple(v) if isinstance(v, list | tuple) else (v, v)


def build_generator(process: Mapping, pileup: Mapping | None = None, seed: int = 0):
    """Build the event source for ``process`` (a mapping with key ``name``).

    Args:
        process: the ``process`` settings section (conf/simulate/process/<name>.yaml).
        pileup: ``mu`` (mean pile-up) plus the ``vertex`` section (``sigma_xy``, ``sigma_z`` in
            mm; TrackML's beam spot where absent), used by every process that makes vertices.
        seed: dataset seed (Pythia's min-bias library).

    Returns:
        An object with ``event(rng, index) -> (particle_table, n_pileup)`` and ``provenance()``.
    """
    process = dict(process)
    name = process.pop("name", None)
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {list(PROCESSES)}")
    pileup = dict(pileup or {})
    mu = float(pileup.get("mu", 0.0))
    if not mu >= 0:  # also catches NaN
        raise ValueError(f"pileup.mu must be >= 0, got {mu}")
    if name == "gun":
        if mu > 0:
            raise ValueError(
                "the particle gun has no pile-up; use pileup.mu=0 or a physics process"
            )
        misplaced = sorted({"sigma_xy", "sigma_z"} & set(process))
        if misplaced:
            raise ValueError(
                f"process.{misplaced[0]}: the gun takes its vertex spread from the vertex "
                "section like every process (vertex=trackml|hllhc, vertex.sigma_z=...)"
            )
        sigma_xy, sigma_z = vertex_widths(
            {k: pileup[k] for k in ("sigma_xy", "sigma_z") if k in pileup}
        )
        cfg = GunConfig(
            **{
                k: (_tuple(v) if k in ("n_particles", "pt", "eta", "phi") else v)
                for k, v in process.items()
            },
            sigma_xy=sigma_xy,
            sigma_z=sigma_z,
        )
        return ParticleGun(cfg)
    if name == "particles":
        if mu > 0:
            raise ValueError("process 'particles' re-simulates given tables; pileup must be 0")
        return ParticleTableSource(**process)
    return PythiaSource(name, pileup=pileup, seed=seed, **process)
