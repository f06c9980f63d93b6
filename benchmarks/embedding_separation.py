"""How well a contrastive checkpoint separates tracks, by region (CPU, fp32, ~30 s/event).

Per reconstructable particle (pT > --pt-min, >= 3 hits): the mean distance of its hits'
embeddings from their centroid ("spread"), the median over its hits of the distance to the
nearest hit of another particle ("nearest other"), and the share of each hit's 15 nearest
neighbours in embedding space that belong to the same particle; medians over particles,
separately for barrel and endcap particles (majority of hits in the barrel volumes of
trackformers.data.schema).
DBSCAN with radius eps joins a track when its spread is well below eps and the nearest other
particle well above it.

    python benchmarks/embedding_separation.py model_bf16.pt data/ttbar_pu200_eval --events 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from trackformers.data.packing import pack_events
from trackformers.data.schema import BARREL_VOLUMES
from trackformers.inference import load_model
from trackformers.inference.events import iter_eval_events


def separation(
    emb: np.ndarray, pid: np.ndarray, vol: np.ndarray, pt: dict, pt_min: float, k: int = 15
) -> dict:
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    stats = {"barrel": [], "endcap": []}
    for p in np.unique(pid):
        hits = np.flatnonzero(pid == p)
        if p == 0 or pt.get(p, 0.0) < pt_min or len(hits) < 3:
            continue
        region = "barrel" if np.isin(vol[hits], BARREL_VOLUMES).mean() > 0.5 else "endcap"
        spread = np.linalg.norm(emb[hits] - emb[hits].mean(0), axis=1).mean()
        other = pid[idx[hits]] != p  # (hits, k + 1)
        nearest = np.where(other.any(1), np.where(other, dist[hits], np.inf).min(1), np.inf)
        share = (~other[:, 1:]).sum(1) / min(k, len(hits) - 1)
        stats[region].append((spread, np.median(nearest), share.mean()))
    keys = ("spread", "nearest_other", "same_share")
    return {
        r: {"particles": len(v), **dict(zip(keys, np.median(np.array(v), 0).tolist(), strict=True))}
        for r, v in stats.items()
        if v
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("--events", type=int, default=1)
    ap.add_argument("--pt-min", type=float, default=0.9)
    ap.add_argument("--attention", default="flex", help="a backend that runs on the CPU")
    args = ap.parse_args(argv)
    loaded = load_model(args.ckpt, "cpu", args.attention)
    model = loaded.model.float()
    out = {}
    for ev in iter_eval_events(loaded.config, args.data, "all", args.events):
        batch = pack_events([ev], loaded.features)
        with torch.no_grad():
            emb = model(batch, model.encoder.build_plan(batch))["embedding"].float().numpy()
        pt = dict(zip(ev["part_particle_id"], np.hypot(ev["part_px"], ev["part_py"]), strict=True))
        res = separation(emb, batch.particle_id.numpy(), batch.volume_id.numpy(), pt, args.pt_min)
        out[int(ev["event_id"])] = res
        for region, r in res.items():
            print(
                f"event {int(ev['event_id'])} {region}: {r['particles']} particles, spread "
                f"{r['spread']:.3f}, nearest other {r['nearest_other']:.3f}, same-particle "
                f"share of the 15-NN {r['same_share']:.2f}"
            )
    return out


if __name__ == "__main__":
    main()
