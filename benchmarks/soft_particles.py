"""Soft particles and secondaries against TrackML.

Simulates our own tt-bar mu = 200 events (Pythia8, sigma_z 5.5 mm, all volumes) and compares with a
real TrackML mu = 200 event, event 1000 of TrackML's public training sample, whose numbers are in
REFERENCE below (the real event is not read here). Printed: mean hits per particle per pT bin (all
particles, and particles with >= 1 hit), total particle hits, hits per particle, the largest hit
count of one particle, the fraction of particles starting >= 1 mm from the beam line and the
fraction of hits they leave, split by process, and the CPU time per event (generation + detector
simulation) on one core.

Our events and the real one differ in particle content (our Pythia tune and generator cuts,
pT >= 0.15 GeV at the generator, vs TrackML's), so totals are shown raw and per particle.

    OMP_NUM_THREADS=1 python benchmarks/soft_particles.py [--events 8] [--legacy]
        [--detector conversions=true nuclear_per_species=false ...]

``--legacy`` runs the simulation without the soft-particle physics (no loop protection, no
secondaries, p_min 0.01 GeV); ``--detector`` sets detector options (conf/simulate.yaml) to measure
variants.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.metadata import version

import numpy as np
import yaml

from trackformers.data.schema import PROCESS_CONVERSION, PROCESS_GENERATOR, PROCESS_NUCLEAR
from trackformers.sim.events import EventFactory

PT_BINS = (0.0, 0.2, 0.3, 0.5, 0.9, 2.0, np.inf)
# TrackML training sample, event 1000 (counted from its CSV files): mean hits per
# particle per pT bin (from 0.5 GeV up only the overall mean, ~10.7, is known), totals
REFERENCE = {
    "mean_hits": (3.3, 8.6, 9.6, 10.7, 10.7, 10.7),
    "particles": 12263,
    "hits": 103305,
    "no_hit_fraction": 0.14,
    "max_hits": 19,
    "secondary_fraction": 3695 / 12263,
    "secondary_count": 3695,
}


def _pt_bin_labels() -> list[str]:
    return [
        f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">{lo:g}"
        for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:], strict=True)
    ]


def measure(factory: EventFactory, n_events: int) -> dict:
    """Per-event statistics of ``n_events`` events (indices 1..n), pooled."""
    nh, pt, rxy, proc, cpu, hits_true = [], [], [], [], [], 0
    for i in range(1, n_events + 1):
        t0 = time.process_time()
        ev = factory.event(i)
        cpu.append(time.process_time() - t0)
        nh.append(ev["part_nhits"])
        pt.append(np.hypot(ev["part_px"], ev["part_py"]))
        rxy.append(np.hypot(ev["part_vx"], ev["part_vy"]))
        proc.append(ev.get("part_process", np.zeros(len(ev["part_nhits"]), np.int32)))
        hits_true += int((ev["hit_particle_id"] != 0).sum())
    nh, pt, rxy, proc = (np.concatenate(x) for x in (nh, pt, rxy, proc))
    b = np.digitize(pt, PT_BINS[1:-1])
    secondary = rxy >= 1.0
    return {
        "events": n_events,
        "mean_hits": [float(nh[b == k].mean()) for k in range(len(PT_BINS) - 1)],
        "mean_hits_with": [float(nh[(b == k) & (nh > 0)].mean()) for k in range(len(PT_BINS) - 1)],
        "count": [int((b == k).sum()) / n_events for k in range(len(PT_BINS) - 1)],
        "particles": len(nh) / n_events,
        "hits": hits_true / n_events,
        "no_hit_fraction": float((nh == 0).mean()),
        "max_hits": int(nh.max()),
        "secondary_fraction": float(secondary.mean()),
        "secondary_count": int(secondary.sum()) / n_events,
        "secondary_hit_fraction": float(nh[secondary].sum() / max(nh.sum(), 1)),
        "by_process": {
            name: (float((proc == code).mean()), float(nh[proc == code].sum() / max(nh.sum(), 1)))
            for name, code in (
                ("generator", PROCESS_GENERATOR),
                ("conversion", PROCESS_CONVERSION),
                ("nuclear", PROCESS_NUCLEAR),
            )
        },
        "cpu_s": float(np.median(cpu)),
    }


def report(m: dict, label: str) -> None:
    ref = REFERENCE
    print(f"\n### {label}: {m['events']} events, median CPU {m['cpu_s']:.2f} s/event (1 core)")
    print("| pT bin (GeV) | particles/event | mean hits | TrackML | diff | mean hits, >= 1 hit |")
    print("|---|---|---|---|---|---|")
    for k, lab in enumerate(_pt_bin_labels()):
        d = m["mean_hits"][k] - ref["mean_hits"][k]
        print(
            f"| {lab} | {m['count'][k]:.0f} | {m['mean_hits'][k]:.1f} | {ref['mean_hits'][k]} "
            f"| {d:+.1f} | {m['mean_hits_with'][k]:.1f} |"
        )
    per_ours = m["hits"] / m["particles"]
    per_ref = ref["hits"] / ref["particles"]
    with_ours = m["hits"] / (m["particles"] * (1 - m["no_hit_fraction"]))
    with_ref = ref["hits"] / (ref["particles"] * (1 - ref["no_hit_fraction"]))
    print(
        f"\nparticle hits/event {m['hits']:.0f} vs {ref['hits']}"
        f" ({m['hits'] / ref['hits'] - 1:+.1%});"
        f" particles/event {m['particles']:.0f} vs {ref['particles']};"
        f" hits/particle {per_ours:.2f} vs {per_ref:.2f} ({per_ours / per_ref - 1:+.1%});"
        f" hits/particle with hits {with_ours:.2f} vs {with_ref:.2f}"
        f" ({with_ours / with_ref - 1:+.1%}); no-hit fraction {m['no_hit_fraction']:.1%} vs"
        f" {ref['no_hit_fraction']:.0%}; max hits {m['max_hits']} vs ~{ref['max_hits']}"
    )
    print(
        f"particles starting >= 1 mm from the beam line: {m['secondary_count']:.0f} per event vs"
        f" {ref['secondary_count']}, {m['secondary_fraction']:.1%} vs"
        f" {ref['secondary_fraction']:.1%}"
        f" (ratio {m['secondary_fraction'] / ref['secondary_fraction']:.2f});"
        f" their share of particle hits {m['secondary_hit_fraction']:.1%}"
    )
    for name, (fp, fh) in m["by_process"].items():
        print(f"  process {name}: {fp:.1%} of particles, {fh:.1%} of particle hits")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument(
        "--legacy", action="store_true", help="no loop protection, no secondaries, p_min 0.01 GeV"
    )
    ap.add_argument("--library", type=int, default=0, help="min-bias overlay library size")
    ap.add_argument(
        "--detector",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="detector settings, e.g. conversions=true (values read as YAML)",
    )
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    detector = {}
    if args.legacy:
        detector = {
            "loop_fraction": 0.0,
            "conversions": False,
            "nuclear_interactions": False,
            "p_min": 0.01,
        }
    for item in args.detector:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--detector takes KEY=VALUE, got {item!r}")
        detector[key] = yaml.safe_load(value)
    factory = EventFactory(
        {
            "process": {"name": "ttbar"},
            "pileup": 200,
            "seed": 1,
            "vertex": {"sigma_z": 5.5, "sigma_xy": 0.015},
            "minbias_library": {"size": args.library},
            "detector": detector,
        }
    )
    factory.event(0)  # warm-up: numba, Pythia initialisation
    label = "legacy (no loop protection, no secondaries)" if args.legacy else "default"
    if args.detector:
        label += " + " + " ".join(args.detector)
    print(
        f"numpy {np.__version__}, numba {version('numba')}, pythia8mc {version('pythia8mc')}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    report(measure(factory, args.events), label)


if __name__ == "__main__":
    main()
