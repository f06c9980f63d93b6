"""Pixel/strip clusters: cost per mu = 200 event and cells per hit per volume.

Pins itself to one CPU core, makes N ttbar mu = 200 events (pile-up from a min-bias library,
generation not timed), and simulates each event's particles twice with the same seed: with
``detector.clusters`` on and off. Reports the median CPU time per event of the detector
simulation with and without clusters (the difference is the cost of the cell model), the
cells per hit per volume group (mean, fraction of 1-cell hits), and plots the cells-per-hit
distribution per volume group to docs/cells_per_hit.png. Prints markdown rows for
BENCHMARKS.md, section "Clusters".

    OMP_NUM_THREADS=1 python benchmarks/clusters.py [--events 3] [--library 200]
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.events import EventFactory

# The only published TrackML cell statistic we found: the traccc wiki ("sequential example
# chain") runs 10 TrackML mu = 200 pixel events (volumes 7-9): 2,041,344 cells in 380,554
# clusters, i.e. 5.36 cells per cluster. No per-volume distribution is published.
TRACKML_PIXEL_MEAN = 2_041_344 / 380_554
TRACKML_SOURCE = "https://github-wiki-see.page/m/acts-project/traccc/wiki/sequential-example-chain"
GROUPS = {
    "all pixel (7, 8, 9)": (7, 8, 9),
    "pixel barrel (8)": (8,),
    "pixel endcaps (7, 9)": (7, 9),
    "short-strip barrel (13)": (13,),
    "short-strip endcaps (12, 14)": (12, 14),
    "long-strip barrel (17)": (17,),
    "long-strip endcaps (16, 18)": (16, 18),
}
OUT = Path(__file__).resolve().parents[1] / "docs" / "cells_per_hit.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument("--library", type=int, default=200)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    factory = EventFactory(
        {
            "process": {"name": "ttbar"},
            "pileup": 200,
            "seed": 1,
            "minbias_library": {"size": args.library},
        }
    )
    on = DetectorSim(DetectorConfig(clusters=True), factory.detector.geometry)
    off = DetectorSim(DetectorConfig(clusters=False), factory.detector.geometry)
    factory.event(0)  # warm-up: Pythia, library
    t_on, t_off, hits = [], [], []
    ncells: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
    for i in range(args.events + 1):
        rng = np.random.default_rng([factory.seed, i])
        particles, n_pu = factory.generator.event(rng, i)
        seed = int(rng.integers(2**63))
        t0 = time.process_time()
        ev = on.simulate(particles, event_id=i, pileup=n_pu, seed=seed)
        t1 = time.process_time()
        off.simulate(particles, event_id=i, pileup=n_pu, seed=seed)
        t2 = time.process_time()
        if i == 0:
            continue  # numba compile
        t_on.append(t1 - t0)
        t_off.append(t2 - t1)
        hits.append(len(ev["hit_id"]))
        for g, vols in GROUPS.items():
            ncells[g].append(ev["hit_ncells"][np.isin(ev["hit_volume_id"], vols)])
    m_on, m_off = float(np.median(t_on)), float(np.median(t_off))
    vers = f"numpy {np.__version__}, numba {version('numba')}"
    cmd = f"`OMP_NUM_THREADS=1 python benchmarks/clusters.py --events {args.events}`"
    date = time.strftime("%Y-%m-%d")
    print("| detector sim, clusters on | clusters off | cost of clusters | hits/event | device |")
    print(
        f"| {m_on:.2f} s | {m_off:.2f} s | {m_on - m_off:.2f} s ({100 * (m_on / m_off - 1):.0f} %)"
        f" | {np.mean(hits):.0f} | CPU 1 core | {vers} | {date} | {cmd} |"
    )
    print("\n| volumes | hits | mean cells/hit | 1 cell | 2 cells | >= 5 cells | max |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), sharey=True)
    axes[1, 0].axis("off")
    panels = [axes[0, 0], *axes[:, 1:].T.ravel()]
    for ax, (g, parts) in zip(panels, ncells.items(), strict=True):
        n = np.concatenate(parts)
        frac = [np.mean(n == 1), np.mean(n == 2), np.mean(n >= 5)]
        print(
            f"| {g} | {len(n)} | {n.mean():.2f} | {frac[0]:.2f} | {frac[1]:.2f} | {frac[2]:.2f}"
            f" | {n.max()} |"
        )
        ax.hist(np.clip(n, 1, 20), bins=np.arange(0.5, 21.5), density=True, histtype="stepfilled")
        ax.set_title(f"{g}: mean {n.mean():.2f}", fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("cells per hit (last bin: >= 20)")
        if g.startswith("all pixel"):
            ax.axvline(n.mean(), color="C0", ls=":", label=f"ours: mean {n.mean():.2f}")
            ax.axvline(
                TRACKML_PIXEL_MEAN,
                color="C3",
                ls="--",
                label=f"TrackML pixel (traccc wiki):\nmean {TRACKML_PIXEL_MEAN:.2f}",
            )
            ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("fraction of hits")
    print(f"\nTrackML pixel mean cells per cluster {TRACKML_PIXEL_MEAN:.2f} ({TRACKML_SOURCE})")
    fig.suptitle(
        f"Cells per hit, simulated ttbar mu=200 ({args.events} events, trackformers.sim.clusters)"
    )
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=90)
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
