"""Peak memory and time of the pairwise losses (forward + backward) on one large event.

    python benchmarks/loss_memory.py --json $OUT/loss_memory.json            # GPU
    python benchmarks/loss_memory.py --hits 4000 --device cpu                  # smoke test

Tiled variants use torch.compile of the tile math on CUDA (the default there); "eager"
is the same without compilation. Event: ``--hits`` hits of ~``hits / 7`` particles
(pixel-like, ~7 hits each) plus 10 % noise, D = 32 embeddings. For each loss variant: peak
memory allocated during loss forward + backward above the embeddings themselves
(torch.cuda.max_memory_allocated), median time.
The naive N x N version is run where it fits, and the tiled gradient is checked against it
at a size where both fit (relative error of the gradient).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from trackformers.bench import environment
from trackformers.losses import hinge_naive, supcon_naive, tiled_pair_loss, window_neighbours
from trackformers.losses.contrastive import SupConPairs
from trackformers.losses.hinge import HingePairs

GiB = 1024**3


def event(n: int, dim: int, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    labels = torch.randint(1, max(2, n // 7), (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.1] = 0
    emb = torch.randn(n, dim, generator=g)
    coords = torch.randn(n, 3, generator=g)
    cu = torch.tensor([0, n], dtype=torch.int32)
    return emb.to(device), labels.to(device), cu.to(device), coords.to(device)


def variants(tile_elems: int):
    """name -> fn(emb, labels, valid, cu, nbr) returning the loss."""
    sup, hin = SupConPairs(0.1), HingePairs(0.5, 1.0, 1.0)
    return {
        "supcon event (tiled)": lambda e, y, v, cu, nb: tiled_pair_loss(
            F.normalize(e, dim=-1), y, v, sup, cu_seqlens=cu, tile_elems=tile_elems
        ),
        "supcon event (tiled, 4x tile)": lambda e, y, v, cu, nb: tiled_pair_loss(
            F.normalize(e, dim=-1), y, v, sup, cu_seqlens=cu, tile_elems=4 * tile_elems
        ),
        "supcon event (tiled, eager)": lambda e, y, v, cu, nb: tiled_pair_loss(
            F.normalize(e, dim=-1), y, v, sup, cu_seqlens=cu, tile_elems=tile_elems, compile=False
        ),
        "supcon window W=64 (O(N k))": lambda e, y, v, cu, nb: tiled_pair_loss(
            F.normalize(e, dim=-1), y, v, sup, neighbours=nb, tile_elems=tile_elems
        ),
        "hinge event (tiled)": lambda e, y, v, cu, nb: tiled_pair_loss(
            e, y, v, hin, cu_seqlens=cu, tile_elems=tile_elems
        ),
        "hinge window W=64 (O(N k))": lambda e, y, v, cu, nb: tiled_pair_loss(
            e, y, v, hin, neighbours=nb, tile_elems=tile_elems
        ),
        "supcon event (naive N x N)": lambda e, y, v, cu, nb: supcon_naive(
            F.normalize(e, dim=-1), y, v, cu, 0.1
        ),
        "hinge event (naive N x N)": lambda e, y, v, cu, nb: hinge_naive(e, y, v, cu, 0.5),
    }


def measure(fn, emb, labels, cu, nbr, device, repeats: int) -> dict:
    valid = torch.ones_like(labels, dtype=torch.bool)
    times, peak = [], 0
    for i in range(repeats + 1):
        e = emb.clone().requires_grad_(True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        loss = fn(e, labels, valid, cu, nbr)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
        if i > 0:  # first call warms up
            times.append(time.perf_counter() - t0)
        del e, loss
    return {"ms": 1e3 * statistics.median(times), "peak_gib": peak / GiB}


def grad_check(n: int, dim: int, device: str, tile_elems: int) -> dict:
    emb, labels, cu, coords = event(n, dim, device, seed=1)
    valid = torch.ones_like(labels, dtype=torch.bool)
    out = {}
    for name, pairs, naive, norm in [
        ("supcon", SupConPairs(0.1), lambda e: supcon_naive(e, labels, valid, cu, 0.1), True),
        (
            "hinge",
            HingePairs(0.5, 1.0, 1.0),
            lambda e: hinge_naive(e, labels, valid, cu, 0.5),
            False,
        ),
    ]:
        a = emb.double().clone().requires_grad_(True)
        b = emb.double().clone().requires_grad_(True)
        prep = (lambda t: F.normalize(t, dim=-1)) if norm else (lambda t: t)
        naive(prep(a)).backward()
        tiled_pair_loss(
            prep(b), labels, valid, pairs, cu_seqlens=cu, tile_elems=tile_elems, compile=False
        ).backward()
        out[name] = float((a.grad - b.grad).norm() / a.grad.norm())
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hits", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--tile-elems", type=int, default=1 << 24)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-max", type=int, default=16384, help="largest N for the naive loss")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for n in args.hits:
        emb, labels, cu, coords = event(n, args.dim, args.device)
        nbr = window_neighbours(cu, 64, coords=coords)
        for name, fn in variants(args.tile_elems).items():
            if "naive" in name and n > args.naive_max:
                note = f"not run: {4 * n * n / GiB:.0f} GiB per N x N float32 matrix"
                rows.append({"hits": n, "loss": name, "ms": None, "peak_gib": None, "note": note})
                continue
            r = measure(fn, emb, labels, cu, nbr, args.device, args.repeats)
            rows.append({"hits": n, "loss": name, **r})
            print(f"{n:>7} {name:<32} {r['ms']:9.1f} ms  peak {r['peak_gib']:.3f} GiB", flush=True)
    check = grad_check(min(4096, min(args.hits)), args.dim, args.device, args.tile_elems // 64)
    print(f"gradient rel. error tiled vs naive (float64): {check}")
    result = {
        **environment(args.device),
        "tile_elems": args.tile_elems,
        "rows": rows,
        "grad_rel_error": check,
    }
    print("| hits | loss | ms (fwd+bwd) | peak GiB |")
    for r in rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        pk = r.get("note") if r["peak_gib"] is None else f"{r['peak_gib']:.3f}"
        print(f"| {r['hits']} | {r['loss']} | {ms} | {pk} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
