"""Benchmark: per-event inference latency, one driver with four variants.

    python benchmarks/latency.py synthetic --device cuda          # modes of one synthetic event
    python benchmarks/latency.py synthetic --device cpu --hits 3000 --backend dense \\
        --repeat 2 --modes eager                                  # CPU smoke run
    python benchmarks/latency.py profile                          # where the time goes (GPU)
    python benchmarks/latency.py neighbourhood CKPT DATA --events 2 --windows 64 256 1024
    python benchmarks/latency.py real CKPT DATA --eps 0.05 --physics \\
        --variants plan-c plan-fp16-c win512-fp32 exact --budget 330

Every variant prints its table and, with ``--out FILE``, appends its result rows to FILE as
JSON lines, each with the environment it was measured in (``trackformers.bench``).

synthetic
    One mu = 200 pixel event (~60 k hits) whose coordinates are already on the device goes
    through: features + attention plan -> TrackFormer forward (bf16 autocast, "model") ->
    DBSCAN ("clustering") -> track list (per-hit track ids + hits per track). Modes:

    graph           ``trackformers.inference.Predictor``: the whole step captured in a CUDA
                    graph per bucket of hit counts and replayed; one host sync at the end
                    reads the clustering's convergence flags. Total = ``Predictor.predict``
                    end to end. The split comes from the same steps captured as three graphs
                    (plan / model / clustering + track counts, ``predictor_split``) replayed
                    back to back; "other" = plan + features + track list.
    graph-compiled  the same with the encoder blocks' dense parts torch.compile'd
                    (``Predictor(..., compile=True)``, ``trackformers.inference.compiled``).
    eager           the same steps without graphs (sync-free Triton DBSCAN).
    eager-torch     the previous path: eager steps, torch DBSCAN (radius graph, host syncs),
                    track_list with sorting — the "before" of BENCHMARKS.md.

    CUDA events after warm-up (median of --repeat runs); peak memory is
    torch.cuda.max_memory_allocated over the timed runs, and "reserved"
    torch.cuda.memory_reserved after them and empty_cache (weights, live CUDA-graph pools).
    The weights are random, and DBSCAN's cost depends on how the points are spread, so the
    clustering runs on *trained-like* outputs of the same shape: per particle a random centre
    (regression: eta, sin phi, cos phi, q/pT; contrastive: a random unit vector) plus Gaussian
    per-hit noise (the head still runs; its output is replaced). ``--cluster-input model``
    clusters the raw untrained output instead (not representative).

profile
    For the EncReg d128 L4 model with the fused cluster plan on a 60 k-hit event: kernel
    launches and CUDA time per stage of one eager, sync-free step (torch.profiler), the
    component rounds DBSCAN needs on the trained-like points, and the DBSCAN time per
    implementation and rounds setting.

neighbourhood
    How much of exact DBSCAN a neighbourhood-restricted DBSCAN keeps, on real events of a
    trained checkpoint (fp32 forward; ``--amp``: bf16 autocast on CUDA): all eps-pairs by
    blocked brute force, exact DBSCAN labels from them (``dbscan_from_graph``, equal to
    sklearn's), and for every neighbourhood of ``dbscan_plan`` (the model's plan, phi windows
    of +-W hits): the fraction of exact eps-pairs inside it, the fraction of hits whose
    cluster is the same as under exact DBSCAN, whether the partition is identical, and the
    candidates per hit it scans.

real
    ``python -m trackformers.latency CKPT DATA --mode predictor`` per variant (named as
    ``trackformers.latency.variant_args`` reads them, e.g. ``plan-fp16-c``), each in its own
    process (so that its reserved memory is its own), in the order given while ``--budget``
    lasts: total ms (median / p90), the split model / clustering / other, peak allocated and
    reserved GiB, labels equal to the staged path's, the fraction of replays completed eagerly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from trackformers.attention import build
from trackformers.attention.plans import cluster_plan
from trackformers.attention.synthetic import synthetic_batch, synthetic_pixel_hits
from trackformers.bench import append_rows, cuda_ms, elapsed_ms, environment, stamp
from trackformers.cluster import (
    ClusterConfig,
    assign_tracks,
    cluster_hits,
    dbscan,
    dbscan_cpu,
    dbscan_from_graph,
    dbscan_in_plan,
    neighbourhood_plan,
    ranges_radius_graph,
    track_list,
)
from trackformers.cluster import range_dbscan as rd
from trackformers.data.batch import PackedBatch
from trackformers.data.packing import pack_events
from trackformers.inference import Predictor, forward_batch, load_model, track_counts
from trackformers.inference.events import data_spec, iter_eval_events
from trackformers.inference.latency import predictor_split
from trackformers.latency import variant_args
from trackformers.models import ContrastiveHead, Encoder, RegressorHead, TrackFormer


# ---- synthetic model and trained-like outputs ------------------------------------------------
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
    head = (
        RegressorHead(v.d_model, 4)
        if v.head == "regress"
        else ContrastiveHead(v.d_model, v.embed_dim)
    )
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


def same_cluster(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of hits whose cluster (as a set of hits; noise = alone) is the same in a, b."""

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

    (fa, sa), (fb, sb) = canon(a), canon(b)
    return float(((fa == fb) & (sa == sb)).mean())


