"""Benchmark: per-event end-to-end inference latency and peak memory (issue 8, point 5).

One mu = 200 pixel event (~60 k hits) whose coordinates are already on the device goes
through: features + attention plan -> TrackFormer forward (bf16 autocast, "model") -> DBSCAN
("clustering") -> track list (per-hit track ids + hits per track). Modes:

  graph        trackformers.inference.Predictor: the whole step captured in a CUDA graph per
               bucket of hit counts and replayed; one host sync at the end reads the
               clustering's convergence flags. Total = Predictor.predict end to end (input
               copies, replay, flag read, track counts). The split comes from the same steps
               captured as three separate graphs (plan / model / clustering + track counts)
               replayed back to back; "other" = plan + features + track list.
  graph-compiled  the same with the encoder blocks' dense parts torch.compile'd
               (``Predictor(..., compile=True)``, trackformers.inference_compiled).
  eager        the same steps without graphs (sync-free Triton DBSCAN).
  eager-torch  the previous path: eager steps, torch DBSCAN (radius graph, host syncs),
               track_list with sorting — the "before" of BENCHMARKS.md.

CUDA events after warm-up (median of --repeat runs); peak memory is
torch.cuda.max_memory_allocated over the timed runs, and "reserved" torch.cuda.memory_reserved
after them and empty_cache (weights, live CUDA-graph pools; the honest footprint of a graph,
whose pool keeps blocks that max_memory_allocated no longer counts as allocated).

Clustering input. The weights are random (no trained checkpoint travels to the GPU machine),
and DBSCAN's cost depends on how the points are spread, so the clustering stage runs on
*trained-like* outputs of the same shape: per particle a random centre (regression: eta,
sin phi, cos phi, q/pT with the synthetic particle's phi/eta; contrastive: a random unit
vector) plus Gaussian per-hit noise (the head still runs; its output is replaced).
``--cluster-input model`` clusters the raw untrained output instead (not representative).

    python benchmarks/latency.py --device cuda            # full benchmark, prints a table
    python benchmarks/latency.py --device cpu --hits 3000 --backend dense --repeat 2 --modes eager
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from trackformers.attention import build
from trackformers.attention.synthetic import synthetic_pixel_hits
from trackformers.cluster import ClusterConfig, assign_tracks, track_list
from trackformers.data.batch import PackedBatch
from trackformers.inference import Predictor, forward_batch, track_counts
from trackformers.latency import capture_graph
from trackformers.models import ContrastiveHead, Encoder, RegressorHead, TrackFormer


@dataclass
class Variant:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    head: str  # "regress" (4 params) | "contrastive" (embed_dim)
    backend: str
    backend_kwargs: dict
    cluster: dict
    embed_dim: int = 32


def default_variants(backend: str) -> list[Variant]:
    kw = {"mask": "cluster", "group_size": 128, "sector_size": 4096, "adjacency": 1}
    kw = kw if backend == "fused" else {}
    reg = {"method": "dbscan", "input": "params", "params": {"eps": 0.05, "min_samples": 3}}
    reg_plan = {**reg, "method": "dbscan_plan"}
    con = {"method": "dbscan_plan", "input": "embedding", "params": {"eps": 0.3, "min_samples": 3}}
    reg4 = {**reg, "params": {**reg["params"], "max_dims": 4}}  # 4-d grid, no projection
    return [
        Variant("reg d128 L4", 128, 4, 8, "regress", backend, kw, reg),
        Variant("reg d128 L4 grid4", 128, 4, 8, "regress", backend, kw, reg4),
        Variant("reg d128 L4 plan-dbscan", 128, 4, 8, "regress", backend, kw, reg_plan),
        Variant("con32 d128 L4 plan-dbscan", 128, 4, 8, "contrastive", backend, kw, con),
        Variant("reg d64 L4", 64, 4, 4, "regress", backend, kw, reg),
        Variant("reg d256 L6", 256, 6, 8, "regress", backend, kw, reg),
    ]


def trained_like_outputs(pid: np.ndarray, head: str, embed_dim: int, rng) -> dict[str, np.ndarray]:
    """Per-hit outputs scattered around a per-particle centre (see module docstring)."""
    uniq, inv = np.unique(pid, return_inverse=True)
    m = len(uniq)
    if head == "regress":
        eta = rng.uniform(-3.5, 3.5, m)
        phi = rng.uniform(-np.pi, np.pi, m)
        qopt = rng.choice([-1, 1], m) / (0.3 + rng.exponential(0.7, m))
        centre = np.stack([eta, np.sin(phi), np.cos(phi), qopt], 1)  # (m, 4)
        out = centre[inv] + rng.normal(0, 0.01, (len(pid), 4))
        return {"params": out.astype(np.float32)}
    centre = rng.standard_normal((m, embed_dim))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    out = centre[inv] + rng.normal(0, 0.02, (len(pid), embed_dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return {"embedding": out.astype(np.float32)}


def build_model(v: Variant, device) -> TrackFormer:
    backend = build(v.backend, **v.backend_kwargs)
    enc = Encoder(3, v.d_model, v.n_heads, v.n_layers, attention=backend)
    head = (RegressorHead(v.d_model, 4) if v.head == "regress"
            else ContrastiveHead(v.d_model, v.embed_dim))  # fmt: skip
    return TrackFormer(enc, head).to(device).eval()


class OracleHead(torch.nn.Module):
    """Runs the real head, returns trained-like outputs instead (padded rows: zeros)."""

    def __init__(self, head, oracle: dict[str, torch.Tensor]):
        super().__init__()
        self.head, self.oracle = head, oracle

    def forward(self, h):
        out = self.head(h)  # computed (and timed) as in the real model
        if not self.oracle:
            return out
        return {k: self.oracle[k][: h.shape[0]] for k in out}


def padded_oracle(pid, v: Variant, dev, rows: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    out = {}
    for k, a in trained_like_outputs(pid, v.head, v.embed_dim, rng).items():
        t = torch.zeros(rows, a.shape[1], device=dev)
        t[: len(a)] = torch.from_numpy(a).to(dev)
        out[k] = t
    return out


def timer(cuda):
    def clock():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed(a, b):
        return a.elapsed_time(b) if cuda else 1e3 * (b - a)

    return clock, elapsed


def run_eager(v: Variant, coords, pid, args, impl: str) -> dict:
    """Eager steps; impl "torch" = the previous path (torch DBSCAN + sorted track_list)."""
    dev = coords.device
    cuda = dev.type == "cuda"
    n = coords.shape[0]
    model = build_model(v, dev)
    oracle = padded_oracle(pid, v, dev, n) if args.cluster_input == "oracle" else {}
    model.head = OracleHead(model.head, oracle)
    ccfg = ClusterConfig.from_dict(v.cluster)
    ccfg.params = {**ccfg.params, "impl": impl}
    cu = torch.tensor([0, n], dtype=torch.int32, device=dev)
    clock, elapsed = timer(cuda)

    def once():
        t0 = clock()
        batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
        plan = model.encoder.build_plan(batch)
        t1 = clock()
        out, _ = forward_batch(model, batch, plan, amp=not args.fp32)
        t2 = clock()
        labels = assign_tracks(out, cu, ccfg, plan)
        t3 = clock()
        if impl == "torch":
            _, ptr, _ = track_list(labels)
            n_tracks = ptr.numel() - 1
        else:
            _, n_tracks = track_counts(labels)
        t4 = clock()
        if cuda:
            torch.cuda.synchronize()
        return {"plan+features": elapsed(t0, t1), "model": elapsed(t1, t2),
                "clustering": elapsed(t2, t3), "track list": elapsed(t3, t4),
                "total": elapsed(t0, t4), "n_tracks": int(n_tracks)}  # fmt: skip

    return measure(once, model, cuda, args)


def run_graph(v: Variant, coords, pid, args, compile: bool = False) -> dict:
    """Predictor with CUDA graphs; split from three stage graphs of the same steps."""
    from trackformers.inference import _cluster_start

    dev = coords.device
    n = coords.shape[0]
    model = build_model(v, dev)
    size = (n // args.bucket + 1) * args.bucket
    oracle = padded_oracle(pid, v, dev, size) if args.cluster_input == "oracle" else {}
    model.head = OracleHead(model.head, oracle)
    pred = Predictor(model, v.cluster, bucket=args.bucket, rounds=args.rounds,
                     amp=not args.fp32, compile=compile)  # fmt: skip
    clock, elapsed = timer(True)

    def once():
        t0 = clock()
        tracks = pred.predict(coords / 1000.0, coords)
        t1 = clock()
        torch.cuda.synchronize()
        return {"total": elapsed(t0, t1), "n_tracks": int(tracks.n_tracks)}

    res = measure(once, model, True, args)
    res["plan in graph"] = bool(pred.plan_in_graph)
    # split: the same steps as three graphs with static intermediates, replayed in a row
    g = pred._graphs[size]
    g.fill(coords / 1000.0, coords)
    valid = torch.arange(size, device=dev) < g.cu[1]
    stages = {}

    def plan_fn():
        return model.encoder.build_plan(g.batch())

    if pred.plan_in_graph:
        stages["plan+features"], plan = capture_graph(plan_fn)
    else:
        plan = g.plan
        stages["plan+features"] = None  # eager plan + copy into the static plan

    def model_fn():
        plan.extra = {k: v for k, v in plan.extra.items() if not k.startswith("fused_meta")}
        return forward_batch(model, g.batch(), plan, not args.fp32, False, pred._forward)[0]

    stages["model"], out = capture_graph(model_fn)
    ccfg = ClusterConfig.from_dict(v.cluster)

    def cluster_fn():
        st, lab = _cluster_start(out, g.cu, ccfg, plan, valid, args.rounds, g.coords, g.size)
        return lab, track_counts(lab)

    stages["clustering"], _ = capture_graph(cluster_fn)

    def split_once():
        t = [clock()]
        for _name, graph in stages.items():
            if graph is None:
                pred._copy_plan(g)
            else:
                graph.replay()
            t.append(clock())
        torch.cuda.synchronize()
        return {name: elapsed(t[i], t[i + 1]) for i, name in enumerate(stages)}

    for _ in range(args.warmup):
        split_once()
    split = [split_once() for _ in range(args.repeat)]
    for name in stages:
        res[name] = statistics.median(r[name] for r in split)
    res["track list"] = 0.0  # inside the clustering graph (track_counts)
    return res


def measure(once, model, cuda, args) -> dict:
    for _ in range(args.warmup):
        once()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(args.repeat):
        w0 = time.perf_counter()
        r = once()
        r["host wall"] = 1e3 * (time.perf_counter() - w0)
        runs.append(r)
    res = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "n_tracks"}
    res["n_tracks"] = runs[-1]["n_tracks"]
    res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    if cuda:  # what the step holds on to: graph pools, weights, caches (freed blocks released)
        torch.cuda.empty_cache()
        res["reserved_gb"] = torch.cuda.memory_reserved() / 1e9
    res["n_params"] = sum(p.numel() for p in model.parameters())
    return res


def same_cluster(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of hits whose cluster (as a set of hits; noise = alone) is the same in a, b."""

    def canon(lab):  # per hit: (smallest hit index of its cluster, cluster size)
        idx = np.arange(len(lab))
        key = np.where(lab >= 0, lab, len(lab) + idx)  # noise hits: singleton clusters
        first = np.full(key.max() + 1, len(lab))
        np.minimum.at(first, key, idx)
        size = np.bincount(key)
        return first[key], size[key]

    (fa, sa), (fb, sb) = canon(a), canon(b)
    return float(((fa == fb) & (sa == sb)).mean())


