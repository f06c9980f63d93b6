"""Where a contrastive checkpoint loses double-majority efficiency (CPU, a few s per event).

Clusters each event's embedding with DBSCAN (eps, min_samples 2), scores it by the results-table
definition (pT > 0.9 GeV, |eta| < 4, >= 3 pixel hits) and prints the DM efficiency of the
reconstructable particles binned by pT, eta, hit count, production radius (secondaries) and
Delta R to the nearest other particle with pT > 0.5 GeV (jet density), plus the share of
particles whose hits lie within eps of each other ("diam < eps") and whose nearest hit of
another particle lies beyond eps ("near > eps"): a missed particle with diam >= eps was split,
one with near <= eps was merged. Fake tracks (>= 3 hits, no particle holds > 50 % of them, or
mostly noise) are described by what their hits are: noise, hits of reconstructable particles
("signal") or of the other particles (low pT, secondaries outside the definition).

    python benchmarks/where_lost.py CKPT DATA --events 60 --eps 0.2 --split val --csv out.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors

from trackformers.data.packing import pack_events
from trackformers.inference import forward_batch, load_model
from trackformers.inference.events import iter_eval_events, restrict
from trackformers.metrics.efficiency import MatchingRules, Reconstructable
from trackformers.metrics.event import evaluate_event, track_table

BINS = {
    "pt": [0.9, 1.5, 3, 10, 1e4],
    "eta": [-4, -2.5, -1.5, 0, 1.5, 2.5, 4],
    "nh": [2, 3, 4, 5, 6, 8, 100],
    "vr": [-1, 1, 10, 1e4],
    "dr": [0, 0.005, 0.01, 0.02, 0.05, 0.1, 100],
}


RECO = Reconstructable(0.9, 4.0, 3, True)  # the results-table definition
RULES = MatchingRules(min_cluster_hits=3)


def particle_rows(event: dict, emb: np.ndarray, parts: pd.DataFrame) -> list[dict]:
    """One row per reconstructable particle of ``parts`` (``evaluate_event``'s table):
    kinematics, DM flag, embedding diameter/gap."""
    pid = np.asarray(event["hit_particle_id"]).astype(np.int64)
    dist, idx = NearestNeighbors(n_neighbors=min(16, len(emb))).fit(emb).kneighbors(emb)
    ppid = np.asarray(event["part_particle_id"]).astype(np.int64)
    px, py, pz = (np.asarray(event[k], dtype=np.float64) for k in ("part_px", "part_py", "part_pz"))
    vr = np.hypot(np.asarray(event["part_vx"]), np.asarray(event["part_vy"]))
    pt = np.hypot(px, py)
    eta, phi = np.arcsinh(pz / np.maximum(pt, 1e-9)), np.arctan2(py, px)
    hard = pt > 0.5
    rows = []
    reco = parts[parts.reconstructable]
    for p, dm in zip(reco["particle_id"], reco["dm"], strict=True):
        k = np.flatnonzero(ppid == p)[0]
        h = np.flatnonzero(pid == p)
        e = emb[h]
        diam = np.linalg.norm(e[:, None] - e[None], axis=-1).max()
        near = np.where(pid[idx[h]] != p, dist[h], np.inf).min()
        d_phi = (phi[hard] - phi[k] + np.pi) % (2 * np.pi) - np.pi
        dr = np.hypot(eta[hard] - eta[k], d_phi)
        dr = dr[dr > 0]
        rows.append(
            dict(
                pt=pt[k],
                eta=eta[k],
                nh=len(h),
                vr=vr[k],
                dm=bool(dm),
                diam=diam,
                near=near,
                dr=dr.min() if len(dr) else 9.0,
            )
        )
    return rows


def fake_rows(event: dict, labels: np.ndarray, signal_ids: np.ndarray) -> list[dict]:
    """One row per fake track: hit count, shares of noise / signal / other hits, particles."""
    tracks = track_table(event, labels, RULES)
    pid = np.asarray(event["hit_particle_id"]).astype(np.int64)
    rows = []
    for t in tracks.loc[tracks.fake, "track_id"]:
        p = pid[labels == t]
        noise, sig = p == 0, np.isin(p, signal_ids)
        rows.append(
            dict(
                nhits=len(p),
                noise=noise.mean(),
                signal=sig.mean(),
                other=(~noise & ~sig).mean(),
                particles=len(np.unique(p[~noise])),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("--events", type=int, default=60)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--split", default="all", help="train | val | test | all")
    ap.add_argument("--csv", default=None, help="write the per-particle table here")
    args = ap.parse_args()
    loaded = load_model(args.ckpt, "cpu")
    model, cfg, fcfg = loaded.model, loaded.config, loaded.features
    rows, fakes = [], []
    with torch.no_grad():
        for ev in iter_eval_events(cfg, args.data, args.split, args.events):
            batch = pack_events([ev], fcfg)
            out, _ = forward_batch(model, batch)
            emb = out["embedding"].float().numpy()
            event = restrict(ev, batch.hit_id.numpy())
            labels = DBSCAN(eps=args.eps, min_samples=2).fit_predict(emb)
            _, parts = evaluate_event(event, labels, RECO, RULES)
            rows += particle_rows(event, emb, parts)
            fakes += fake_rows(event, labels, parts.particle_id[parts.reconstructable].to_numpy())
    df = pd.DataFrame(rows)
    print(f"{len(df)} reconstructable particles, DM {df.dm.mean():.3f} (eps {args.eps})")
    for col, bins in BINS.items():
        g = df.groupby(pd.cut(df[col], bins), observed=True).dm.agg(["mean", "size"])
        print(g.round(3).T.to_string(), end="\n\n")
    missed = ~df.dm
    print(
        f"diam < eps {(df.diam < args.eps).mean():.3f}, "
        f"near > eps {(df.near > args.eps).mean():.3f}; "
        f"missed {missed.sum()}: split (diam >= eps) {(missed & (df.diam >= args.eps)).sum()}, "
        f"merged (near <= eps) {(missed & (df.near <= args.eps)).sum()}"
    )
    fk = pd.DataFrame(fakes)
    if len(fk):
        print(
            f"\n{len(fk)} fake tracks: mean {fk.nhits.mean():.1f} hits, "
            f"{fk.particles.mean():.1f} particles; hit shares noise {fk.noise.mean():.2f}, "
            f"signal {fk.signal.mean():.2f}, other {fk.other.mean():.2f}; "
            f"mostly noise {(fk.noise > 0.5).mean():.2f}, "
            f"without signal hits {(fk.signal == 0).mean():.2f}"
        )
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
