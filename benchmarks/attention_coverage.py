"""Same-particle pair recall of attention plans on simulated events (CPU, seconds).

For every particle with pT above --pt-min, the fraction of ordered pairs of its hits that a
plan lets attend (one layer), overall and for barrel / endcap query hits (the barrel volumes
of trackformers.data.schema). A plan that hides a track's hits from each other caps what the
encoder can learn; this says how much of each track each mask shows.

    python -m trackformers.simulate process=ttbar pileup=200 n_events=2 seed=2 \
        detector.keep_volumes=[7,8,9] output=data/cov_pu200
    python benchmarks/attention_coverage.py data/cov_pu200 --events 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from trackformers.attention.coverage import pair_recall
from trackformers.attention.plans import cluster_plan, window_plan
from trackformers.data.batch import PackedBatch
from trackformers.data.reader import read_events
from trackformers.data.schema import BARREL_VOLUMES

VARIANTS = {
    "cluster g128 ±1": lambda b: cluster_plan(b, 128, 4096, 1),
    "cluster g128 ±2": lambda b: cluster_plan(b, 128, 4096, 2),
    "cluster g256 ±1": lambda b: cluster_plan(b, 256, 4096, 1),
    "cluster g128 ±1, sectors of 1024": lambda b: cluster_plan(b, 128, 1024, 1),
    "window ±192": lambda b: window_plan(b, 192),
    "window ±384": lambda b: window_plan(b, 384),
}


def event_inputs(ev: dict, pt_min: float) -> tuple[PackedBatch, torch.Tensor, torch.Tensor]:
    xyz = torch.from_numpy(np.stack([ev["hit_x"], ev["hit_y"], ev["hit_z"]], 1).astype("f4"))
    n = xyz.shape[0]
    cu = torch.tensor([0, n], dtype=torch.int32)
    batch = PackedBatch(x=torch.zeros(n, 1), cu_seqlens=cu, max_seqlen=n, coords=xyz)
    pt = np.hypot(ev["part_px"], ev["part_py"])
    keep = set(ev["part_particle_id"][pt > pt_min].tolist())
    pid = np.where(np.isin(ev["hit_particle_id"], list(keep)), ev["hit_particle_id"], 0)
    barrel = np.isin(ev["hit_volume_id"], BARREL_VOLUMES)
    return batch, torch.from_numpy(pid.astype("i8")), torch.from_numpy(barrel.astype("i8"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="native ROOT file(s) or directory")
    ap.add_argument("--events", type=int, default=2)
    ap.add_argument("--pt-min", type=float, default=0.9)
    args = ap.parse_args(argv)
    events = read_events(args.data)[: args.events]
    if not events:
        raise SystemExit(f"no events in {args.data}")
    results = {}
    print(f"{len(events)} events, {np.mean([len(e['hit_x']) for e in events]):.0f} hits each")
    print("| plan | all pairs | barrel | endcap |\n|---|---|---|---|")
    for name, make in VARIANTS.items():
        rows = []
        for ev in events:
            batch, pid, barrel = event_inputs(ev, args.pt_min)
            r = pair_recall(make(batch), pid, barrel)
            rows.append([r["all"], r.get("label=1", np.nan), r.get("label=0", np.nan)])
        mean = np.nanmean(np.array(rows), 0)
        results[name] = dict(zip(("all", "barrel", "endcap"), mean.tolist(), strict=True))
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f} %" for v in mean) + " |")
    return results


if __name__ == "__main__":
    main()
