"""Fused Triton attention kernels on CPU under TRITON_INTERPRET=1, against float64 references.

Triton reads TRITON_INTERPRET when a kernel is decorated, so the checks run in ONE child
process started with that variable (this file run as a script); the variable never reaches
other test modules. Each test below asserts one part of the child's JSON report.
bf16 is not emulated by the interpreter (numpy has no bfloat16): float32 and float16 here,
bf16 in tests/test_kernels_gpu.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import pytest
from interp_child import run_child

LENGTHS = [37, 0, 1, 60, 23, 2, 0]  # ragged events, empty and single-hit ones included


def _plans(torch, gen, lengths=LENGTHS):
    """Hand-built plans in sorted order with the field meanings of base.py."""
    from trackformers.attention.base import AttentionPlan

    lens = torch.tensor(lengths)
    cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).int()
    gid, g = [], 0
    for n in lengths:
        left = n
        while left > 0:
            s = min(left, int(torch.randint(1, 10, (1,), generator=gen)))
            gid += [g] * s
            g += int(torch.randint(1, 3, (1,), generator=gen))  # ids may skip values
            left -= s
    gid = torch.tensor(gid, dtype=torch.int32)
    # consecutive ids with group_ptr (as cluster_plan builds them): the O(1) metadata path
    new = torch.ones(len(gid), dtype=torch.bool)
    new[1:] = gid[1:] != gid[:-1]
    cid = (new.long().cumsum(0) - 1).int()  # (N,) consecutive group ids
    ptr = torch.cat([torch.nonzero(new).squeeze(1), torch.tensor([len(gid)])]).int()  # (G+1,)
    m = max(lengths)
    return {
        "full": AttentionPlan("full", cu, m),
        "cluster1": AttentionPlan("cluster", cu, m, group_id=gid, adjacency=1),
        "cluster2": AttentionPlan("cluster", cu, m, group_id=gid, adjacency=2),
        "cluster0": AttentionPlan("cluster", cu, m, group_id=gid, adjacency=0),
        "cluster1p": AttentionPlan("cluster", cu, m, group_id=cid, group_ptr=ptr, adjacency=1),
        "cluster2p": AttentionPlan("cluster", cu, m, group_id=cid, group_ptr=ptr, adjacency=2),
        "window3": AttentionPlan("window", cu, m, window=3),
        "window11": AttentionPlan("window", cu, m, window=11),
        "window20": AttentionPlan("window", cu, m, window=20),
    }


def _reference(torch, q, k, v, mask, scale):
    s = torch.einsum("nhd,mhd->hnm", q, k) * scale  # (H, N, N)
    p = s.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("hnm,mhd->nhd", p, v)  # (N, H, D)


def _rel(a, b) -> float:
    return float((a.double() - b).norm() / b.norm().clamp_min(1e-30))


def case_metadata(torch, gen):
    """Per-row ranges equal the mask rows; tiles cover rows once and every allowed key."""
    from trackformers.kernels.metadata import build_block_meta, build_row_intervals, build_tiles

    from trackformers.attention.plans import dense_mask_reference

    out = {}
    for name, plan in _plans(torch, gen).items():
        n = int(plan.cu_seqlens[-1])
        mask = dense_mask_reference(plan)  # (N, N)
        rows = build_row_intervals(
            plan.kind,
            plan.cu_seqlens,
            plan.max_seqlen,
            plan.group_id,
            plan.adjacency,
            plan.window,
            num_rows=n,
            group_ptr=plan.group_ptr,
        ).long()
        j = torch.arange(n)[None, :]
        got = ((j >= rows[0, :, None]) & (j < rows[1, :, None])) | (
            (j >= rows[2, :, None]) & (j < rows[3, :, None])
        )
        bad_rows = int((got != mask).any(1).sum())
        bad_tiles, covered = 0, torch.zeros(n, dtype=torch.long)
        for bm in (8, 16):
            tiles = build_tiles(plan.cu_seqlens, rows.int(), bm).long()
            if bm == 16:
                one_launch = build_block_meta(plan, n, bm)  # rows and tiles in one kernel
                bad_tiles += int(not torch.equal(one_launch.rows.long(), rows))
                bad_tiles += int(not torch.equal(one_launch.tiles.long(), tiles))
            covered.zero_()
            for qs, qe, a_lo, f_lo, f_hi, a_hi, b_lo, b_hi in tiles.tolist():
                covered[qs:qe] += 1
                if qe <= qs:
                    continue
                seen = torch.zeros(n, dtype=torch.long)
                seen[a_lo:a_hi] += 1
                seen[b_lo:b_hi] += 1
                full = torch.zeros(n, dtype=torch.bool)
                full[f_lo:f_hi] = True
                ok = (seen <= 1).all() and (seen[mask[qs:qe].any(0)] == 1).all()
                ok = ok and (mask[qs:qe][:, full].all()) and a_lo <= f_lo <= f_hi <= a_hi
                bad_tiles += int(not ok)
            bad_tiles += int((covered != 1).any())
        out[name] = {"bad_rows": bad_rows, "bad_tiles": bad_tiles}
    return out


def _kernel_errors(torch, gen, plan, h, d, dtype, poison=True):
    import trackformers.kernels.ops as ops

    n = int(plan.cu_seqlens[-1])
    scale = d**-0.5
    q, k, v, do = (torch.randn(n, h, d, generator=gen).to(dtype) for _ in range(4))
    meta = ops.build_meta(plan, n, d)
    nan = float("nan")
    o_out = (torch.full_like(q, nan), torch.full((2, h, n), nan)) if poison else None
    o, lse = ops.attention_forward(
        q, k, v, meta.fwd, scale, tune=False, out=o_out, has_wrap=meta.has_wrap
    )
    g_out = tuple(torch.full_like(q, nan) for _ in range(3)) if poison else None
    dq, dk, dv = ops.attention_backward(
        do, q, k, v, o, lse, meta.bwd, scale, False, g_out, has_wrap=meta.has_wrap
    )
    x64 = [t.double().requires_grad_() for t in (q, k, v)]
    from trackformers.attention.plans import dense_mask_reference

    ref = _reference(torch, *x64, dense_mask_reference(plan), scale)
    ref.backward(do.double())
    res = {"o": _rel(o, ref.detach())}
    for nm, got, x in zip(("dq", "dk", "dv"), (dq, dk, dv), x64, strict=True):
        res[nm] = _rel(got, x.grad)
    res["finite"] = bool(all(torch.isfinite(t).all() for t in (o, lse, dq, dk, dv)))
    return res


def _small_tiles(ops):
    for d in ops.HEAD_DIMS:
        ops.FWD_CONFIGS[d] = ops.KernelConfig(16, 16, 4, 1)
        ops.BWD_CONFIGS[d] = ops.KernelConfig(16, 8, 4, 1)
        ops.DQ_CONFIGS[d] = ops.KernelConfig(16, 16, 4, 1)  # dQ's own key block


def case_attention_fp32(torch, gen):
    plans = _plans(torch, gen)
    names = ("full", "cluster1", "cluster2", "cluster2p", "window3", "window11")  # all paths
    return {nm: _kernel_errors(torch, gen, plans[nm], 2, 32, torch.float32) for nm in names}


def case_head_dims(torch, gen):
    plans = _plans(torch, gen, [37, 1, 23])
    return {
        "d16_h3_window11": _kernel_errors(torch, gen, plans["window11"], 3, 16, torch.float32),
        "d64_h3_cluster1": _kernel_errors(torch, gen, plans["cluster1"], 3, 64, torch.float32),
        "d128_h1_window3": _kernel_errors(torch, gen, plans["window3"], 1, 128, torch.float32),
    }


def case_variants(torch, gen):
    """The non-default variants: row sums on the other unit, dQ by atomics (or not), the
    forward body with the next block's QK product issued early (or not)."""
    import trackformers.kernels.ops as ops

    saved = ops.ROWSUM_MMA, ops.ATOMIC_DQ, ops.PIPE_QK
    ops.ROWSUM_MMA, ops.ATOMIC_DQ, ops.PIPE_QK = (not x for x in saved)
    try:
        plans = _plans(torch, gen, [37, 1, 23])  # full: bodies of 2 blocks (pipelined QK)
        return {
            nm: _kernel_errors(torch, gen, plans[nm], 2, 32, torch.float32)
            for nm in ("window11", "cluster1", "full")
        }
    finally:
        ops.ROWSUM_MMA, ops.ATOMIC_DQ, ops.PIPE_QK = saved