# ---- synthetic ---------------------------------------------------------------------------
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

    def once():
        t0 = stamp(cuda)
        batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
        plan = model.encoder.build_plan(batch)
        t1 = stamp(cuda)
        out, _ = forward_batch(model, batch, plan, amp=not args.fp32)
        t2 = stamp(cuda)
        labels = assign_tracks(out, cu, ccfg, plan)
        t3 = stamp(cuda)
        if impl == "torch":
            _, ptr, _ = track_list(labels)
            n_tracks = ptr.numel() - 1
        else:
            _, n_tracks = track_counts(labels)
        t4 = stamp(cuda)
        if cuda:
            torch.cuda.synchronize()
        return {
            "plan+features": elapsed_ms(t0, t1),
            "model": elapsed_ms(t1, t2),
            "clustering": elapsed_ms(t2, t3),
            "track list": elapsed_ms(t3, t4),
            "total": elapsed_ms(t0, t4),
            "n_tracks": int(n_tracks),
        }

    return measure(once, model, cuda, args)


def run_graph(v: Variant, coords, pid, args, compile: bool = False) -> dict:
    """Predictor with CUDA graphs; split from three stage graphs of the same steps."""
    dev = coords.device
    n = coords.shape[0]
    model = build_model(v, dev)
    size = (n // args.bucket + 1) * args.bucket
    oracle = padded_oracle(pid, v, dev, size) if args.cluster_input == "oracle" else {}
    model.head = OracleHead(model.head, oracle)
    pred = Predictor(
        model, v.cluster, bucket=args.bucket, rounds=args.rounds, amp=not args.fp32, compile=compile
    )
    cu = torch.tensor([0, n], dtype=torch.int32, device=dev)
    batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)

    def once():
        t0 = stamp(True)
        tracks = pred.predict(coords / 1000.0, coords)
        t1 = stamp(True)
        torch.cuda.synchronize()
        return {"total": elapsed_ms(t0, t1), "n_tracks": int(tracks.n_tracks)}

    res = measure(once, model, True, args)
    res["plan in graph"] = bool(pred.plan_in_graph)
    split = predictor_split(pred, batch, args.warmup, args.repeat)
    res.update(
        {"plan+features": split["plan"], "model": split["model"], "clustering": split["clustering"]}
    )
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


def agreement(coords, pid) -> dict:
    """How far plan-restricted DBSCAN is from exact DBSCAN on the regression-like points."""
    n = coords.shape[0]
    pts = trained_like_outputs(pid, "regress", 32, np.random.default_rng(0))["params"]
    x = torch.from_numpy(pts).to(coords.device)
    cu = torch.tensor([0, n], dtype=torch.int32, device=coords.device)
    batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
    plan = cluster_plan(batch, group_size=128, sector_size=4096, adjacency=1)
    exact = dbscan(x, cu, 0.05, 3).cpu().numpy()
    out = {
        "variant": "agreement",
        "exact clusters": int(exact.max() + 1),
        "particles": same_cluster(exact, pid),
    }
    print(
        f"exact DBSCAN: {exact.max() + 1} clusters, {(exact < 0).sum()} noise hits, "
        f"{100 * out['particles']:.2f} % of hits in a cluster = their particle's hits"
    )
    for adj in (1, 2, 3):
        lab = dbscan_in_plan(x, plan, 0.05, 3, adjacency=adj).cpu().numpy()
        same = same_cluster(lab, exact)
        print(
            f"dbscan_plan adjacency {adj}: {lab.max() + 1} clusters, {(lab < 0).sum()} noise "
            f"hits, same cluster as exact DBSCAN for {100 * same:.2f} % of hits"
        )
        out[f"adjacency {adj}"] = {"clusters": int(lab.max() + 1), "same": same}
    return out