def agreement(coords, pid, args) -> dict:
    """How far plan-restricted DBSCAN is from exact DBSCAN on the regression-like points."""
    from trackformers.attention.plans import cluster_plan
    from trackformers.cluster import dbscan, dbscan_in_plan

    n = coords.shape[0]
    pts = trained_like_outputs(pid, "regress", 32, np.random.default_rng(0))["params"]
    x = torch.from_numpy(pts).to(coords.device)
    cu = torch.tensor([0, n], dtype=torch.int32, device=coords.device)
    batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
    plan = cluster_plan(batch, group_size=128, sector_size=4096, adjacency=1)
    exact = dbscan(x, cu, 0.05, 3).cpu().numpy()
    out = {"variant": "agreement", "exact clusters": int(exact.max() + 1),
           "particles": same_cluster(exact, pid)}  # fmt: skip
    print(
        f"exact DBSCAN: {exact.max() + 1} clusters, {(exact < 0).sum()} noise hits, "
        f"{100 * out['particles']:.2f} % of hits in a cluster = their particle's hits"
    )
    for adj in (1, 2, 3):
        lab = dbscan_in_plan(x, plan, 0.05, 3, adjacency=adj).cpu().numpy()
        same = same_cluster(lab, exact)
        print(f"dbscan_plan adjacency {adj}: {lab.max() + 1} clusters, {(lab < 0).sum()} noise "
              f"hits, same cluster as exact DBSCAN for {100 * same:.2f} % of hits")  # fmt: skip
        out[f"adjacency {adj}"] = {"clusters": int(lab.max() + 1), "same": same}
    return out


