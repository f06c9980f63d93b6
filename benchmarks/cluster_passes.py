"""Benchmark: the neighbour passes of range DBSCAN with and without the neighbour list.

For N hits of one synthetic event (``synthetic_batch``) with 32-d embedding-like points (unit
vectors scattered around a unit centre per particle; ``--noise`` sets the eps-pairs per hit,
printed) and each neighbourhood (the cluster plan of groups 128 +-1, a phi window +-512, and
``--grid``: the exact grid ranges), per list capacity K (0: every pass scans the ranges,
``range_dbscan.dbscan_ranges`` without a list; 16: the count pass fills the list, ``nbr_list``):

- count: the count pass kernel alone (with the table fill when K > 0),
- round: one component round (hook + pointer jumps),
- border: the border pass of ``number_labels``,
- whole: ``start_plan`` / ``start_grid`` + ``number_labels`` eagerly, and whole_graph: the
  same captured in a CUDA graph and replayed (as in ``inference.Predictor``),

timed by ``triton.testing.do_bench`` (median ms) on CUDA; a JSON on stdout (and ``--out``).
Labels of every K are checked equal to K = 0 (``same``).

    python benchmarks/cluster_passes.py --sizes 30000 60000 --out cluster_passes.json
    TRITON_INTERPRET=1 python benchmarks/cluster_passes.py --device cpu --sizes 512  # smoke
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def embedding(pid: np.ndarray, d: int, noise: float, seed: int = 0) -> torch.Tensor:
    """(N, d) float32 unit vectors around a random unit centre per particle."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(int(pid.max()) + 1, d))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    x = centre[pid] + rng.normal(size=(len(pid), d)) * noise
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True)).float()


def bench(fn, cuda: bool) -> float:
    """Median ms of fn: do_bench on CUDA, one timed call after a warm-up elsewhere."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))
    fn()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def graph_bench(fn, cuda: bool):
    """Median ms of replaying fn captured in a CUDA graph (None off CUDA), or the error."""
    if not cuda:
        return None
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # warm-up off the capture
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return bench(g.replay, cuda)
    except Exception as err:  # report, do not hide: the Predictor captures the same calls
        return f"capture failed: {type(err).__name__}: {err}"


def passes(start, k: int, cuda: bool) -> dict:
    """Times of one neighbourhood at list capacity k; start(k) -> RangeState."""
    from trackformers.cluster import range_dbscan as rd
    from trackformers.cluster.passes import neighbour_pass

    st = start(k)
    labels = rd.complete(st, rd.number_labels(st))
    vs = st.valid
    nbr = None if k == 0 else torch.empty(vs.numel(), k, dtype=torch.int32, device=vs.device)

    def count():
        return neighbour_pass(st.xs, st.lo, st.hi, st.unions, vs, vs, vs, st.eps, 0, nbr=nbr)

    row = {"count": bench(count, cuda), "round": bench(lambda: rd._round(st, st.lab), cuda)}
    border = ((st.valid != 0) & ~st.core_b).to(torch.int8)  # (N,)
    row["border"] = bench(lambda: st.neighbours(border, st.core, st.lab, 1), cuda)
    row["whole"] = bench(lambda: rd.number_labels(start(k)), cuda)
    row["whole_graph"] = graph_bench(lambda: rd.number_labels(start(k)), cuda)
    row["pending"] = bool(st.pending)  # the default rounds did not reach the fixed point
    if st.nlist is not None:
        count = st.nlist.count.float()
        row["overflow_rows"] = int(st.nlist.over.sum())
        row["pairs_per_hit"] = round(float(count[vs != 0].mean()) - 1, 3)  # itself excluded
    return {"row": row, "labels": labels}


def starter(x, cu, plan, eps: float, ms: int, rounds: int):
    """start(k) -> RangeState of the plan's ranges (plan None: the exact grid ranges)."""
    from trackformers.cluster import range_dbscan as rd

    def start(k: int):
        if plan is None:
            return rd.start_grid(x, cu, eps, ms, rounds=rounds, list_capacity=k)
        return rd.start_plan(x, plan, eps, ms, rounds=rounds, list_capacity=k)

    return start


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 60_000])
    ap.add_argument("--caps", type=int, nargs="+", default=[0, 16], help="list capacities")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--eps", type=float, default=0.2)
    ap.add_argument("--noise", type=float, default=0.027, help="per-coordinate hit spread")
    ap.add_argument("--min-samples", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--adjacency", type=int, default=1)
    ap.add_argument("--grid", action="store_true", help="also the exact grid ranges")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if 0 not in args.caps:
        raise SystemExit(f"--caps must include 0 (the reference path), got {args.caps}")

    from trackformers.attention.plans import cluster_plan, window_plan
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.bench import environment
    from trackformers.cluster import range_dbscan as rd

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    result: dict = {
        **environment(dev),
        "plan_kernel": "tiled" if rd.PLAN_TILED else "rows",
        "args": vars(args),
        "runs": [],
    }
    eps, ms, rounds = args.eps, args.min_samples, args.rounds
    for n in args.sizes:
        batch = synthetic_batch([n], seed=0, device=dev)
        x = embedding(batch.particle_id.cpu().numpy(), args.dim, args.noise).to(dev)  # (N, d)
        hoods = {
            f"cluster{args.group_size}+-{args.adjacency}": cluster_plan(
                batch, group_size=args.group_size, sector_size=4096, adjacency=args.adjacency
            ),
            f"window+-{args.window}": window_plan(batch, args.window),
        }
        if args.grid:
            hoods["grid"] = None
        for name, plan in hoods.items():
            start = starter(x, batch.cu_seqlens, plan, eps, ms, rounds)
            cand = None  # candidates per hit of the plan's ranges
            if plan is not None:
                lo, hi = rd.plan_ranges(plan)
                cand = round(float((hi - lo).clamp_min(0).sum()) / n, 1)
            ref = None
            for k in sorted(args.caps):
                got = passes(start, k, cuda)
                if k == 0:
                    ref = got["labels"]
                row = {
                    "n": n,
                    "neighbourhood": name,
                    "capacity": k,
                    "candidates_per_hit": cand,
                    "clusters": int(got["labels"].max()) + 1,
                    "same": bool(torch.equal(got["labels"], ref)),
                    **got["row"],
                }
                result["runs"].append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