def synthetic(args) -> list[dict]:
    dev = torch.device(args.device)
    xyz, pid = synthetic_pixel_hits(args.hits, np.random.default_rng(0))
    coords = torch.from_numpy(xyz).to(dev)  # (N, 3) hits already on the device
    variants = default_variants(args.backend)
    if args.only:
        keep = set(args.only.split(","))
        variants = [v for v in variants if v.name in keep]
    results = []
    print(f"{args.hits} hits, {len(np.unique(pid))} particles")
    cols = "variant | mode | params | model ms | clustering ms | other ms | total ms | host ms"
    print(f"| {cols} | peak GB | reserved GB | tracks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        for mode in args.modes.split(","):
            gc.collect()
            if coords.is_cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                if mode in ("graph", "graph-compiled"):
                    r = run_graph(v, coords, pid, args, compile=mode == "graph-compiled")
                else:
                    impl = "torch" if mode == "eager-torch" else "auto"
                    r = run_eager(v, coords, pid, args, impl)
            except Exception as e:  # report and go on with the next variant
                msg = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"| {v.name} | {mode} | failed: {msg} |", flush=True)
                results.append({"variant": v.name, "mode": mode, "error": repr(e)})
                continue
            other = r["plan+features"] + r["track list"]
            print(
                f"| {v.name} | {mode} | {r['n_params'] / 1e6:.2f} M | {r['model']:.2f} | "
                f"{r['clustering']:.2f} | {other:.2f} | {r['total']:.2f} | "
                f"{r['host wall']:.2f} | {r['peak_mem_gb']:.3f} | "
                f"{r.get('reserved_gb', float('nan')):.3f} | {r['n_tracks']} |",
                flush=True,
            )
            results.append(
                {"variant": v.name, "mode": mode, "backend": v.backend, **r, "hits": args.hits}
            )
    if args.agreement:
        results.append(agreement(coords, pid))
    if args.cpu_reference:
        pts = trained_like_outputs(pid, "regress", 32, np.random.default_rng(0))["params"]
        dbscan_cpu(pts[:100], np.array([0, 100]), eps=0.05, min_samples=3)  # import, warm-up
        t0 = time.perf_counter()
        lab = dbscan_cpu(pts, np.array([0, len(pid)]), eps=0.05, min_samples=3)
        ms = 1e3 * (time.perf_counter() - t0)
        name = "sklearn DBSCAN (CPU reference, regression-like points)"
        print(f"| {name} | - | - | - | {ms:.1f} | - | - | - | {lab.max() + 1} |")
        results.append({"variant": "sklearn DBSCAN CPU", "clustering": ms})
    return results