def case_fp16(torch, gen):
    plans = _plans(torch, gen, [37, 1, 23])
    return {"window11": _kernel_errors(torch, gen, plans["window11"], 2, 32, torch.float16)}


def case_backend(torch, gen):
    """The registered backend (perm gather, autograd) against the dense backend in float64."""
    from trackformers.attention import build
    from trackformers.attention.synthetic import synthetic_batch

    batch = synthetic_batch([50, 1, 70], seed=3)
    out = {}
    for mask in ("cluster", "window", "full"):
        fused = build("fused", mask=mask, window=9, group_size=8, sector_size=32)
        plan = fused.plan(batch)
        n = batch.num_hits
        q, k, v = (torch.randn(n, 2, 32, generator=gen, requires_grad=True) for _ in range(3))
        o = fused(q, k, v, plan)
        do = torch.randn_like(o)
        grads = torch.autograd.grad(o, (q, k, v), do)
        x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
        ref = build("dense")(*x64, plan)
        ref_grads = torch.autograd.grad(ref, x64, do.double())
        res = {"o": _rel(o.detach(), ref.detach())}
        for nm, g, r in zip(("dq", "dk", "dv"), grads, ref_grads, strict=True):
            res[nm] = _rel(g, r)
        res["cached_meta"] = any(key.startswith("fused_meta") for key in plan.extra)
        out[mask] = res
    return out


