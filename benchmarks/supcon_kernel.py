"""Exact all-pairs SupCon loss: torch tiles (compiled) vs the fused Triton kernels (BENCHMARKS.md).

GPU. Events of N = 16k / 32k / 65k hits as 1 or 4 equal events, D = 32, ~7 hits per particle
and 10 % noise hits, tau = 0.1, the raw (N, D) embedding L2-normalised inside the timed call
(as SupConLoss does). Timed (median of triton.testing.do_bench, ms): forward (loss value) and
forward + backward (gradient w.r.t. the raw embedding); peak memory above the inputs. Before
timing, the triton loss and gradient are compared with the tiled ones (relative errors in the
row). One JSON row per (impl, N, events) on stdout; --json writes them all with the versions.

    python benchmarks/supcon_kernel.py --json $OUT/supcon_kernel.json           (GPU)
    python benchmarks/supcon_kernel.py --block-m 128 --block-n 64 --impls triton  (tile sweep)
    TRITON_INTERPRET=1 python benchmarks/supcon_kernel.py --smoke                (CPU dry run)
"""
# ruff: noqa: B023  (closures are timed right where they are defined)

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
import triton
from trackformers.kernels import supcon

from trackformers.losses import tiled_pair_loss
from trackformers.losses.contrastive import SupConPairs

TAU = 0.1


def event_batch(n: int, events: int, dim: int, device: str, seed: int = 0):
    """(emb (N, D) float32, labels (N,) int64, cu_seqlens (B + 1,) int32, max_seqlen)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [n // events + (i < n % events) for i in range(events)]
    labels = torch.cat([torch.randint(1, max(2, s // 7), (s,), generator=g) for s in sizes])
    labels[torch.rand(n, generator=g) < 0.1] = 0
    emb = torch.randn(n, dim, generator=g)
    cu = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.int32)
    return emb.to(device), labels.to(device), cu.to(device), max(sizes)


def loss_fn(impl: str, labels, cu, max_seqlen: int, tile_elems: int, precision: str):
    """raw (N, D) embedding -> loss, noise hits negatives (noise="negative")."""
    valid = torch.ones_like(labels, dtype=torch.bool)
    pairs = SupConPairs(TAU)
    if impl == "tiled":
        return lambda x: tiled_pair_loss(
            F.normalize(x.float(), dim=-1),
            labels,
            valid,
            pairs,
            cu_seqlens=cu,
            tile_elems=tile_elems,
        )

    def fused(x):
        e = F.normalize(x.float(), dim=-1).to(x.dtype)  # (N, D) in the input dtype
        return supcon.supcon_loss(e, labels, cu, TAU, max_seqlen=max_seqlen, precision=precision)

    return fused


def bench(fn, cuda: bool) -> float:
    """Median milliseconds of fn() (one plain call without CUDA: smoke runs)."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=3, rep=300, return_mode="median"))
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def run_case(impl, emb, labels, cu, max_seqlen, args, reference=None) -> dict:
    cuda = emb.is_cuda
    fn = loss_fn(impl, labels, cu, max_seqlen, args.tile_elems, args.precision)
    x = emb.to(getattr(torch, args.dtype)).clone().requires_grad_(True)  # a fresh leaf
    loss = fn(x)
    loss.backward()  # warm-up / compilation, and the values compared below
    row = {"loss": float(loss.detach()), "grad": x.grad.detach().float().clone()}
    if reference is not None:
        ref_loss, ref_grad = reference["loss"], reference["grad"]
        row["loss_rel_err_vs_tiled"] = abs(row["loss"] - ref_loss) / abs(ref_loss)
        row["grad_rel_err_vs_tiled"] = float((row["grad"] - ref_grad).norm() / ref_grad.norm())

    def fwd():
        with torch.no_grad():
            fn(x)

    def fwd_bwd():
        x.grad = None
        fn(x).backward()

    row["fwd_ms"] = bench(fwd, cuda)
    row["fwd_bwd_ms"] = bench(fwd_bwd, cuda)
    if cuda:  # one call apart: do_bench's own L2-flush buffer would count otherwise
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        torch.cuda.synchronize()
        row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768, 65536])
    p.add_argument("--events", type=int, nargs="+", default=[1, 4])
    p.add_argument("--dim", type=int, default=32)
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="embedding dtype fed to the loss (SupConLoss passes float32)",
    )
    p.add_argument("--impls", nargs="+", default=["tiled", "triton"], choices=["tiled", "triton"])
    p.add_argument("--tile-elems", type=int, default=1 << 25, help="tiled: elements per tile")
    p.add_argument("--precision", default="auto", choices=list(supcon.PRECISIONS))
    p.add_argument("--block-m", type=int, default=supcon.BLOCK_M)
    p.add_argument("--block-n", type=int, default=supcon.BLOCK_N)
    p.add_argument("--warps", type=int, default=supcon.NUM_WARPS)
    p.add_argument("--stages", type=int, default=supcon.NUM_STAGES)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, TRITON_INTERPRET=1)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    supcon.BLOCK_M, supcon.BLOCK_N = args.block_m, args.block_n
    supcon.NUM_WARPS, supcon.NUM_STAGES = args.warps, args.stages
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.sizes, args.events = [300], [1, 4]
        supcon.BLOCK_M = supcon.BLOCK_N = 16
    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dim": args.dim,
        "dtype": args.dtype,
        "tile_elems": args.tile_elems,
        "precision": args.precision,
        "f32_matmul": torch.get_float32_matmul_precision(),
        "block_m": supcon.BLOCK_M,
        "block_n": supcon.BLOCK_N,
        "warps": supcon.NUM_WARPS,
        "stages": supcon.NUM_STAGES,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = []
    for n in args.sizes:
        for events in args.events:
            emb, labels, cu, max_seqlen = event_batch(n, events, args.dim, device)
            reference = None
            for impl in args.impls:
                r = run_case(impl, emb, labels, cu, max_seqlen, args, reference)
                if impl == "tiled":
                    reference = r
                row = {
                    "impl": impl,
                    "n": n,
                    "events": events,
                    **{k: v for k, v in r.items() if k != "grad"},
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=2)
    print(json.dumps(meta))
    return rows


if __name__ == "__main__":
    main()
