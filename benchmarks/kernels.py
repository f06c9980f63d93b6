"""Attention kernels (Triton fused; FA4 with --fa4) vs FlexAttention vs SDPA (BENCHMARKS.md).

GPU, bf16, H = 8, head_dim 32 and 64, one event of N = 8k / 32k / 65k synthetic pixel hits;
masks: cluster (Part-2 groups, cluster_plan) and window (phi-sorted, W = 512). All inputs in
the plan's sorted order. Timed (median of triton.testing.do_bench):
  fused     — metadata build + kernels (the metadata is built inside every timed call),
              autotuned; fused_fixed the same with the fixed default configs (tune=False);
  base      — with --baseline DIR: DIR/oldk, a copy of an earlier kernels/ package (imports
              renamed to oldk), fixed configs, same inputs: before/after in one run;
  fused_be  — the registered backend: perm gather, metadata, kernels, inverse scatter;
  flex      — FlexAttention kernel alone (compiled), BlockMask prebuilt; its build timed apart;
  sdpa      — dense attention over the whole event (no mask), the rate reference.
Before timing, every fused output is checked: poisoned (NaN) buffers fully written, and
sampled rows against a float64 reference; fused vs flex on the same mask.
--sweep times fixed-config variants and timing probes at the largest N (registers, spills and
CTAs per SM of each compiled kernel included).

--fa4: FA4 (Hopper, flash-attn-4 kernels compiled ahead of time, benchmarks/fa4_build.py)
beside the Triton kernels, FlexAttention and SDPA on identical masks; N = 65536 and 32768,
D = 32 then 64 by default, --budget-s the whole run's budget (the tail it cuts is printed).
Per (mask, N, D), median ms fwd and fwd+bwd of

  fa4        — FA4 kernels, block lists built inside every timed call (2 launches, "meta");
  fa4_kernel — the same with the lists prebuilt;
  fused      — the Triton kernels (autotuned), metadata inside every call;
  flex       — compiled flex_attention, BlockMask prebuilt from the same per-row ranges;
  flex_flash — flex_attention with kernel_options BACKEND="FLASH" where torch offers it
               (it needs flash_attn.cute; the error is recorded otherwise);
  sdpa       — dense SDPA over the whole event (no mask), the rate reference.
Before timing: FA4 outputs NaN-poisoned and fully written, 64 sampled rows against float64,
FA4 vs Triton relative error. One JSON row per (mask, N, D) to OUT/fa4_bench.jsonl.

    python benchmarks/kernels.py --out DIR            (GPU)
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke   (CPU dry run of the code paths)
    ncu --launch-skip 3 --launch-count 3 -k regex:attention_ python benchmarks/kernels.py --profile
    TRACKFORMERS_FA4_KERNELS=... python benchmarks/kernels.py --fa4 --out DIR --budget-s 240
"""
# ruff: noqa: B023  (closures are timed right where they are defined)

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch
import torch._dynamo
import torch.nn.functional as F
from trackformers.kernels import fa4, ops
from trackformers.kernels.metadata import build_row_intervals

from trackformers.attention import build
from trackformers.attention.plans import cluster_plan, full_plan, presorted, window_plan
from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import environment

WINDOW = 512
GROUP_SIZE = 384  # (2*1+1) * 384 / 65536 = 1.76 % density at 65k, the issue's ~1.7 %
SECTOR_SIZE = 4096


