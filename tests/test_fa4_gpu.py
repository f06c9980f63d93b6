"""FA4 path of the fused attention on a Hopper GPU: the checks of tests/test_kernels_gpu.py.

Needs sm90 and FA4 (``flash_attn.cute`` or ``$TRACKFORMERS_FA4_KERNELS``, see
data_local/fa4/README); a test FAILS (never skips) when FA4 cannot run, with the reason.
float64 dense reference, NaN-poisoned outputs, bf16/fp16, head_dim 32/64/128 (FA4 on sm90
also takes other multiples of 8, not built here; fp32 and head_dim 16 stay on Triton).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _runner(dtype=torch.bfloat16, d=64, n=4096):
    from trackformers.kernels import fa4

    runner, why = fa4.choose(torch.device("cuda"), dtype, d, n)
    if runner is None:
        pytest.fail(f"FA4 path unavailable: {why}")
    return runner


def _plans(sizes, window, group_size):
    from trackformers.attention.plans import cluster_plan, full_plan, presorted, window_plan
    from trackformers.attention.synthetic import synthetic_batch

    batch = synthetic_batch(sizes, seed=len(sizes), device="cuda")
    return {
        "full": full_plan(batch),
        "cluster": presorted(cluster_plan(batch, group_size=group_size)),
        "window": presorted(window_plan(batch, window)),
    }


def _poisoned(runner, q, k, v, do, plan):
    """FA4 forward and backward into NaN-filled buffers (every element must be written)."""
    from trackformers.kernels import fa4

    n, h, d = q.shape
    lay = fa4.build_layout(plan, n, check=True)
    nan = float("nan")
    q4, k4, v4, do4 = q[None], k[None], v[None], do[None]
    o, lse = torch.full_like(q4, nan), torch.full((1, h, n), nan, device="cuda")
    runner.forward(q4, k4, v4, lay, d**-0.5, out=(o, lse))
    grads = tuple(torch.full_like(q4, nan) for _ in range(3))
    runner.backward(q4, k4, v4, o, do4, lse, lay, d**-0.5, grads=grads)
    torch.cuda.synchronize()
    return o[0], lse, tuple(g[0] for g in grads)


def _rel(a, b) -> float:
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 128])
def test_multi_event_fwd_bwd_vs_float64(dtype, d):
    from trackformers.attention.plans import dense_mask_reference

    runner = _runner(dtype, d)
    sizes = [1500, 1, 700, 1900]  # ragged; a single-hit event; blocks straddle events
    for name, plan in _plans(sizes, window=100, group_size=64).items():
        n, h = sum(sizes), 5
        q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=dtype) for _ in range(4))
        o, lse, (dq, dk, dv) = _poisoned(runner, q, k, v, do, plan)
        for t in (o, lse, dq, dk, dv):
            assert torch.isfinite(t).all(), (name, "unwritten or non-finite output")
        x64 = [t.double().requires_grad_() for t in (q, k, v)]
        mask = dense_mask_reference(plan)  # (N, N) reference only
        s = torch.einsum("nhd,mhd->hnm", x64[0], x64[1]) * d**-0.5
        ref = torch.einsum("hnm,mhd->nhd", s.masked_fill(~mask, float("-inf")).softmax(-1), x64[2])
        g = torch.autograd.grad(ref, x64, do.double())
        for nm, got, want in zip(("o", "dq", "dk", "dv"), (o, dq, dk, dv), (ref, *g), strict=True):
            assert _rel(got, want.detach()) < 1e-2, (name, nm, _rel(got, want.detach()))


@pytest.mark.parametrize("kind", ["cluster", "window"])
def test_full_size_bf16_sampled_rows(kind):
    """N = 65536, H = 8, D = 32: all outputs written; sampled rows (o, dq) match float64."""
    from trackformers.kernels.metadata import build_row_intervals

    runner = _runner(torch.bfloat16, 32, 65536)
    n, h, d = 65536, 8, 32
    plan = _plans([n], window=512, group_size=384)[kind]
    q, k, v, do = (torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    o, lse, (dq, dk, dv) = _poisoned(runner, q, k, v, do, plan)
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
    for i in torch.randint(0, n, (48,)).tolist():
        lo1, hi1, lo2, hi2 = (int(x) for x in rows[:, i])
        keys = torch.cat([torch.arange(lo1, hi1), torch.arange(lo2, hi2)]).cuda()
        qi = q[i].double().requires_grad_()
        s = torch.einsum("hd,mhd->hm", qi, k[keys].double()) * d**-0.5  # (H, m)
        oi = torch.einsum("hm,mhd->hd", s.softmax(-1), v[keys].double())
        (gq,) = torch.autograd.grad(oi, qi, do[i].double())
        assert _rel(o[i], oi.detach()) < 1e-2
        assert _rel(dq[i], gq) < 2e-2


def test_no_recompile_when_n_changes_and_matches_triton():
    """Four different N (multi-event, not multiples of 128): no new kernel after the first;
    FA4 and the Triton kernels agree (autograd through both)."""
    from trackformers.kernels import ops
    from trackformers.kernels.fa4 import fa4_attention

    from trackformers.attention.plans import presorted, window_plan
    from trackformers.attention.synthetic import synthetic_batch

    runner = _runner(torch.bfloat16, 32)

    def step(n):
        plan = presorted(window_plan(synthetic_batch([n, n // 3 + 1], device="cuda"), 64))
        m = n + n // 3 + 1
        x = torch.randn(m, 4, 32, device="cuda", dtype=torch.bfloat16)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        oa = fa4_attention(a, a, a, plan, runner)
        ob = ops.fused_attention(b, b, b, plan)
        oa.float().square().sum().backward()
        ob.float().square().sum().backward()
        torch.cuda.synchronize()
        assert _rel(oa, ob.double()) < 1e-2 and _rel(a.grad, b.grad.double()) < 2e-2, n

    step(4096)
    before = runner.compiled()
    for n in (5001, 777, 12289):
        step(n)
    assert runner.compiled() == before


def test_backend_picks_fa4_and_says_so():
    from trackformers.attention import build
    from trackformers.attention.synthetic import synthetic_batch

    _runner()
    batch = synthetic_batch([3000, 1200], device="cuda")
    x = torch.randn(4200, 4, 64, device="cuda", dtype=torch.bfloat16)
    outs = {}
    for impl in ("auto", "triton"):
        be = build("fused", mask="cluster", group_size=128, impl=impl)
        xi = x.clone().requires_grad_()
        out = be(xi, xi, xi, be.plan(batch))
        out.float().sum().backward()
        outs[impl] = (out, xi.grad, be.last_impl, be.impl_reason)
    assert outs["auto"][2].startswith("fa4") and outs["triton"][2] == "triton"
    assert _rel(outs["auto"][0], outs["triton"][0].double()) < 1e-2
    assert _rel(outs["auto"][1], outs["triton"][1].double()) < 2e-2
