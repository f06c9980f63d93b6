"""FA4 (Hopper) vs Triton fused vs FlexAttention vs dense SDPA on identical masks.

GPU, bf16, H = 8, one event of N synthetic pixel hits in the plan's sorted order; cluster
(group 384, +-1) and window (W = 512) masks, N = 65536 and 32768, D = 32 then 64 (the time
budget cuts the tail; what was skipped is printed). Per (mask, N, D), median ms of
``triton.testing.do_bench``, fwd and fwd+bwd:

  fa4        — FA4 kernels, block lists built inside every timed call (2 launches, "meta");
  fa4_kernel — the same with the lists prebuilt;
  fused      — the Triton kernels (autotuned), metadata inside every call;
  flex       — compiled flex_attention (its Triton kernel), BlockMask prebuilt from the same
               per-row ranges (benchmarks/kernels.py ``flex_block_mask``);
  flex_flash — flex_attention with kernel_options BACKEND="FLASH" where torch offers it
               (it needs flash_attn.cute; the error is recorded otherwise);
  sdpa       — dense SDPA over the whole event (no mask), the rate reference.
Before timing: FA4 outputs NaN-poisoned and fully written, 64 sampled rows against float64,
FA4 vs Triton relative error. One JSON row per (mask, N, D) to OUT/fa4_bench.jsonl.

    TRACKFORMERS_FA4_KERNELS=... python benchmarks/fa4_bench.py --out $OUT --budget-s 240
"""
# ruff: noqa: B023  (closures are timed right where they are defined)

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from trackformers.kernels import fa4, ops
from trackformers.kernels.metadata import build_row_intervals

from trackformers.attention.plans import presorted
from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import environment


def _bench_kernels():
    """benchmarks/kernels.py as a module (its name clashes with the kernels/ package)."""
    path = Path(__file__).with_name("kernels.py")
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench(fn, rep_ms: float = 150.0) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def _fwd_fb(call, q, k, v, do):
    """(fwd closure, fwd+bwd closure) of call(q, k, v) -> out."""
    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))

    def fb():
        o = call(qg, kg, vg)
        return torch.autograd.grad(o, (qg, kg, vg), do)

    return (lambda: call(q, k, v)), fb


def _timed(row, name, call, q, k, v, do, log):
    try:
        f, fb = _fwd_fb(call, q, k, v, do)
        row[f"{name}_fwd_ms"] = bench(f)
        row[f"{name}_fwdbwd_ms"] = bench(fb)
    except Exception as e:  # a variant that cannot run is a result too
        row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"    {name}: {row[f'{name}_error']}")


def check_fa4(runner, q, k, v, rows, sp, log) -> dict:
    """NaN-poisoned FA4 outputs fully written; 64 sampled rows vs float64 (fwd)."""
    bk = _bench_kernels()
    n, h, d = q.shape
    lay = fa4.build_layout(sp, n, check=True)
    nan = float("nan")
    o, lse = torch.full_like(q[None], nan), torch.full((1, h, n), nan, device=q.device)
    runner.forward(q[None], k[None], v[None], lay, d**-0.5, out=(o, lse))
    grads = tuple(torch.full_like(q[None], nan) for _ in range(3))
    do = torch.randn_like(q)[None]
    runner.backward(q[None], k[None], v[None], o, do, lse, lay, d**-0.5, grads=grads)
    finite = all(bool(torch.isfinite(t).all()) for t in (o, lse, *grads))
    idx = torch.randint(0, n, (64,), device=q.device)
    ref = bk.sampled_reference(q, k, v, rows.cpu(), idx.cpu())
    err = float((o[0][idx].double() - ref).norm() / ref.norm())
    fused = ops.fused_attention(q, k, v, sp)
    vs = float((o[0].float() - fused.float()).norm() / fused.float().norm())
    res = {
        "fa4_written_finite": finite,
        "fa4_rel_err_vs_f64": err,
        "fa4_vs_fused_rel_err": vs,
        "fa4_visited_blocks": int(lay.mask_cnt.sum() + lay.full_cnt.sum()),
        "fa4_partial_blocks": int(lay.mask_cnt.sum()),
        "fa4_max_blocks": lay.max_blocks,
    }
    log(f"    check: {res}")
    return res