def bench(fn, cuda: bool, rep_ms: float = 200.0) -> float:
    """Median milliseconds of fn()."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def make_plan(kind: str, batch):
    if kind == "cluster":
        return cluster_plan(batch, group_size=GROUP_SIZE, sector_size=SECTOR_SIZE)
    if kind == "window":
        return window_plan(batch, WINDOW)
    return full_plan(batch)


def attended_pairs(rows: torch.Tensor) -> int:
    r = rows.long()
    return int((r[1] - r[0]).clamp_min(0).sum() + (r[3] - r[2]).clamp_min(0).sum())


def flex_block_mask(rows: torch.Tensor, n: int, block: int = 128):
    """BlockMask with exactly the fused mask: kv blocks from the per-row ranges (O(N + nb^2))."""
    from torch.nn.attention.flex_attention import BlockMask

    lo1, hi1, lo2, hi2 = rows.long()  # (N,) each
    nb = (n + block - 1) // block
    big = 1 << 40

    def per_block(x, fill, red):
        xp = torch.full((nb * block,), fill, dtype=torch.long, device=x.device)
        xp[:n] = x
        xp = xp.view(nb, block)
        return xp.amin(1) if red == "min" else xp.amax(1)

    has2 = hi2 > lo2
    a_lo, a_hi = per_block(lo1, big, "min"), per_block(hi1, -1, "max")
    b_lo = per_block(torch.where(has2, lo2, big), big, "min")
    b_hi = per_block(torch.where(has2, hi2, -1), -1, "max")
    f_lo, f_hi = per_block(lo1, -1, "max"), per_block(hi1, big, "min")
    ks = torch.arange(nb, device=rows.device) * block  # (nb,) key block starts
    ke = torch.clamp(ks + block, max=n)
    touched = ((ks[None] < a_hi[:, None]) & (ke[None] > a_lo[:, None])) | (
        (ks[None] < b_hi[:, None]) & (ke[None] > b_lo[:, None])
    )  # (nb, nb) block level only
    full = touched & (ks[None] >= f_lo[:, None]) & (ke[None] <= f_hi[:, None])
    partial = touched & ~full

    def lists(m):
        num = m.sum(1).int()[None, None]  # (1, 1, nb)
        idx = torch.argsort((~m).int(), dim=1, stable=True).int()[None, None]  # (1, 1, nb, nb)
        return num, idx

    def mask_mod(b, h, qi, kj):
        return ((kj >= lo1[qi]) & (kj < hi1[qi])) | ((kj >= lo2[qi]) & (kj < hi2[qi]))

    kv_num, kv_idx = lists(partial)
    f_num, f_idx = lists(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, f_num, f_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n, n)
    )


def sampled_reference(q, k, v, rows, idx):
    """float64 attention output of sampled rows idx from their allowed key ranges."""
    out = []
    scale = q.shape[-1] ** -0.5
    for i in idx.tolist():
        lo1, hi1, lo2, hi2 = (int(x) for x in rows[:, i])
        keys = torch.cat([torch.arange(lo1, hi1), torch.arange(lo2, hi2)]).to(q.device)
        s = torch.einsum("hd,mhd->hm", q[i].double(), k[keys].double()) * scale  # (H, m)
        out.append(torch.einsum("hm,mhd->hd", s.softmax(-1), v[keys].double()))
    return torch.stack(out)  # (S, H, D)


def plan_case(kind: str, batch, d: int, h: int, log):
    """The presorted plan of one case, its row intervals and the start of its results row.

    Args:
        kind: mask kind (``make_plan``).
        batch: one synthetic event.
        d: head dimension.
        h: heads.
        log: print function.

    Returns:
        (plan, presorted plan, row intervals, row dict with mask, N, D, H, pairs, density).
    """
    plan = make_plan(kind, batch)
    sp = presorted(plan)
    n = batch.num_hits
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
    pairs = attended_pairs(rows)
    row = {"mask": kind, "N": n, "D": d, "H": h, "pairs": pairs, "density": pairs / n / n}
    log(f"== {kind} N={n} D={d} density={row['density']:.4f}")
    return plan, sp, rows, row


def check(q, k, v, plan, rows, d, log) -> dict:
    """Poisoned outputs fully written; sampled rows match float64; returns errors."""
    n, h, _ = q.shape
    meta = ops.build_meta(plan, n, d)
    nan = float("nan")
    o = torch.full_like(q, nan)
    lse = torch.full((2, h, n), nan, device=q.device)
    ops.attention_forward(q, k, v, meta.fwd, d**-0.5, out=(o, lse), has_wrap=meta.has_wrap)
    do = torch.randn_like(q)
    grads = tuple(torch.full_like(q, nan) for _ in range(3))
    ops.attention_backward(
        do, q, k, v, o, lse, meta.bwd, d**-0.5, out=grads, has_wrap=meta.has_wrap
    )
    finite = all(bool(torch.isfinite(t).all()) for t in (o, lse, *grads))
    idx = torch.randint(0, n, (64,), device=q.device)
    ref = sampled_reference(q, k, v, rows.cpu(), idx.cpu())
    err = float((o[idx].double() - ref).norm() / ref.norm())
    res = {"all_written_finite": finite, "o_rel_err_vs_f64": err}
    log(f"    check: {res}")
    return res


def run(args) -> list[dict]:
    cuda = torch.cuda.is_available() and not args.smoke
    dev = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    results = []
    log = lambda s: print(s, flush=True)  # noqa: E731
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.cache_size_limit = 64  # one flex compile per (N, D) shape
    base_ops = None
    if args.baseline:  # a copy of an earlier kernels/ package, imported as oldk
        sys.path.insert(0, args.baseline)
        import oldk.ops as base_ops

    flex = torch.compile(flex_attention, dynamic=False) if cuda else flex_attention
    sizes = args.sizes
    for d in [] if args.sweep_only else args.head_dims:
        for n in sorted(sizes, reverse=True):  # autotune (keyed on head_dim) at the largest N
            batch = synthetic_batch([n], seed=n, device=dev)
            for kind in args.masks:
                h = args.heads
                plan, sp, rows, row = plan_case(kind, batch, d, h, log)
                q, k, v = (torch.randn(n, h, d, device=dev, dtype=dtype) for _ in range(3))
                row.update(check(q, k, v, sp, rows, d, log))
                qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
                do = torch.randn_like(q)

                def fused_fwd():
                    return ops.fused_attention(q, k, v, sp)

                def fused_fb():
                    o = ops.fused_attention(qg, kg, vg, sp)
                    return torch.autograd.grad(o, (qg, kg, vg), do)

                meta = ops.build_meta(sp, n, d)
                row["meta_ms"] = bench(lambda: ops.build_meta(sp, n, d), cuda)
                row["fused_fwd_ms"] = bench(fused_fwd, cuda)
                row["fused_fwdbwd_ms"] = bench(fused_fb, cuda)
                qf, kf, vf = (t.clone().requires_grad_() for t in (q, k, v))

                def fixed_fb(mod):  # fixed default configs (tune=False), metadata inside
                    o = mod.fused_attention(qf, kf, vf, sp, tune=False)
                    return torch.autograd.grad(o, (qf, kf, vf), do)

                row["fused_fixed_fwd_ms"] = bench(
                    lambda: ops.fused_attention(q, k, v, sp, tune=False), cuda
                )
                row["fused_fixed_fwdbwd_ms"] = bench(lambda: fixed_fb(ops), cuda)
                if base_ops is not None:  # the earlier kernels, same run, same inputs
                    row["base_fixed_fwd_ms"] = bench(
                        lambda: base_ops.fused_attention(q, k, v, sp, tune=False), cuda
                    )
                    row["base_fixed_fwdbwd_ms"] = bench(lambda: fixed_fb(base_ops), cuda)
                row["fused_kernel_fwd_ms"] = bench(
                    lambda: ops.fused_attention(q, k, v, sp, meta=meta), cuda
                )
                backend = build(
                    "fused",
                    mask=kind,
                    window=WINDOW,
                    group_size=GROUP_SIZE,
                    sector_size=SECTOR_SIZE,
                )
                qi, ki, vi = (t.clone().requires_grad_() for t in (q, k, v))

                def backend_fb():
                    plan.extra.clear()
                    o = backend(qi, ki, vi, plan)
                    return torch.autograd.grad(o, (qi, ki, vi), do)

                row["fused_backend_fwdbwd_ms"] = bench(backend_fb, cuda)
                row.update(flex_rows(flex, q, k, v, do, rows, sp, n, cuda, log))
                row.update(sdpa_rows(q, k, v, do, cuda))
                flops = 4 * row["pairs"] * d * h
                for key in ("fused_fwd", "flex_fwd"):
                    if f"{key}_ms" in row:
                        row[f"{key}_tflops"] = flops / row[f"{key}_ms"] / 1e9
                for key in ("fused_fwdbwd", "flex_fwdbwd"):
                    if f"{key}_ms" in row:
                        row[f"{key}_tflops"] = 3.5 * flops / row[f"{key}_ms"] / 1e9
                if "sdpa_fwd_ms" in row:
                    dense = 4 * n * n * d * h
                    row["sdpa_fwd_tflops"] = dense / row["sdpa_fwd_ms"] / 1e9
                    row["sdpa_fwdbwd_tflops"] = 3.5 * dense / row["sdpa_fwdbwd_ms"] / 1e9
                    row["fused_fwd_frac_sdpa"] = row["fused_fwd_tflops"] / row["sdpa_fwd_tflops"]
                    row["fused_fwdbwd_frac_sdpa"] = (
                        row["fused_fwdbwd_tflops"] / row["sdpa_fwdbwd_tflops"]
                    )
                    row["speedup_fwd_vs_flex"] = row["flex_fwd_ms"] / row["fused_fwd_ms"]
                    row["speedup_fwdbwd_vs_flex"] = row["flex_fwdbwd_ms"] / row["fused_fwdbwd_ms"]
                if cuda:
                    row["tuned"] = tuned_configs()
                log("    " + json.dumps(row, default=str))
                results.append(row)
                if args.out:
                    with open(os.path.join(args.out, "kernels_bench.jsonl"), "a") as f:
                        f.write(json.dumps(row, default=str) + "\n")
    if args.sweep:
        results += sweep(args, log)
    return results


def flex_rows(flex, q, k, v, do, rows, sp, n, cuda, log) -> dict:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    bm = flex_block_mask(rows, n)
    sync()
    first_build = (time.perf_counter() - t0) * 1e3
    qt, kt, vt, dot = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v, do))
    qg, kg, vg = (t.clone().requires_grad_() for t in (qt, kt, vt))
    out = flex(qt, kt, vt, block_mask=bm)  # (1, H, N, D)
    fused = ops.fused_attention(q, k, v, sp)
    err = float((out[0].transpose(0, 1).float() - fused.float()).norm() / out.float().norm())
    log(f"    fused vs flex rel err {err:.2e}")

    def fb():
        o = flex(qg, kg, vg, block_mask=bm)
        return torch.autograd.grad(o, (qg, kg, vg), dot)

    return {
        "flex_mask_build_ms": bench(lambda: flex_block_mask(rows, n), cuda),
        "flex_mask_first_build_ms": first_build,
        "flex_fwd_ms": bench(lambda: flex(qt, kt, vt, block_mask=bm), cuda),
        "flex_fwdbwd_ms": bench(fb, cuda) if cuda else float("nan"),  # no CPU backward
        "fused_vs_flex_rel_err": err,
    }


def sdpa_rows(q, k, v, do, cuda) -> dict:
    qt, kt, vt, dot = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v, do))
    qg, kg, vg = (t.clone().requires_grad_() for t in (qt, kt, vt))

    def fb():
        o = F.scaled_dot_product_attention(qg, kg, vg)
        return torch.autograd.grad(o, (qg, kg, vg), dot)

    return {
        "sdpa_fwd_ms": bench(lambda: F.scaled_dot_product_attention(qt, kt, vt), cuda, 400),
        "sdpa_fwdbwd_ms": bench(fb, cuda, 400),
    }


def tuned_configs() -> dict:
    """Chosen config per autotuned kernel, and every candidate's time at the last tuning."""
    out = {}
    for key, kern in ops._TUNED.items():
        timings = getattr(kern, "configs_timings", None) or {}
        if timings:
            out[f"{key}_timings"] = {
                str(c): [
                    round(float(t), 4) for t in (ms if isinstance(ms, (list, tuple)) else [ms])
                ]
                for c, ms in timings.items()
            }
        cfg = getattr(kern, "best_config", None)
        if cfg is not None:
            out[key] = (
                f"BN={cfg.kwargs.get('BLOCK_N')} rowsum_mma={cfg.kwargs.get('ROWSUM_MMA')} "
                f"w={cfg.num_warps} s={cfg.num_stages} maxnreg={cfg.maxnreg}"
            )
    return out


