"""Event factory: settings -> event i, a pure function of (seed, i).

Shared by the file writer (:mod:`trackformers.sim.shards`) and the on-the-fly stream
(:mod:`trackformers.sim.stream`). ``settings`` has the layout of conf/simulate.yaml
(process, pileup, vertex, minbias_library, detector, seed); everything is checked here.
Defaults that depend on the process are resolved here: a missing ``vertex`` section means
TrackML's beam spot (:mod:`trackformers.sim.beamspot`) and ``detector.noise_fraction`` null
or missing means the process's noise rate (:func:`trackformers.sim.noise.default_noise_fraction`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trackformers.sim.beamspot import vertex_widths
from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.generators import build_generator
from trackformers.sim.noise import default_noise_fraction


class EventFactory:
    """Builds the generator and detector once; :meth:`event` makes event ``index``."""

    def __init__(self, settings: dict):
        self.settings = settings
        mu = settings.get("pileup", 0)
        if mu is None or not float(mu) >= 0:  # also catches NaN
            raise ValueError(f"pileup must be >= 0, got {mu}")
        self.seed = int(settings.get("seed", 0))
        process = settings.get("process")
        if not isinstance(process, Mapping) or "name" not in process:
            raise ValueError(f"settings need a process section with a name, got {process!r}")
        detector = dict(settings.get("detector") or {})
        if detector.get("noise_fraction") is None:
            detector["noise_fraction"] = default_noise_fraction(process["name"])
        self.detector = DetectorSim(DetectorConfig(**detector))
        sigma_xy, sigma_z = vertex_widths(settings.get("vertex"))
        pileup = {
            "mu": float(mu),
            "sigma_xy": sigma_xy,
            "sigma_z": sigma_z,
            "library_size": int((settings.get("minbias_library") or {}).get("size", 0)),
        }
        self.generator = build_generator(process, pileup, seed=self.seed)

    def provenance(self) -> dict:
        """Generator and detector settings, stored with the simulated files."""
        return {**self.generator.provenance(), **self.detector.provenance()}

    def event(self, index: int) -> dict:
        """Event ``index``: depends only on (seed, index, settings).

        Args:
            index: event index.

        Returns:
            The schema event dict.
        """
        rng = np.random.default_rng([self.seed, int(index)])
        particles, n_pu = self.generator.event(rng, int(index))
        return self.detector.simulate(
            particles, event_id=int(index), pileup=n_pu, seed=int(rng.integers(2**63))
        )
