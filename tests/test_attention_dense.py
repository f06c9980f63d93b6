"""Dense backend == float64 masked reference (forward and gradients), never across events."""

import pytest
import torch

from trackformers.attention import build
from trackformers.attention.plans import (
    cluster_plan,
    dense_mask_reference,
    full_plan,
    window_plan,
)
from trackformers.attention.synthetic import synthetic_batch


def reference_attention(q, k, v, mask):
    """float64 softmax(q k^T / sqrt(D)) v with a (N, N) input-order mask; q (N, H, D)."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = torch.einsum("ihd,jhd->hij", q, k) / q.shape[-1] ** 0.5  # (H, N, N)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)  # (N, H, D)


def input_order_mask(plan):
    mask = dense_mask_reference(plan)
    return mask if plan.inv_perm is None else mask[plan.inv_perm][:, plan.inv_perm]


def qkv(n, h=2, d=8, dtype=torch.float64):
    return [torch.randn(n, h, d, dtype=dtype, requires_grad=True) for _ in range(3)]


def check_against_reference(backend, plan, n, dtype=torch.float64, tol=1e-9):
    q, k, v = qkv(n, dtype=dtype)
    out = backend(q, k, v, plan)
    ref = reference_attention(q, k, v, input_order_mask(plan))
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out.double(), (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol)


@pytest.mark.parametrize("sizes", [[50, 70, 64], [5, 300], [33]])
def test_dense_full_equals_reference(sizes):
    batch = synthetic_batch(sizes, seed=1)
    backend = build("dense")
    check_against_reference(backend, backend.plan(batch), batch.num_hits)


def test_dense_padded_and_loop_paths_agree():
    batch = synthetic_batch([40, 44, 48], seed=2)
    q, k, v = qkv(batch.num_hits)
    padded = build("dense", pad_efficiency=0.0, pad_on_cpu=True)(q, k, v, full_plan(batch))
    loop = build("dense", pad_efficiency=2.0, pad_on_cpu=True)(q, k, v, full_plan(batch))
    torch.testing.assert_close(padded, loop)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return sdpa(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:  # on the CPU by default: one call per event
        mp.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
        default = build("dense", pad_efficiency=0.0)(q, k, v, full_plan(batch))
    assert len(calls) == 3
    torch.testing.assert_close(default, loop)


def test_dense_never_crosses_events():
    batch = synthetic_batch([30, 40], seed=4)
    backend = build("dense")
    q, k, v = qkv(batch.num_hits)
    out = backend(q, k, v, backend.plan(batch))
    v2 = v.detach().clone()
    v2[30:] += 100.0  # change only the second event's values
    out2 = backend(q, k, v2, backend.plan(batch))
    torch.testing.assert_close(out[:30], out2[:30])
    assert not torch.allclose(out[30:], out2[30:])


@pytest.mark.parametrize(
    "make_plan",
    [lambda b: cluster_plan(b, group_size=8, sector_size=40), lambda b: window_plan(b, 6)],
)
def test_dense_masked_plans_equal_reference(make_plan):
    batch = synthetic_batch([90, 17, 120], seed=6)
    check_against_reference(build("dense"), make_plan(batch), batch.num_hits)


def test_dense_float32_close_to_float64():
    batch = synthetic_batch([64, 80], seed=7)
    backend = build("dense")
    check_against_reference(backend, backend.plan(batch), batch.num_hits, torch.float32, 1e-4)


def test_dense_rejects_wrong_length():
    batch = synthetic_batch([20, 20])
    backend = build("dense")
    q, k, v = qkv(39)
    with pytest.raises(ValueError, match="39 rows"):
        backend(q, k, v, backend.plan(batch))