# ---- profile -----------------------------------------------------------------------------
def profile_step(args) -> list[dict]:
    dev = torch.device("cuda")
    xyz, pid = synthetic_pixel_hits(args.hits, np.random.default_rng(0))
    coords = torch.from_numpy(xyz).to(dev)
    n = coords.shape[0]
    kw = {"mask": "cluster", "group_size": 128, "sector_size": 4096, "adjacency": 1}
    reg = {"method": "dbscan", "input": "params", "params": {"eps": 0.05, "min_samples": 3}}
    v = Variant("reg d128 L4", 128, 4, 8, "regress", "fused", kw, reg)
    model = build_model(v, dev)
    x = padded_oracle(pid, v, dev, n)["params"]  # (N, 4) trained-like
    cu = torch.tensor([0, n], dtype=torch.int32, device=dev)
    batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
    cfg = ClusterConfig.from_dict(reg)

    def step():
        with record_function("plan"):
            plan = model.encoder.build_plan(batch)
        with record_function("model"):
            forward_batch(model, batch, plan)
        with record_function("clustering"):
            assign_tracks({"params": x}, cu, cfg, plan)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = prof.events()
    rows: list[dict] = []
    for s in (e for e in events if e.name in ("plan", "model", "clustering")):
        inside = [
            e
            for e in events
            if e.device_type.name == "CPU"
            and e.name == "cudaLaunchKernel"
            and s.time_range.start <= e.time_range.start <= s.time_range.end
        ]
        print(f"stage {s.name}: CPU {s.cpu_time_total / 1e3:.2f} ms, ~{len(inside)} launches")
        rows.append({"stage": s.name, "cpu_ms": s.cpu_time_total / 1e3, "launches": len(inside)})
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    kernels = sum(1 for e in events if e.device_type.name == "CUDA")
    print("GPU kernels per step:", kernels)
    rows.append({"stage": "step", "gpu_kernels": kernels})

    # component rounds needed on the trained-like points
    for r in range(0, 7):
        st = rd.start_grid(x, cu, 0.05, 3, rounds=r)
        print(f"rounds {r}: pending {bool(st.pending)}")
        rows.append({"rounds": r, "pending": bool(st.pending)})
    ref = dbscan(x, cu, 0.05, 3, impl="torch")
    for impl, kwargs in (
        ("torch", {}),
        ("triton", {"rounds": 2}),
        ("triton", {"rounds": 4}),
        ("triton", {"rounds": 6}),
        ("triton", {"max_dims": 4}),
    ):
        got = dbscan(x, cu, 0.05, 3, impl=impl, **kwargs)
        ms = cuda_ms(lambda impl=impl, kwargs=kwargs: dbscan(x, cu, 0.05, 3, impl=impl, **kwargs))
        print(
            f"dbscan {impl} {kwargs}: {ms:.3f} ms (eager), equal to torch: "
            f"{torch.equal(got, ref)}, clusters {int(got.max()) + 1}"
        )
        rows.append({"dbscan": impl, **kwargs, "ms": ms, "equal_to_torch": torch.equal(got, ref)})
    return rows


# ---- neighbourhood -----------------------------------------------------------------------
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


def neighbourhood(args) -> list[dict]:
    loaded = load_model(args.ckpt, args.device, args.attention, fallback=None)
    model, dev = loaded.model, loaded.device
    rows = []
    events = iter_eval_events(loaded.config, data_spec(args.data), "all", args.events)
    for k, event in enumerate(events):
        b = pack_events([event], loaded.features).to(dev)
        out, plan = forward_batch(model, b, amp=args.amp)  # fp32 unless --amp
        x = out["embedding"].float()  # (n, d)
        n = x.shape[0]
        t0 = time.perf_counter()
        src, dst = exact_pairs(x, args.eps)
        exact = dbscan_from_graph(src, dst, n, args.min_samples).cpu().numpy()
        t_exact = time.perf_counter() - t0
        keys = src * n + dst
        row = {
            "event": k,
            "hits": n,
            "eps_pairs_per_hit": src.numel() / n,
            "exact_clusters": int(exact.max()) + 1,
            "exact_noise": int((exact < 0).sum()),
            "exact_s": t_exact,
            "neighbourhoods": {},
        }
        hoods = [("model", {"neighbourhood": "model"})]
        hoods += [(f"window {w}", {"neighbourhood": "window", "window": w}) for w in args.windows]
        for name, p in hoods:
            nplan = neighbourhood_plan(plan, b.coords, b.cu_seqlens, **p)
            lo, hi = rd.plan_ranges(nplan)
            perm = nplan.perm if nplan.perm is not None else torch.arange(n, device=dev)
            s, d = ranges_radius_graph(x[perm], lo, hi, args.eps)
            inside = torch.isin(keys, perm[s] * n + perm[d])
            t1 = time.perf_counter()
            lab = cluster_hits(
                "dbscan_plan",
                x,
                b.cu_seqlens,
                plan=plan,
                coords=b.coords,
                eps=args.eps,
                min_samples=args.min_samples,
                **p,
            )
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
    print(
        "| neighbourhood | candidates / hit | exact eps-pairs inside % | hits in the same "
        "cluster as exact % | identical partition (events) |"
    )
    for name in rows[0]["neighbourhoods"]:
        r = [row["neighbourhoods"][name] for row in rows]
        print(
            f"| {name} | {np.mean([x['candidates_per_hit'] for x in r]):.0f} | "
            f"{100 * np.mean([x['pair_coverage'] for x in r]):.3f} | "
            f"{100 * np.mean([x['same_cluster'] for x in r]):.3f} | "
            f"{sum(x['identical'] for x in r)} / {len(r)} |"
        )
    return rows


