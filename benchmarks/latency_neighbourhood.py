"""Benchmark: how much of exact DBSCAN a neighbourhood-restricted DBSCAN keeps, on real events.

For a trained checkpoint's embedding (fp32 forward; ``--amp``: bf16 autocast on CUDA) of each
event: all eps-pairs by blocked brute force (exact, ||x_i - x_j|| <= eps by differences),
exact DBSCAN labels from them
(``dbscan_from_graph``, equal to sklearn's), and for every neighbourhood of ``dbscan_plan``
(the model's own plan, phi windows of +-W hits): the fraction of exact eps-pairs inside the
neighbourhood, the fraction of hits whose cluster is the same as under exact DBSCAN, and
whether the whole partition is identical; and the eps-pairs per hit against the candidates
per hit each neighbourhood scans.

    python benchmarks/latency_neighbourhood.py .lat/model_bf16.pt .lat/pu200_eval --events 2 \\
        --windows 32 64 128 256 512 1024 --attention flex
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def exact_pairs(x: torch.Tensor, eps: float, block: int = 2048) -> tuple[torch.Tensor, ...]:
    """All (i, j), i != j, with ||x_i - x_j|| <= eps in one event (blocked brute force)."""
    n = x.shape[0]
    sq = (x * x).sum(1)  # (n,)
    src, dst = [], []
    for a in range(0, n, block):
        b = min(n, a + block)
        d2 = sq[a:b, None] + sq[None] - 2 * x[a:b] @ x.T  # (block, n) candidate filter
        i, j = torch.nonzero(d2 <= eps * eps * (1 + 1e-3) + 1e-6, as_tuple=True)
        exact = ((x[a + i] - x[j]) ** 2).sum(1) <= eps * eps  # the kernels' test
        keep = exact & (a + i != j)
        src.append(a + i[keep])
        dst.append(j[keep])
    return torch.cat(src), torch.cat(dst)


def same_cluster(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of hits whose cluster (as a set of hits; noise = alone) is equal in a and b."""

    def canon(lab):  # per hit: (smallest hit index of its cluster, cluster size)
        idx = np.arange(len(lab))
        first = idx.copy()
        size = np.ones(len(lab), dtype=np.int64)
        m = lab >= 0
        _, inv, cnt = np.unique(lab[m], return_inverse=True, return_counts=True)
        mins = np.full(len(cnt), len(lab))
        np.minimum.at(mins, inv, idx[m])
        first[m], size[m] = mins[inv], cnt[inv]
        return first, size

    fa, sa = canon(a)
    fb, sb = canon(b)
    return float(((fa == fb) & (sa == sb)).mean())


def main() -> None:
    from trackformers import evaluate as ev
    from trackformers.cluster import cluster_hits, dbscan_from_graph
    from trackformers.cluster.local_dbscan import neighbourhood_plan, ranges_radius_graph
    from trackformers.cluster.range_dbscan import plan_ranges
    from trackformers.data.packing import pack_events
    from trackformers.inference import forward_batch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("--events", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--min-samples", type=int, default=2)
    ap.add_argument("--windows", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--attention", default=None, help="e.g. flex on a CPU (same plan as fused)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="JSON to write")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast forward on CUDA")
    args = ap.parse_args()
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    cfg, state = ev.load_checkpoint(args.ckpt)
    model = ev.build_model(cfg, state, args.attention).to(dev)
    fcfg = ev.feature_config(cfg)
    rows = []
    for k, event in enumerate(ev.iter_eval_events(cfg, ev.data_spec(args.data), "all",
                                                  args.events)):  # fmt: skip
        b = pack_events([event], fcfg).to(dev)
        out, plan = forward_batch(model, b, amp=args.amp)  # fp32 unless --amp
        x = out["embedding"].float()  # (n, d)
        n = x.shape[0]
        t0 = time.perf_counter()
        src, dst = exact_pairs(x, args.eps)
        exact = dbscan_from_graph(src, dst, n, args.min_samples).cpu().numpy()
        t_exact = time.perf_counter() - t0
        keys = src * n + dst
        row = {"event": k, "hits": n, "eps_pairs_per_hit": src.numel() / n,
               "exact_clusters": int(exact.max()) + 1, "exact_noise": int((exact < 0).sum()),
               "exact_s": t_exact, "neighbourhoods": {}}  # fmt: skip
        hoods = [("model", {"neighbourhood": "model"})]
        hoods += [(f"window {w}", {"neighbourhood": "window", "window": w}) for w in args.windows]
        for name, p in hoods:
            nplan = neighbourhood_plan(plan, b.coords, b.cu_seqlens, **p)
            lo, hi = plan_ranges(nplan)
            perm = nplan.perm if nplan.perm is not None else torch.arange(n, device=dev)
            s, d = ranges_radius_graph(x[perm], lo, hi, args.eps)
            inside = torch.isin(keys, perm[s] * n + perm[d])
            t1 = time.perf_counter()
            lab = cluster_hits("dbscan_plan", x, b.cu_seqlens, plan=plan, coords=b.coords,
                               eps=args.eps, min_samples=args.min_samples, **p)  # fmt: skip
            lab = lab.cpu().numpy()
            row["neighbourhoods"][name] = {
                "pair_coverage": float(inside.float().mean()) if keys.numel() else 1.0,
                "same_cluster": same_cluster(lab, exact),
                "identical": bool(same_cluster(lab, exact) == 1.0),
                "candidates_per_hit": float((hi - lo).clamp_min(0).sum()) / n,
                "seconds": time.perf_counter() - t1,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| neighbourhood | candidates / hit | exact eps-pairs inside % | hits in the same "
          "cluster as exact % | identical partition (events) |")  # fmt: skip
    for name in rows[0]["neighbourhoods"]:
        r = [row["neighbourhoods"][name] for row in rows]
        print(
            f"| {name} | {np.mean([x['candidates_per_hit'] for x in r]):.0f} | "
            f"{100 * np.mean([x['pair_coverage'] for x in r]):.3f} | "
            f"{100 * np.mean([x['same_cluster'] for x in r]):.3f} | "
            f"{sum(x['identical'] for x in r)} / {len(r)} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "device": str(dev), "torch": torch.__version__,
                       "events": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
