"""Simulation speed (issue 3, point 9): seconds per mu = 200 ttbar event on one core.

Pins itself to one CPU core, warms up (numba compile, Pythia initialisation and the min-bias
library are not counted), then times N events and reports the median CPU time per event (the
per-core cost, robust to other load on the machine; wall time is shown too), split into event
generation (Pythia hard scatter + pile-up, or library overlay) and detector simulation
(propagation + digitisation + weights). Also times the demo-sized gun dataset written to ROOT.
Prints markdown rows for BENCHMARKS.md, section "Simulation".

    OMP_NUM_THREADS=1 python benchmarks/simulate.py [--events 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib.metadata import version

import numpy as np

from trackformers.sim.events import EventFactory
from trackformers.simulate import run


def _time_events(factory: EventFactory, n: int) -> tuple[float, ...]:
    """Median CPU s (total, generation, detector), median wall s per event, mean hits."""
    gen, sim, wall, hits = [], [], [], []
    for i in range(1, n + 1):
        rng = np.random.default_rng([factory.seed, i])
        w0, t0 = time.perf_counter(), time.process_time()
        particles, n_pu = factory.generator.event(rng, i)
        t1 = time.process_time()
        ev = factory.detector.simulate(
            particles, event_id=i, pileup=n_pu, seed=int(rng.integers(2**63))
        )
        t2, w2 = time.process_time(), time.perf_counter()
        gen.append(t1 - t0)
        sim.append(t2 - t1)
        wall.append(w2 - w0)
        hits.append(len(ev["hit_id"]))
    total = np.asarray(gen) + np.asarray(sim)
    med = [float(np.median(x)) for x in (total, gen, sim, wall)]
    return (*med, float(np.mean(hits)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    vers = f"numpy {np.__version__}, numba {version('numba')}, pythia8mc {version('pythia8mc')}"
    rows = []
    for label, lib in (("ttbar mu=200, Pythia pile-up", 0), ("ttbar mu=200, library overlay", 500)):
        f = EventFactory(
            {
                "process": {"name": "ttbar"},
                "pileup": 200,
                "seed": 1,
                "minbias_library": {"size": lib},
            }
        )
        w = time.perf_counter()
        f.event(0)  # warm-up: numba, Pythia init, library
        rows.append((label, *_time_events(f, args.events), time.perf_counter() - w))
    with tempfile.TemporaryDirectory() as d:
        t = time.process_time()
        run(
            {
                "process": {"name": "gun"},
                "n_events": 200,
                "events_per_shard": 100,
                "seed": 1,
                "pileup": 0,
                "output": d,
                "progress": False,
            }
        )
        gun = time.process_time() - t
    print(f"1 core, load average {os.getloadavg()[0]:.1f}; {vers}; {args.events} events")
    print(
        "| workload | CPU s/event (median) | generation CPU s | detector sim CPU s "
        "| wall s/event | hits/event | device | versions | date | command |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    cmd = f"`OMP_NUM_THREADS=1 python benchmarks/simulate.py --events {args.events}`"
    for label, total, gen, sim, wall, hits, _ in rows:
        print(
            f"| {label} | {total:.2f} | {gen:.2f} | {sim:.2f} | {wall:.2f} | {hits:.0f} "
            f"| CPU 1 core | {vers} | 2026-11-22 | {cmd} |"
        )
    print(
        f"| gun demo: 200 events x 10 muons to ROOT (total {gun:.1f} s) | {gun / 200:.4f} "
        f"| - | - | - | ~104 | CPU 1 core | {vers} | 2026-11-22 | {cmd} |"
    )
    print(
        "warm-up wall s (numba cache, Pythia init, library): "
        + ", ".join(f"{r[0]}: {r[-1]:.1f}" for r in rows)
    )


if __name__ == "__main__":
    main()
