"""Fused backend: block-sparse kernels of trackformers.kernels on the shared plans.

Two implementations of one contract: the Triton kernels (portable, any CUDA GPU) and, on
Hopper (sm90), flash-attn-4's warp-specialised CuTe DSL kernels fed the plan's O(N) block
lists (:mod:`trackformers.kernels.fa4`). ``impl="auto"`` picks FA4 where
``kernels.fa4.choose`` allows it (sm90, bf16/fp16, head_dim 32/64/128, ``flash_attn.cute``
installed or ``$TRACKFORMERS_FA4_KERNELS`` naming prebuilt kernels) and Triton otherwise;
``last_impl`` / ``impl_reason`` say which it picked and why, and the choice is logged once
per kind of call. conf/attention/fused.yaml sets ``impl="triton"``: on an H100 the FA4 kernels
were measured slower than the Triton ones on both masks (BENCHMARKS.md).

``plan(batch)`` builds the configured mask's plan (full, cluster or window, from
:mod:`trackformers.attention.plans`); ``forward`` gathers q, k, v into the plan's sorted
order, runs the kernels (O(N) metadata built on the device once per plan and head_dim,
cached in ``plan.extra``) and returns the output in input order. Autograd flows through
the gathers and the kernels' own backward. CUDA only; on CPU the kernels run only under
TRITON_INTERPRET=1 (tests).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from trackformers.attention.base import AttentionBackend, AttentionPlan, Capabilities, register
from trackformers.attention.plans import cluster_plan, full_plan, window_plan
from trackformers.kernels import fa4
from trackformers.kernels.ops import build_meta, fused_attention, interpreting

MASKS = ("full", "cluster", "window")
IMPLS = ("auto", "triton", "fa4")
log = logging.getLogger(__name__)


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
        impl: str = "auto",
    ):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"fused attention mask must be one of {MASKS}, got {mask!r}")
        if impl not in IMPLS:
            raise ValueError(f"fused attention impl must be one of {IMPLS}, got {impl!r}")
        self.mask, self.window, self.tune, self.impl = mask, int(window), bool(tune), impl
        self.group_size, self.sector_size, self.adjacency = group_size, sector_size, adjacency
        self.last_impl: str | None = None  # "triton", "fa4-jit" or "fa4-prebuilt"
        self.impl_reason: str = ""
        self._logged: set = set()

    def select(self, q: Tensor):
        """(FA4 runner or None for Triton, reason) for q (N, H, D), per ``impl``.

        Args:
            q: (N, H, D) queries (their device, dtype, head_dim and N decide).
        """
        if self.impl == "triton":
            return None, "impl='triton'"
        runner, why = fa4.choose(q.device, q.dtype, q.shape[2], q.shape[0])
        if runner is None and self.impl == "fa4":
            raise RuntimeError(f"fused attention impl='fa4' unavailable: {why}")
        return runner, why

    def _say(self, name: str, why: str, q: Tensor) -> None:
        self.last_impl, self.impl_reason = name, why
        key = (name, q.device.type, q.dtype, q.shape[2])
        if key not in self._logged:
            self._logged.add(key)
            log.info("fused attention: %s for %s D=%d (%s)", name, q.dtype, q.shape[2], why)

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
        runner, why = self.select(q)
        perm, inv = plan.perm, plan.inv_perm
        if perm is not None:
            q, k, v = (_Permute.apply(t, perm, inv) for t in (q, k, v))  # (N, H, D) sorted
        if runner is not None:
            self._say(runner.name, why, q)
            if "fa4_layout" not in plan.extra:  # block lists: one per plan, any head_dim
                plan.extra["fa4_layout"] = fa4.build_layout(plan, n)
            out = fa4.fa4_attention(q, k, v, plan, runner, layout=plan.extra["fa4_layout"])
        else:
            self._say("triton", why, q)
            key = f"fused_meta_d{d}"
            if key not in plan.extra:
                plan.extra[key] = build_meta(plan, n, d)
            out = fused_attention(q, k, v, plan, meta=plan.extra[key], tune=self.tune)
        return out if perm is None else _Permute.apply(out, inv, perm)  # (N, H, D) input order