def run_variant(v: Variant, coords, pid, args, mode: str) -> dict:
    gc.collect()
    if coords.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if mode in ("graph", "graph-compiled"):
        return run_graph(v, coords, pid, args, compile=mode == "graph-compiled")
    return run_eager(v, coords, pid, args, "torch" if mode == "eager-torch" else "auto")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--hits", type=int, default=60_000)
    ap.add_argument("--backend", default="fused")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--cluster-input", choices=("oracle", "model"), default="oracle")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--cpu-reference", action="store_true", help="time sklearn DBSCAN too")
    ap.add_argument("--modes", default="graph-compiled,graph,eager,eager-torch")
    ap.add_argument("--bucket", type=int, default=4096, help="graph sizes: multiples of this")
    ap.add_argument("--rounds", type=int, default=4, help="DBSCAN component rounds in graph")
    ap.add_argument(
        "--agreement",
        action="store_true",
        help="compare dbscan_plan with exact dbscan labels (ARI) on the oracle",
    )
    args = ap.parse_args()
    dev = torch.device(args.device)
    xyz, pid = synthetic_pixel_hits(args.hits, np.random.default_rng(0))
    coords = torch.from_numpy(xyz).to(dev)  # (N, 3) hits already on the device
    variants = default_variants(args.backend)
    if args.only:
        keep = set(args.only.split(","))
        variants = [v for v in variants if v.name in keep]
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    env = f"torch {torch.__version__}, {gpu}"
    try:
        import triton

        env += f", triton {triton.__version__}"
    except ImportError:
        pass
    results = []
    print(f"{args.hits} hits, {len(np.unique(pid))} particles, {env}, {datetime.date.today()}")
    cols = "variant | mode | params | model ms | clustering ms | other ms | total ms | host ms"
    print(f"| {cols} | peak GB | reserved GB | tracks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        for mode in args.modes.split(","):
            try:
                r = run_variant(v, coords, pid, args, mode)
            except Exception as e:  # report and go on with the next variant
                msg = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"| {v.name} | {mode} | failed: {msg} |", flush=True)
                results.append({"variant": v.name, "mode": mode, "error": repr(e)})
                continue
            other = r["plan+features"] + r["track list"]
            print(f"| {v.name} | {mode} | {r['n_params'] / 1e6:.2f} M | {r['model']:.2f} | "
                  f"{r['clustering']:.2f} | {other:.2f} | {r['total']:.2f} | "
                  f"{r['host wall']:.2f} | {r['peak_mem_gb']:.3f} | "
                  f"{r.get('reserved_gb', float('nan')):.3f} | {r['n_tracks']} |",
                  flush=True)  # fmt: skip
            results.append({"variant": v.name, "mode": mode, "backend": v.backend, **r,
                            "env": env, "hits": args.hits})  # fmt: skip
    if args.agreement:
        results.append(agreement(coords, pid, args))
    if args.cpu_reference:
        from trackformers.cluster import dbscan_cpu

        pts = trained_like_outputs(pid, "regress", 32, np.random.default_rng(0))["params"]
        cu_np = np.array([0, len(pid)])
        dbscan_cpu(pts[:100], np.array([0, 100]), eps=0.05, min_samples=3)  # import, warm-up
        t0 = time.perf_counter()
        lab = dbscan_cpu(pts, cu_np, eps=0.05, min_samples=3)
        ms = 1e3 * (time.perf_counter() - t0)
        name = "sklearn DBSCAN (CPU reference, regression-like points)"
        print(f"| {name} | - | - | - | {ms:.1f} | - | - | - | {lab.max() + 1} |")
        results.append({"variant": "sklearn DBSCAN CPU", "clustering": ms})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