def kernel_resources(kern, num_warps: int) -> dict:
    """Registers, spills, shared memory and the resulting CTAs per SM of a compiled kernel."""
    if kern is None or not hasattr(kern, "n_regs"):
        return {}
    regs, shared = int(kern.n_regs), int(kern.metadata.shared)
    by_regs = 65536 // max(1, regs * 32 * num_warps)
    by_smem = (228 * 1024) // max(1, shared + 1024)  # 1 KB reserved per CTA
    ctas = max(0, min(by_regs, by_smem, 64 // num_warps, 32))
    return {
        "regs": regs,
        "spills": int(kern.n_spills),
        "smem": shared,
        "ctas_per_sm": ctas,
        "warps_per_sm": ctas * num_warps,
    }


# Forward variants at the largest N: (block_m, block_n, warps, stages, maxnreg) and flags.
FWD_VARIANTS = [  # in order of interest (the sweep budget may cut the tail)
    ((64, 64, 4, 3, 128), {}),  # default (D <= 32)
    ((64, 64, 4, 3, 128), {"PIPE_QK": True}),
    ((64, 32, 4, 3, None), {"PIPE_QK": True}),
    ((64, 32, 4, 3, 80), {}),
    ((64, 64, 4, 3, 128), {"PROBE": 3}),  # probe: no softmax
    ((64, 64, 4, 3, 128), {"PROBE": 1}),  # probe: exp replaced by a cast
    ((64, 64, 4, 3, 128), {"ROWSUM_MMA": False}),
    ((64, 64, 4, 3, 112), {}),
    ((64, 32, 4, 4, None), {}),
    ((128, 64, 8, 3, 128), {}),
    ((64, 64, 4, 3, None), {}),  # previous default
]
# Backward variants: dK/dV config, dQ config (same block_m), flags.
BWD_VARIANTS = [
    ((64, 32, 4, 3, None), (64, 32, 4, 3, None), {}),  # default
    ((64, 32, 4, 3, 128), (64, 32, 4, 3, 128), {}),
    ((64, 32, 4, 4, None), (64, 32, 4, 4, None), {}),
    ((64, 32, 4, 3, None), (64, 32, 4, 3, 80), {}),
    ((64, 32, 4, 3, None), (64, 64, 4, 3, 128), {}),
    ((64, 32, 4, 2, None), (64, 32, 4, 2, None), {}),  # previous default
]


def _set_flags(flags: dict) -> dict:
    names = ("FAST_EXP", "ROWSUM_MMA", "PIPE_QK", "PROBE", "ATOMIC_DQ")
    saved = {k: getattr(ops, k) for k in names}
    for k, val in flags.items():
        setattr(ops, k, val)
    return saved


def sweep(args, log) -> list[dict]:
    """Fixed configs (tune=False) incl. the metadata tile size block_m, at the largest N.

    Every variant is one row (ms, registers, spills, CTAs per SM); one that fails to compile
    is recorded with its error. Stops adding variants after --budget-s seconds per mask and
    direction (forward, backward).
    """
    n = max(args.sizes)
    out = []
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.smoke
    dev = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32

    def record(row):
        out.append(row)
        log("    sweep " + json.dumps(row, default=str))
        if args.out:
            with open(os.path.join(args.out, "kernels_sweep.jsonl"), "a") as f:
                f.write(json.dumps(row, default=str) + "\n")

    def over_budget() -> bool:
        return time.perf_counter() - t_start > args.budget_s

    for d in args.sweep_dims:
        batch = synthetic_batch([n], seed=n, device=dev)
        for kind in args.masks:
            t_start = time.perf_counter()  # the budget holds per mask
            sp = presorted(make_plan(kind, batch))
            q, k, v, do = (torch.randn(n, args.heads, d, device=dev, dtype=dtype) for _ in range(4))
            if kind == "cluster":  # metadata: group_ptr path against the binary searches
                for ptr in (True, False):
                    plan_m = sp if ptr else dataclasses.replace(sp, group_ptr=None)
                    ms = bench(lambda: ops.build_meta(plan_m, n, d), cuda)
                    record(
                        {"sweep": "meta", "mask": kind, "N": n, "D": d, "group_ptr": ptr, "ms": ms}
                    )
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

            def fb():  # default configs, metadata built inside, fwd + bwd
                o = ops.fused_attention(qg, kg, vg, sp, tune=False)
                return torch.autograd.grad(o, (qg, kg, vg), do)

            fwd_ms = bench(lambda: ops.fused_attention(q, k, v, sp, tune=False), cuda)
            record(
                {
                    "sweep": "total",
                    "mask": kind,
                    "N": n,
                    "D": d,
                    "fwd_ms": fwd_ms,
                    "fwdbwd_ms": bench(fb, cuda),
                }
            )
            fwd0, bwd0, dq0 = ops.FWD_CONFIGS[d], ops.BWD_CONFIGS[d], ops.DQ_CONFIGS[d]
            for fv, flags in FWD_VARIANTS:
                if over_budget():
                    break
                ops.FWD_CONFIGS[d] = ops.KernelConfig(*fv)
                saved = _set_flags(flags)
                row = {"sweep": "fwd", "mask": kind, "N": n, "D": d, "cfg": fv, "flags": flags}
                try:
                    meta = ops.build_meta(sp, n, d)
                    ms = bench(
                        lambda: ops.fused_attention(q, k, v, sp, meta=meta, tune=False),
                        cuda,
                        args.sweep_rep_ms,
                    )
                    row.update(ms=ms, **kernel_resources(ops.LAST_KERNEL.get("fwd"), fv[2]))
                except Exception as e:  # a variant that does not compile is a result too
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                finally:
                    _set_flags(saved)
                    ops.FWD_CONFIGS[d] = fwd0
                record(row)
            meta = ops.build_meta(sp, n, d)
            o, lse = ops.attention_forward(q, k, v, meta.fwd, d**-0.5, has_wrap=meta.has_wrap)
            t_start = time.perf_counter()  # the backward variants get their own budget
            for kv_cfg, dq_cfg, flags in BWD_VARIANTS:
                if over_budget():
                    break
                ops.BWD_CONFIGS[d] = ops.KernelConfig(*kv_cfg)
                ops.DQ_CONFIGS[d] = ops.KernelConfig(*dq_cfg)
                saved = _set_flags(flags)
                row = {
                    "sweep": "bwd",
                    "mask": kind,
                    "N": n,
                    "D": d,
                    "cfg": kv_cfg,
                    "dq_cfg": dq_cfg,
                    "flags": flags,
                }
                try:
                    meta_b = ops.build_meta(sp, n, d).bwd  # stats o, lse are per row
                    ms = bench(
                        lambda: ops.attention_backward(
                            do,
                            q,
                            k,
                            v,
                            o,
                            lse,
                            meta_b,
                            d**-0.5,
                            tune=False,
                            has_wrap=meta.has_wrap,
                        ),
                        cuda,
                        args.sweep_rep_ms,
                    )
                    row.update(ms=ms)
                    for name, c in (("dkdv", kv_cfg), ("dq", dq_cfg)):
                        res = kernel_resources(ops.LAST_KERNEL.get(name), c[2])
                        row.update({f"{name}_{key}": val for key, val in res.items()})
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                finally:
                    _set_flags(saved)
                    ops.BWD_CONFIGS[d], ops.DQ_CONFIGS[d] = bwd0, dq0
                record(row)
    return out


def profile_once(args) -> None:
    """One fixed-config fwd + bwd per mask at the largest N, run twice (compile, then the
    launch to profile): for `ncu --launch-skip 3 --launch-count 3` (README limit analysis)."""
    n, d = max(args.sizes), args.head_dims[0]
    cuda = torch.cuda.is_available() and not args.smoke
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    batch = synthetic_batch([n], seed=n, device=dev)
    for kind in args.masks:
        sp = presorted(make_plan(kind, batch))
        q, k, v, do = (torch.randn(n, args.heads, d, device=dev, dtype=dtype) for _ in range(4))
        meta = ops.build_meta(sp, n, d)
        for _ in range(2):
            o, lse = ops.attention_forward(
                q, k, v, meta.fwd, d**-0.5, tune=False, has_wrap=meta.has_wrap
            )
            ops.attention_backward(
                do, q, k, v, o, lse, meta.bwd, d**-0.5, tune=False, has_wrap=meta.has_wrap
            )
            if cuda:
                torch.cuda.synchronize()
        print(f"profiled {kind} N={n} D={d}", flush=True)


def table(results) -> str:
    lines = [
        "| mask | N | D | density | meta ms | fused fwd | fused f+b | flex fwd | flex f+b "
        "| flex build | sdpa fwd | sdpa f+b | x flex fwd | x flex f+b | fused TF/s fwd "
        "| frac sdpa fwd | frac sdpa f+b | fixed fwd | fixed f+b | before fwd | before f+b |",
        "|" + "---|" * 21,
    ]
    for r in results:
        if "sweep" in r:
            continue
        g = lambda key, fmt="{:.3f}": fmt.format(r[key]) if key in r else "-"  # noqa: E731
        lines.append(
            f"| {r['mask']} | {r['N']} | {r['D']} | {r['density']:.4f} | {g('meta_ms')} | "
            f"{g('fused_fwd_ms')} | {g('fused_fwdbwd_ms')} | {g('flex_fwd_ms')} | "
            f"{g('flex_fwdbwd_ms')} | {g('flex_mask_build_ms')} | {g('sdpa_fwd_ms')} | "
            f"{g('sdpa_fwdbwd_ms')} | {g('speedup_fwd_vs_flex', '{:.2f}')} | "
            f"{g('speedup_fwdbwd_vs_flex', '{:.2f}')} | {g('fused_fwd_tflops', '{:.0f}')} | "
            f"{g('fused_fwd_frac_sdpa', '{:.2f}')} | {g('fused_fwdbwd_frac_sdpa', '{:.2f}')} | "
            f"{g('fused_fixed_fwd_ms')} | {g('fused_fixed_fwdbwd_ms')} | "
            f"{g('base_fixed_fwd_ms')} | {g('base_fixed_fwdbwd_ms')} |"
        )
    return "\n".join(lines)


# FA4 (--fa4): the flash-attn-4 kernels beside the Triton kernels, Flex and SDPA
FA4_REP_MS = 150.0  # do_bench repetition time of every FA4-run timing


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
        row[f"{name}_fwd_ms"] = bench(f, True, FA4_REP_MS)
        row[f"{name}_fwdbwd_ms"] = bench(fb, True, FA4_REP_MS)
    except Exception as e:  # a variant that cannot run is a result too
        row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"    {name}: {row[f'{name}_error']}")


def check_fa4(runner, q, k, v, rows, sp, log) -> dict:
    """NaN-poisoned FA4 outputs fully written; 64 sampled rows vs float64 (fwd)."""
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
    ref = sampled_reference(q, k, v, rows.cpu(), idx.cpu())
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


def run_fa4(args, log) -> list[dict]:
    """The --fa4 rows: FA4, fused, flex, flex_flash and SDPA per (mask, N, D) (GPU only)."""
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
                _, sp, rows, row = plan_case(kind, batch, d, h, log)
                q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=dtype) for _ in range(4))
                runner, why = fa4.choose(q.device, dtype, d, n)
                row["fa4_runner"] = why
                if runner is not None:
                    row.update(check_fa4(runner, q, k, v, rows, sp, log))
                    row["meta_ms"] = bench(lambda: fa4.build_layout(sp, n), True, FA4_REP_MS)
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
                bm = flex_block_mask(rows, n)
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
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="events' N (default 8192 32768 65536; with --fa4 65536 32768)",
    )
    p.add_argument("--head-dims", type=int, nargs="+", default=[32, 64])
    p.add_argument("--masks", nargs="+", default=["cluster", "window"])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--sweep", action="store_true", help="also time fixed configs (tune=False)")
    p.add_argument("--sweep-dims", type=int, nargs="+", default=[32])
    p.add_argument("--sweep-only", action="store_true", help="skip the side-by-side table")
    p.add_argument("--sweep-rep-ms", type=float, default=100.0)
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds: per-mask sweep budget (default none); with --fa4 the run's (default 240)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of the code paths")
    p.add_argument("--baseline", default=None, help="dir holding oldk/ (earlier kernels/)")
    p.add_argument("--profile", action="store_true", help="fixed-config launches for ncu")
    p.add_argument(
        "--fa4",
        action="store_true",
        help="FA4 beside fused, flex, flex_flash and SDPA (GPU; rows to OUT/fa4_bench.jsonl)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = [65536, 32768] if args.fa4 else [8192, 32768, 65536]
    if args.budget_s is None:
        args.budget_s = 240.0 if args.fa4 else 1e9
    if args.fa4:
        return main_fa4(args)
    if args.smoke:
        global WINDOW, GROUP_SIZE, SECTOR_SIZE
        args.sizes, args.head_dims, args.heads = [300], [32], 2
        WINDOW, GROUP_SIZE, SECTOR_SIZE = 20, 16, 64
    env = environment()
    print(json.dumps(env), flush=True)
    if args.profile:
        profile_once(args)
        return 0
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    results = run(args)
    if args.out:
        with open(os.path.join(args.out, "kernels_bench.json"), "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1, default=str)
    print(table(results))
    return 0


def main_fa4(args) -> int:
    """The --fa4 run: environment line, then the rows (exit code 2 without a CUDA GPU)."""
    log = lambda s: print(s, flush=True)  # noqa: E731
    if not torch.cuda.is_available():
        log("needs a CUDA GPU")
        return 2
    log(json.dumps(environment(), default=str))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    run_fa4(args, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
