"""Simulation speed: seconds per mu = 200 ttbar event on one core.

Pins itself to one CPU core, warms up (numba compile, Pythia initialisation and the min-bias
library are not counted), then times N events and reports the median CPU time per event (the
per-core cost, robust to other load on the machine; wall time is shown too), split into event
generation (Pythia hard scatter + pile-up, or library overlay) and detector simulation
(propagation + digitisation + weights). Also times the demo-sized gun dataset written to ROOT.
The events use the simulate defaults of ``python -m trackformers.simulate process=ttbar
pileup=200`` (TrackML beam spot, TrackML noise rate, and whatever the detector simulation does
by default at the time: re-run after changing it). Prints markdown rows for BENCHMARKS.md,
section "Simulation".

    OMP_NUM_THREADS=1 python benchmarks/simulate.py [--events 5]
    # the earlier defaults, for comparison: no noise, HL-LHC beam spot
    OMP_NUM_THREADS=1 python benchmarks/simulate.py --noise-fraction 0 --vertex hllhc
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version

import numpy as np

from trackformers.sim.detector import DetectorSim
from trackformers.sim.events import EventFactory
from trackformers.sim.settings import default_settings
from trackformers.simulate import run


def _time_events(factory: EventFactory, n: int) -> tuple[float, ...]:
    """Median CPU s (total, generation, detector, detector without noise), median wall s per
    event, mean hits, mean noise hits. The noise-free detector simulation runs on the same
    particles right after, so their difference is the cost of the noise hits."""
    quiet = DetectorSim(
        replace(factory.detector.config, noise_fraction=0.0), factory.detector.geometry
    )
    gen, sim, sim0, wall, hits, noise = [], [], [], [], [], []
    for i in range(1, n + 1):
        rng = np.random.default_rng([factory.seed, i])
        w0, t0 = time.perf_counter(), time.process_time()
        particles, n_pu = factory.generator.event(rng, i)
        t1 = time.process_time()
        ev = factory.detector.simulate(
            particles, event_id=i, pileup=n_pu, seed=int(rng.integers(2**63))
        )
        t2, w2 = time.process_time(), time.perf_counter()
        quiet.simulate(particles, event_id=i, pileup=n_pu, seed=1)
        sim0.append(time.process_time() - t2)
        gen.append(t1 - t0)
        sim.append(t2 - t1)
        wall.append(w2 - w0)
        hits.append(len(ev["hit_id"]))
        noise.append(int((ev["hit_particle_id"] == 0).sum()))
    total = np.asarray(gen) + np.asarray(sim)
    med = [float(np.median(x)) for x in (total, gen, sim, sim0, wall)]
    return (*med, float(np.mean(hits)), float(np.mean(noise)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--noise-fraction", type=float, default=None, help="default: the process's")
    ap.add_argument("--vertex", default=None, help="conf/simulate/vertex group (default: trackml)")
    ap.add_argument("--device", default="CPU 1 core", help="device column of the rows")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    vers = f"numpy {np.__version__}, numba {version('numba')}, pythia8mc {version('pythia8mc')}"
    rows = []
    for label, lib in (("ttbar mu=200, Pythia pile-up", 0), ("ttbar mu=200, library overlay", 500)):
        settings = default_settings(process="ttbar", vertex=args.vertex)  # the CLI defaults
        settings.update(pileup=200, seed=1, minbias_library={"size": lib})
        settings["detector"]["noise_fraction"] = args.noise_fraction
        f = EventFactory(settings)
        noise, sigma_z = f.detector.config.noise_fraction, f.generator.sigma_z
        label += f", noise {noise:g}/particle hit, sigma_z {sigma_z:g} mm"
        w = time.perf_counter()
        f.event(0)  # warm-up: numba, Pythia init, library
        rows.append((label, *_time_events(f, args.events), time.perf_counter() - w))
    with tempfile.TemporaryDirectory() as d:
        gun_settings = default_settings(process="gun", vertex=args.vertex)  # = `make demo`'s
        gun_settings.update(n_events=200, events_per_shard=100, seed=1, output=d, progress=False)
        t = time.process_time()
        run(gun_settings)
        gun = time.process_time() - t
    print(f"1 core, load average {os.getloadavg()[0]:.1f}; {vers}; {args.events} events")
    print(
        "| workload | CPU s/event (median) | generation CPU s | detector sim CPU s "
        "(without noise) | wall s/event | hits/event (noise) | device | versions | date "
        "| command |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    today = datetime.date.today().isoformat()
    flags = f"--events {args.events}"
    if args.noise_fraction is not None:
        flags += f" --noise-fraction {args.noise_fraction:g}"
    if args.vertex is not None:
        flags += f" --vertex {args.vertex}"
    cmd = f"`OMP_NUM_THREADS=1 python benchmarks/simulate.py {flags}`"
    for label, total, gen, sim, sim0, wall, hits, noise, _ in rows:
        print(
            f"| {label} | {total:.2f} | {gen:.2f} | {sim:.2f} ({sim0:.2f}) | {wall:.2f} "
            f"| {hits:.0f} ({noise:.0f}) | {args.device} | {vers} | {today} | {cmd} |"
        )
    print(
        f"| gun demo: 200 events x 10 muons to ROOT (total {gun:.1f} s) | {gun / 200:.4f} "
        f"| - | - | - | ~104 (0) | {args.device} | {vers} | {today} | {cmd} |"
    )
    print(
        "warm-up wall s (numba cache, Pythia init, library): "
        + ", ".join(f"{r[0]}: {r[-1]:.1f}" for r in rows)
    )


if __name__ == "__main__":
    main()