# ---- real --------------------------------------------------------------------------------
def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def real_row(name: str, r: dict) -> str:
    """The table line of one ``real`` variant's result."""
    st = r.get("stages_median_ms") or {}
    cl = r["cluster"]["params"]
    hood = cl.get("neighbourhood", "-") + (f" {cl['window']}" if "window" in cl else "")
    prec = r.get("precision") or ("bf16" if r.get("amp") else "fp32")
    ph = r.get("physics") or {}
    dm = " | ".join(
        f"{100 * ph[k]['dm_efficiency']:.1f} ± {100 * ph[k]['dm_efficiency_err']:.1f} / "
        f"{100 * ph[k]['fake_rate']:.1f}"
        if k in ph
        else "–"
        for k in ("predictor", "staged_fp32")
    )
    return (
        f"| {name} | {r['cluster']['method']} {hood} | {prec}"
        f"{' compiled' if r.get('compile') else ''} | {r['median_ms']:.2f} / {r['p90_ms']:.2f}"
        f" | {_f(st.get('model'), '.2f')} | {_f(st.get('clustering'), '.2f')} | "
        f"{_f(st.get('other'), '.2f')} | {_f(r['peak_gib'], '.3f')} | "
        f"{_f(r['reserved_gib'], '.3f')}"
        f" | {r['same_partition_as_staged']:.2f} | {r['eager_completion_fraction']:.2f} | "
        f"{r['staged_ms_median']:.1f} | {r['n_tracks_mean']:.0f} | {dm} |"
    )


def smoke() -> str:
    """Tiled plan kernel on the GPU equals the torch path on the CPU (small window case);
    "" when it does, else the error (the variants then run the per-row kernel)."""
    try:
        b = synthetic_batch([3000, 0, 2000], seed=1)
        pid = b.particle_id.numpy()
        rng = np.random.default_rng(0)
        c = rng.normal(size=(pid.max() + 1, 32))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        x = torch.from_numpy(c[pid] + rng.normal(size=(len(pid), 32)) * 0.005).float()
        p = {"eps": 0.1, "min_samples": 2, "neighbourhood": "window", "window": 64}
        a = cluster_hits("dbscan_plan", x, b.cu_seqlens, coords=b.coords, **p)
        g = b.to("cuda")
        y = cluster_hits("dbscan_plan", x.cuda(), g.cu_seqlens, coords=g.coords, **p).cpu()
        if not torch.equal(a, y):
            return f"labels differ on {(a != y).float().mean():.4f} of the hits"
        return ""
    except Exception as err:  # reported, and the fallback kernel is used
        return f"{type(err).__name__}: {err}"


def real(args) -> list[dict]:
    try:
        variants = {name: variant_args(name, args.eps) for name in args.variants}
    except ValueError as err:
        raise SystemExit(str(err)) from None
    extra = ["--physics"] if args.physics else []
    t0 = time.perf_counter()
    ok = smoke() or "ok"
    print(f"smoke (tiled kernel on the GPU = torch on the CPU): {ok[:2000]}", flush=True)
    rows: list[dict] = [{"variant": "smoke", "result": ok}]
    env = dict(os.environ)
    if ok != "ok":
        env["TRACKFORMERS_PLAN_KERNEL"] = "rows"
    with tempfile.TemporaryDirectory(prefix="latency_real_") as tmp:
        for name in args.variants:
            _real_variant(args, name, variants[name] + extra, env, t0, Path(tmp), rows)
    print(
        "| variant | clustering | precision | total ms (median / p90) | model | clustering | "
        "other | peak GiB | reserved GiB | equal to staged | eager completion | staged ms | "
        "tracks | DM % / fake % | staged fp32 DM % / fake % |"
    )
    for r in rows[1:]:
        print(
            real_row(r["variant"], r)
            if "median_ms" in r
            else f"| {r['variant']} | {r['result'][:200]} |"
        )
    return rows