def run(args, log) -> list[dict]:
    bk = _bench_kernels()
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.cache_size_limit = 64
    flex = torch.compile(flex_attention, dynamic=False)
    t_end = time.time() + args.budget_s
    results, skipped = [], []
    h, dtype = args.heads, torch.bfloat16
    for d in args.head_dims:
        for n in args.sizes:
            batch = synthetic_batch([n], seed=n, device="cuda")
            for kind in args.masks:
                if time.time() > t_end:
                    skipped.append((kind, n, d))
                    continue
                sp = presorted(bk.make_plan(kind, batch))
                q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=dtype) for _ in range(4))
                rows = build_row_intervals(
                    sp.kind,
                    sp.cu_seqlens,
                    sp.max_seqlen,
                    sp.group_id,
                    sp.adjacency,
                    sp.window,
                    num_rows=n,
                    group_ptr=sp.group_ptr,
                )
                pairs = bk.attended_pairs(rows)
                row = {
                    "mask": kind,
                    "N": n,
                    "D": d,
                    "H": h,
                    "pairs": pairs,
                    "density": pairs / n / n,
                }
                log(f"== {kind} N={n} D={d} density={row['density']:.4f}")
                runner, why = fa4.choose(q.device, dtype, d, n)
                row["fa4_runner"] = why
                if runner is not None:
                    row.update(check_fa4(runner, q, k, v, rows, sp, log))
                    row["meta_ms"] = bench(lambda: fa4.build_layout(sp, n))
                    lay = fa4.build_layout(sp, n)
                    _timed(
                        row,
                        "fa4",
                        lambda a, b, c: fa4.fa4_attention(a, b, c, sp, runner),
                        q,
                        k,
                        v,
                        do,
                        log,
                    )
                    _timed(
                        row,
                        "fa4_kernel",
                        lambda a, b, c: fa4.fa4_attention(a, b, c, sp, runner, layout=lay),
                        q,
                        k,
                        v,
                        do,
                        log,
                    )
                _timed(
                    row, "fused", lambda a, b, c: ops.fused_attention(a, b, c, sp), q, k, v, do, log
                )
                bm = bk.flex_block_mask(rows, n)
                tr = lambda t: t.transpose(0, 1)[None]  # noqa: E731  (N, H, D) -> (1, H, N, D)
                qt, kt, vt, dot = (tr(t).contiguous() for t in (q, k, v, do))
                _timed(
                    row, "flex", lambda a, b, c: flex(a, b, c, block_mask=bm), qt, kt, vt, dot, log
                )
                flash = lambda a, b, c: flex(
                    a,
                    b,
                    c,
                    block_mask=bm,
                    kernel_options={"BACKEND": "FLASH"},
                )
                _timed(row, "flex_flash", flash, qt, kt, vt, dot, log)
                _timed(row, "sdpa", F.scaled_dot_product_attention, qt, kt, vt, dot, log)
                for a, b in (("fa4", "flex"), ("fa4", "fused"), ("fused", "flex")):
                    for ph in ("fwd", "fwdbwd"):
                        if f"{a}_{ph}_ms" in row and f"{b}_{ph}_ms" in row:
                            row[f"x_{a}_vs_{b}_{ph}"] = row[f"{b}_{ph}_ms"] / row[f"{a}_{ph}_ms"]
                log("    " + json.dumps(row))
                results.append(row)
                if args.out:
                    with open(os.path.join(args.out, "fa4_bench.jsonl"), "a") as f:
                        f.write(json.dumps(row) + "\n")
    if skipped:
        log(f"over budget, skipped (mask, N, D): {skipped}")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=[65536, 32768])
    p.add_argument("--head-dims", nargs="+", type=int, default=[32, 64])
    p.add_argument("--masks", nargs="+", default=["cluster", "window"])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--budget-s", type=float, default=240.0)
    args = p.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if not torch.cuda.is_available():
        log("needs a CUDA GPU")
        return 2
    log(json.dumps(environment(), default=str))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    run(args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
