"""Fused Triton attention on the GPU: bf16/fp16 at full size, poisoned outputs, no recompiles.

Tolerances per .library METHOD.md: bf16/fp16 operands land between 1e-3 and 1e-2 relative
error against float64; NaN never passes (every output buffer starts NaN-poisoned).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _plans(n_events: list[int], window: int, group_size: int):
    from trackformers.attention.plans import cluster_plan, full_plan, presorted, window_plan
    from trackformers.attention.synthetic import synthetic_batch

    batch = synthetic_batch(n_events, seed=len(n_events), device="cuda")
    return {
        "full": full_plan(batch),
        "cluster": presorted(cluster_plan(batch, group_size=group_size)),
        "window": presorted(window_plan(batch, window)),
    }


def _poisoned_run(q, k, v, do, plan):
    from trackformers.kernels import ops

    n, h, d = q.shape
    meta = ops.build_meta(plan, n, d)
    nan = float("nan")
    o, lse = torch.full_like(q, nan), torch.full((2, h, n), nan, device=q.device)
    ops.attention_forward(
        q, k, v, meta.fwd, d**-0.5, tune=False, out=(o, lse), has_wrap=meta.has_wrap
    )
    grads = tuple(torch.full_like(q, nan) for _ in range(3))
    ops.attention_backward(
        do, q, k, v, o, lse, meta.bwd, d**-0.5, False, grads, has_wrap=meta.has_wrap
    )
    torch.cuda.synchronize()
    return o, lse, grads


def _rel(a, b) -> float:
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 128])
def test_multi_event_fwd_bwd_vs_float64(dtype, d):
    from trackformers.attention.plans import dense_mask_reference

    sizes = [1500, 1, 700, 1900]  # ragged; single-hit event included
    for name, plan in _plans(sizes, window=100, group_size=64).items():
        n, h = sum(sizes), 5
        q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=dtype) for _ in range(4))
        o, lse, (dq, dk, dv) = _poisoned_run(q, k, v, do, plan)
        for t in (o, lse, dq, dk, dv):
            assert torch.isfinite(t).all(), (name, "unwritten or non-finite output")
        x64 = [t.double().requires_grad_() for t in (q, k, v)]
        mask = dense_mask_reference(plan)  # (N, N) reference only
        s = torch.einsum("nhd,mhd->hnm", x64[0], x64[1]) * d**-0.5
        ref = torch.einsum("hnm,mhd->nhd", s.masked_fill(~mask, float("-inf")).softmax(-1), x64[2])
        g = torch.autograd.grad(ref, x64, do.double())
        for nm, got, want in zip(("o", "dq", "dk", "dv"), (o, dq, dk, dv), (ref, *g), strict=True):
            assert _rel(got, want.detach()) < 1e-2, (name, nm, _rel(got, want.detach()))


def test_atomic_dq_variant(monkeypatch):
    """The backward variant adding dQ by atomics gives the same gradients."""
    from trackformers.kernels import ops

    monkeypatch.setattr(ops, "ATOMIC_DQ", not ops.ATOMIC_DQ)
    test_multi_event_fwd_bwd_vs_float64(torch.bfloat16, 32)


@pytest.mark.parametrize("kind", ["cluster", "window"])
def test_full_size_bf16_sampled_rows(kind):
    """N = 65536, H = 8, D = 32: all outputs written; sampled rows (o, dq) match float64."""
    from trackformers.kernels.metadata import build_row_intervals

    n, h, d = 65536, 8, 32
    plan = _plans([n], window=512, group_size=384)[kind]
    q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    o, lse, (dq, dk, dv) = _poisoned_run(q, k, v, do, plan)
    for t in (o, lse, dq, dk, dv):
        assert torch.isfinite(t).all()
    rows = build_row_intervals(
        plan.kind,
        plan.cu_seqlens,
        plan.max_seqlen,
        plan.group_id,
        plan.adjacency,
        plan.window,
        num_rows=n,
    ).cpu()
    idx = torch.randint(0, n, (48,)).tolist()
    for i in idx:
        lo1, hi1, lo2, hi2 = (int(x) for x in rows[:, i])
        keys = torch.cat([torch.arange(lo1, hi1), torch.arange(lo2, hi2)]).cuda()
        qi = q[i].double().requires_grad_()
        s = torch.einsum("hd,mhd->hm", qi, k[keys].double()) * d**-0.5  # (H, m)
        oi = torch.einsum("hm,mhd->hd", s.softmax(-1), v[keys].double())
        (gq,) = torch.autograd.grad(oi, qi, do[i].double())
        assert _rel(o[i], oi.detach()) < 1e-2
        assert _rel(dq[i], gq) < 2e-2


def test_no_recompile_when_n_changes():
    from trackformers.kernels import ops
    from trackformers.kernels.bwd import (
        attention_bwd_dkdv_kernel,
        attention_bwd_dq_kernel,
        bwd_preprocess_kernel,
    )
    from trackformers.kernels.fwd import attention_fwd_kernel
    from trackformers.kernels.metadata import _row_meta_kernel, _tile_meta_kernel

    from trackformers.attention.plans import presorted, window_plan
    from trackformers.attention.synthetic import synthetic_batch

    def compiled():
        fns = (
            attention_fwd_kernel,
            attention_bwd_dq_kernel,
            attention_bwd_dkdv_kernel,
            bwd_preprocess_kernel,
            _row_meta_kernel,
            _tile_meta_kernel,
        )
        return sum(len(c[0]) for f in fns for c in f.device_caches.values())

    def step(n):
        plan = presorted(window_plan(synthetic_batch([n, n // 3 + 1], device="cuda"), 64))
        m = n + n // 3 + 1
        q = torch.randn(m, 4, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        ops.fused_attention(q, q, q, plan).sum().backward()
        torch.cuda.synchronize()

    step(4096)
    before = compiled()
    for n in (5001, 777, 12289):
        step(n)
    assert compiled() == before