def _real_variant(
    args, name: str, extra: list[str], env: dict, t0: float, tmp: Path, rows: list[dict]
) -> None:
    """Run one ``real`` variant in its own process; its row is appended to ``rows``."""
    left = args.budget - (time.perf_counter() - t0)
    if left < args.need:
        print(f"skip {name}: {left:.0f} s left", flush=True)
        rows.append({"variant": name, "result": "skipped (budget)"})
        return
    js = tmp / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "trackformers.latency",
        args.ckpt,
        args.data,
        "--mode",
        "predictor",
        "--events",
        str(args.events),
        "--repeat",
        str(args.repeat),
        "--attention",
        args.attention,
        "--rounds",
        str(args.rounds),
        "--out",
        str(js),
        *extra,
    ]
    t1 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)
    except subprocess.TimeoutExpired:
        rows.append({"variant": name, "result": "timed out"})
        return
    print(f"{name}: rc {res.returncode} in {time.perf_counter() - t1:.0f} s", flush=True)
    if res.returncode != 0 or not js.is_file():
        rows.append({"variant": name, "result": f"failed: {res.stderr[-2500:]}"})
        print(rows[-1]["result"], flush=True)
        return
    rows.append({"variant": name, **json.loads(js.read_text())})
    print(real_row(name, rows[-1]), flush=True)


# ---- command line ------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="variant", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default=None, help="results file: rows appended as JSON lines")
    cuda = "cuda" if torch.cuda.is_available() else "cpu"

    s = sub.add_parser("synthetic", parents=[common], help="modes of one synthetic event")
    s.add_argument("--device", default=cuda)
    s.add_argument("--hits", type=int, default=60_000)
    s.add_argument("--backend", default="fused")
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--repeat", type=int, default=20)
    s.add_argument("--cluster-input", choices=("oracle", "model"), default="oracle")
    s.add_argument("--fp32", action="store_true")
    s.add_argument("--only", default=None, help="comma-separated variant names")
    s.add_argument("--cpu-reference", action="store_true", help="time sklearn DBSCAN too")
    s.add_argument("--modes", default="graph-compiled,graph,eager,eager-torch")
    s.add_argument("--bucket", type=int, default=4096, help="graph sizes: multiples of this")
    s.add_argument("--rounds", type=int, default=4, help="DBSCAN component rounds in graph")
    s.add_argument(
        "--agreement",
        action="store_true",
        help="compare dbscan_plan with exact dbscan labels on the oracle",
    )

    p = sub.add_parser("profile", parents=[common], help="where the step's time goes (GPU)")
    p.add_argument("--hits", type=int, default=60_000)

    n = sub.add_parser(
        "neighbourhood", parents=[common], help="exact DBSCAN kept by neighbourhoods, real events"
    )
    n.add_argument("ckpt")
    n.add_argument("data")
    n.add_argument("--events", type=int, default=2)
    n.add_argument("--eps", type=float, default=0.1)
    n.add_argument("--min-samples", type=int, default=2)
    n.add_argument("--windows", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    n.add_argument("--attention", default=None, help="e.g. flex on a CPU (same plan as fused)")
    n.add_argument("--device", default="auto")
    n.add_argument("--amp", action="store_true", help="bf16 autocast forward on CUDA")

    r = sub.add_parser(
        "real", parents=[common], help="Predictor latency of a checkpoint per clustering variant"
    )
    r.add_argument("ckpt")
    r.add_argument("data")
    r.add_argument(
        "--variants",
        nargs="+",
        default=["exact", "win512", "plan"],
        help="hood[-precision][-c][-k<rows>], e.g. plan-fp16-c",
    )
    r.add_argument("--events", type=int, default=4)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--budget", type=float, default=330.0, help="seconds for all variants")
    r.add_argument("--need", type=float, default=45.0, help="seconds one variant needs")
    r.add_argument("--attention", default="fused")
    r.add_argument("--rounds", type=int, default=6, help="DBSCAN component rounds in graph")
    r.add_argument("--eps", type=float, default=0.1, help="DBSCAN radius of every variant")
    r.add_argument(
        "--physics",
        action="store_true",
        help="DM / fake of each variant and of the staged fp32 path on the same events",
    )
    return ap


VARIANTS = {
    "synthetic": synthetic,
    "profile": profile_step,
    "neighbourhood": neighbourhood,
    "real": real,
}


def main(argv=None) -> list[dict]:
    args = parser().parse_args(argv)
    device = getattr(args, "device", None)
    env = environment(None if device in (None, "auto") else device)
    print(json.dumps(env), flush=True)
    rows = VARIANTS[args.variant](args)
    if args.out:
        meta = {"benchmark": f"latency {args.variant}", "args": vars(args), **env}
        append_rows(args.out, [{**meta, **row} for row in rows])
    return rows


if __name__ == "__main__":
    main()
