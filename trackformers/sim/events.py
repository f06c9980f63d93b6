"""Event factory: settings -> event i, a pure function of (seed, i).

Shared by the file writer (:mod:`trackformers.simulate`) and the on-the-fly stream
(:mod:`trackformers.sim.stream`). ``settings`` has the layout of conf/simulate.yaml
(process, pileup, vertex, minbias_library, detector, seed); everything is checked here.
"""

from __future__ import annotations

import numpy as np

from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.generators import build_generator


class EventFactory:
    """Builds the generator and detector once; :meth:`event` makes event ``index``."""

    def __init__(self, settings: dict):
        self.settings = settings
        mu = settings.get("pileup", 0)
        if mu is None or not float(mu) >= 0:  # also catches NaN
            raise ValueError(f"pileup must be >= 0, got {mu}")
        self.seed = int(settings.get("seed", 0))
        self.detector = DetectorSim(DetectorConfig(**(settings.get("detector") or {})))
        pileup = {
            "mu": float(mu),
            **(settings.get("vertex") or {}),
            "library_size": int((settings.get("minbias_library") or {}).get("size", 0)),
        }
        self.generator = build_generator(settings["process"], pileup, seed=self.seed)

    def provenance(self) -> dict:
        return {**self.generator.provenance(), **self.detector.provenance()}

    def event(self, index: int) -> dict:
        """Event ``index``: depends only on (seed, index, settings)."""
        rng = np.random.default_rng([self.seed, int(index)])
        particles, n_pu = self.generator.event(rng, int(index))
        return self.detector.simulate(
            particles, event_id=int(index), pileup=n_pu, seed=int(rng.integers(2**63))
        )
