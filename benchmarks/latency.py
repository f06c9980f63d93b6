"""Benchmark: per-event end-to-end inference latency and peak memory (issue 8, point 5).

One mu = 200 pixel event (~60 k hits) whose coordinates are already on the device goes
through: features + attention plan ("other") -> TrackFormer forward (bf16 autocast, "model")
-> exact torch DBSCAN ("clustering") -> grouping of hits into a track list ("other").
Each stage is timed with CUDA events after warm-up (median of --repeat runs); peak memory is
torch.cuda.max_memory_allocated over the timed runs (weights included).

Clustering input. The weights are random (no trained checkpoint travels to the GPU machine),
and DBSCAN's cost depends on how the points are spread, so the clustering stage runs on
*trained-like* outputs of the same shape: per particle a random centre (regression: eta,
sin phi, cos phi, q/pT with the synthetic particle's phi/eta; contrastive: a random unit
vector) plus Gaussian per-hit noise. ``--cluster-input model`` clusters the raw untrained
output instead (not representative). The model forward is the real network either way.

    python benchmarks/latency.py --device cuda            # full benchmark, prints a table
    python benchmarks/latency.py --device cpu --hits 3000 --backend dense --repeat 2   # smoke
"""

from __future__ import annotations

import argparse
import datetime
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
    return [
        Variant("reg d128 L4", 128, 4, 8, "regress", backend, kw, reg),
        Variant("reg d128 L4 plan-dbscan", 128, 4, 8, "regress", backend, kw, reg_plan),
        Variant("reg d64 L4", 64, 4, 4, "regress", backend, kw, reg),
        Variant("reg d256 L6", 256, 6, 8, "regress", backend, kw, reg),
        Variant("con32 d128 L4 plan-dbscan", 128, 4, 8, "contrastive", backend, kw, con),
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


def run_variant(v: Variant, coords: torch.Tensor, pid: np.ndarray, args) -> dict:
    dev = coords.device
    cuda = dev.type == "cuda"
    model = build_model(v, dev)
    ccfg = ClusterConfig.from_dict(v.cluster)
    rng = np.random.default_rng(0)
    oracle = {
        k: torch.from_numpy(a).to(dev)
        for k, a in trained_like_outputs(pid, v.head, v.embed_dim, rng).items()
    }
    n = coords.shape[0]
    cu = torch.tensor([0, n], dtype=torch.int32, device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda and not args.fp32)

    def clock():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def elapsed(a, b):
        if cuda:
            return a.elapsed_time(b)
        return 1e3 * (b - a)

    def once():
        t0 = clock()
        batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
        plan = model.encoder.build_plan(batch)
        t1 = clock()
        with torch.inference_mode(), amp:
            out = model(batch, plan)
        t2 = clock()
        src = out if args.cluster_input == "model" else oracle
        labels = assign_tracks({k: t.float() for k, t in src.items()}, cu, ccfg, plan)
        t3 = clock()
        hits, ptr, _ = track_list(labels)
        t4 = clock()
        if cuda:
            torch.cuda.synchronize()
        return {"plan+features": elapsed(t0, t1), "model": elapsed(t1, t2),
                "clustering": elapsed(t2, t3), "track list": elapsed(t3, t4),
                "total": elapsed(t0, t4), "n_tracks": ptr.numel() - 1}  # fmt: skip

    for _ in range(args.warmup):
        once()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = [once() for _ in range(args.repeat)]
    res = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "n_tracks"}
    res["n_tracks"] = runs[-1]["n_tracks"]
    res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    res["n_params"] = sum(p.numel() for p in model.parameters())
    return res


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
    cols = "variant | backend | params | model ms | clustering ms | other ms | total ms | peak GB"
    print(f"| {cols} | tracks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        try:
            r = run_variant(v, coords, pid, args)
        except Exception as e:  # report and go on with the next variant
            print(f"| {v.name} | {v.backend} | failed: {type(e).__name__}: {str(e)[:200]} |")
            results.append({"variant": v.name, "error": repr(e)})
            continue
        other = r["plan+features"] + r["track list"]
        print(f"| {v.name} | {v.backend} | {r['n_params'] / 1e6:.2f} M | {r['model']:.2f} | "
              f"{r['clustering']:.2f} | {other:.2f} | {r['total']:.2f} | {r['peak_mem_gb']:.3f} | "
              f"{r['n_tracks']} |", flush=True)  # fmt: skip
        results.append(
            {"variant": v.name, "backend": v.backend, **r, "env": env, "hits": args.hits}
        )
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
