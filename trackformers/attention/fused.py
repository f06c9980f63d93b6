"""Fused backend: the Triton block-sparse kernels of trackformers.kernels on the shared plans.

``plan(batch)`` builds the configured mask's plan (full, cluster or window, from
:mod:`trackformers.attention.plans`); ``forward`` gathers q, k, v into the plan's sorted
order, runs the kernels (O(N) metadata built on the device once per plan and head_dim,
cached in ``plan.extra``) and returns the output in input order. Autograd flows through
the gathers and the kernels' own backward. CUDA only; on CPU the kernels run only under
TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trackformers.attention.base import AttentionBackend, AttentionPlan, Capabilities, register
from trackformers.attention.plans import cluster_plan, full_plan, window_plan
from trackformers.kernels.ops import build_meta, fused_attention, interpreting

MASKS = ("full", "cluster", "window")


class _Permute(torch.autograd.Function):
    """rows = x[idx] with the gradient gathered back through the inverse permutation (a
    gather both ways, instead of the sort-and-accumulate scatter of plain indexing)."""

    @staticmethod
    def forward(ctx, x: Tensor, idx: Tensor, inv: Tensor) -> Tensor:
        ctx.save_for_backward(inv)
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inv,) = ctx.saved_tensors
        return grad.index_select(0, inv), None, None


@register
class FusedAttention(AttentionBackend):
    """The project's Triton kernels (``trackformers.kernels``) on a cluster, window or full mask.

    Args:
        mask: ``cluster``, ``window`` or ``full``.
        window: +-window sorted positions (window mask).
        group_size: hits per group (cluster mask).
        sector_size: hits per sector of the cluster plan's sort.
        adjacency: groups attended on each side (cluster mask).
        tune: autotune the kernels' launch configurations.
    """

    name = "fused"
    capabilities = Capabilities(
        varlen=True,
        masks=MASKS,
        dtypes=(torch.bfloat16, torch.float16, torch.float32),
        devices=("cuda",),
    )

    def __init__(
        self,
        mask: str = "cluster",
        window: int = 256,
        group_size: int = 128,
        sector_size: int = 4096,
        adjacency: int = 1,
        tune: bool = True,
    ):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"fused attention mask must be one of {MASKS}, got {mask!r}")
        self.mask, self.window, self.tune = mask, int(window), bool(tune)
        self.group_size, self.sector_size, self.adjacency = group_size, sector_size, adjacency

    def plan(self, batch) -> AttentionPlan:
        """The plan of ``batch`` for this backend's mask.

        Args:
            batch: the PackedBatch (coords used by the cluster and window masks).
        """
        if self.mask == "full":
            return full_plan(batch)
        if self.mask == "window":
            return window_plan(batch, self.window)
        return cluster_plan(
            batch,
            group_size=self.group_size,
            sector_size=self.sector_size,
            adjacency=self.adjacency,
        )

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan) -> Tensor:
        """q, k, v (N, H, D) in input order -> (N, H, D) in input order."""
        if q.device.type != "cuda" and not interpreting():
            raise RuntimeError(
                f"attention backend 'fused' needs CUDA tensors (got {q.device}); use 'dense' "
                "or 'flex' on CPU"
            )
        if plan.kind not in MASKS:
            raise ValueError(f"fused attention cannot run plan kind {plan.kind!r}")
        n, _, d = q.shape
        key = f"fused_meta_d{d}"
        if key not in plan.extra:
            plan.extra[key] = build_meta(plan, n, d)
        perm, inv = plan.perm, plan.inv_perm
        if perm is not None:
            q, k, v = (_Permute.apply(t, perm, inv) for t in (q, k, v))  # (N, H, D) sorted
        out = fused_attention(q, k, v, plan, meta=plan.extra[key], tune=self.tune)
        return out if perm is None else _Permute.apply(out, inv, perm)  # (N, H, D) input order
