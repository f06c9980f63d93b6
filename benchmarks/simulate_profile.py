"""Where the detector simulation's time goes: CPU ms per mu = 200 ttbar event, per part.

Generates the particle tables of N events once (Pythia, seed 1, the simulate defaults), then
simulates them R times with the functions that ``DetectorSim.simulate`` calls wrapped by CPU
timers; prints each part's own time (median over the simulations) as markdown rows for
BENCHMARKS.md, section "Simulation". Parts that a version of the code does not have are left
out, so the same script profiles older commits too: run it with PYTHONPATH on an export of
the commit (``git archive <commit> trackformers conf | tar -x -C /tmp/old``), interleaved with
runs on the current tree, to compare on a shared machine.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/simulate_profile.py [--events 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np

import trackformers.sim.clusters as clusters
import trackformers.sim.detector as detector
from trackformers.sim.events import EventFactory
from trackformers.sim.settings import default_settings

DETECTOR_PARTS = (
    "transport",
    "phi_binning",
    "overlap_side",
    "module_ids",
    "noise_hits",
    "trackml_weights",
    "event_clusters",
)
CLUSTER_PARTS = ("hit_cell_sizes", "_module_frame", "_deposit", "cluster_summary", "simulate_cells")


def _wrap(owner, name: str, label: str, own: dict, stack: list) -> None:
    """Replace ``owner.name`` by a wrapper adding its own CPU time (callees excluded) to own."""
    f = getattr(owner, name)

    def timed(*args, **kwargs):
        t0 = time.process_time()
        stack.append(0.0)
        try:
            return f(*args, **kwargs)
        finally:
            dt = time.process_time() - t0
            inner = stack.pop()
            own[label] += dt - inner
            if stack:
                stack[-1] += dt

    setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    settings = default_settings(process="ttbar")
    settings.update(pileup=200, seed=1, minbias_library={"size": 0})
    factory = EventFactory(settings)
    tables = []
    for i in range(1, args.events + 1):
        rng = np.random.default_rng([factory.seed, i])
        particles, n_pu = factory.generator.event(rng, i)
        tables.append((i, particles, n_pu, int(rng.integers(2**63))))
    own: dict = collections.defaultdict(float)
    stack: list = []
    for name in DETECTOR_PARTS:
        if hasattr(detector, name):
            _wrap(detector, name, name, own, stack)
    for name in CLUSTER_PARTS:
        if hasattr(clusters, name):
            _wrap(clusters, name, f"clusters.{name}", own, stack)
    _wrap(detector.DetectorSim, "_smear", "_smear", own, stack)
    _wrap(detector.DetectorSim, "simulate", "simulate (rest)", own, stack)
    sim = factory.detector
    for i, particles, n_pu, seed in tables:  # warm-up: numba compilation or cache
        sim.simulate(particles, event_id=i, pileup=n_pu, seed=seed)
    runs = []
    for _ in range(args.repeats):
        for i, particles, n_pu, seed in tables:
            own.clear()
            sim.simulate(particles, event_id=i, pileup=n_pu, seed=seed)
            runs.append(dict(own))
    print(f"load average {os.getloadavg()[0]:.1f}; {len(runs)} simulations of {args.events} events")
    print("| part | CPU ms/event (median) |\n|---|---|")
    for label in runs[0]:
        print(f"| {label} | {1000 * np.median([r.get(label, 0.0) for r in runs]):.1f} |")
    print(f"| total | {1000 * np.median([sum(r.values()) for r in runs]):.1f} |")


if __name__ == "__main__":
    main()