CASES = {
    "metadata": case_metadata,
    "attention_fp32": case_attention_fp32,
    "head_dims": case_head_dims,
    "fp16": case_fp16,
    "variants": case_variants,
    "backend": case_backend,
}


def _worker() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    import trackformers.kernels.ops as ops

    _small_tiles(ops)
    torch.set_num_threads(1)
    results = {}
    for name, fn in CASES.items():
        gen = torch.Generator().manual_seed(7)
        t0 = time.perf_counter()
        try:
            results[name] = fn(torch, gen)
            print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        except Exception:  # reported to the parent test, which fails on it
            results[name] = {"error": traceback.format_exc()}
    print(json.dumps(results))


@pytest.fixture(scope="module")
def interp():
    return run_child(__file__, timeout=600)


def _case(interp, name):
    res = interp[name]
    assert "error" not in res, res.get("error")
    return res


def test_interpreter_does_not_leak():
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"


def test_metadata_exact(interp):
    res = _case(interp, "metadata")
    assert set(res) == {
        "full",
        "cluster1",
        "cluster2",
        "cluster0",
        "cluster1p",
        "cluster2p",
        "window3",
        "window11",
        "window20",
    }
    for name, r in res.items():
        assert r == {"bad_rows": 0, "bad_tiles": 0}, (name, r)


def _assert_close(res, tol):
    for name, r in res.items():
        assert r["finite"], (name, "unwritten (NaN-poisoned) or non-finite output")
        for key in ("o", "dq", "dk", "dv"):
            assert r[key] < tol, (name, key, r[key])


def test_forward_backward_fp32_all_masks(interp):
    res = _case(interp, "attention_fp32")
    assert len(res) == 6
    _assert_close(res, 1e-5)


def test_head_dims_and_heads(interp):
    _assert_close(_case(interp, "head_dims"), 1e-5)


def test_rowsum_atomic_dq_and_pipelined_qk_variants(interp):
    _assert_close(_case(interp, "variants"), 1e-5)


def test_fp16_inputs(interp):
    _assert_close(_case(interp, "fp16"), 1e-2)


def test_backend_matches_dense_backend(interp):
    res = _case(interp, "backend")
    assert set(res) == {"cluster", "window", "full"}
    for mask, r in res.items():
        assert r["cached_meta"], mask
        for key in ("o", "dq", "dk", "dv"):
            assert r[key] < 1e-5, (mask, key, r[key])


def test_backend_refuses_cpu_without_interpreter():
    import torch

    from trackformers.attention import build
    from trackformers.attention.synthetic import synthetic_batch

    fused = build("fused", mask="window", window=4)
    assert fused.capabilities.devices == ("cuda",)
    batch = synthetic_batch([20])
    q = torch.randn(20, 2, 32)
    with pytest.raises(RuntimeError, match="CUDA"):
        fused(q, q, q, fused.plan(batch))


if __name__ == "__main__":
    _worker()
