"""FlexAttention backends: ``flex`` (Part-2 cluster neighbourhoods) and ``windowed`` (phi window).

``plan(batch)`` builds the plan (plans.py) and its block layout + BlockMask on the batch's
device (``BlockMask.from_kv_blocks`` from the row ranges, never an N x N mask) once per
batch; every layer reuses it. Plan and layout are one static-shaped program
(``blocksparse.plan_layout_tensors``), replayed as a CUDA graph per length bucket on CUDA.
Rows are padded to a bucketed length so that successive events share compiled kernels and
graphs (no recompilation per event size). On CUDA the kernel is
``torch.compile(flex_attention)``; on CPU (FlexAttention has no CPU backward) the same
layout runs through ``blocksparse_attention``, a torch reference with autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trackformers.attention.base import AttentionBackend, AttentionPlan, Capabilities, register
from trackformers.attention.blocksparse import (
    BlockLayout,
    blocksparse_attention,
    build_layout,
    layout_from_tensors,
    plan_layout_tensors,
)
from trackformers.attention.plans import (
    BARREL_RADIUS_MM,
    ENDCAP_Z_MM,
    bucket_length,
    build_plan,
    cluster_plan,
    full_plan,
    window_plan,
)

_COMPILED = {}


def compiled_flex_attention(dynamic: bool | None = None):
    """torch.compile(flex_attention), created once per process and ``dynamic`` setting.

    dynamic=None (default): the first bucketed length compiles static kernels, the second
    distinct length one dynamic-shape kernel reused for every later length; False: one
    static compile per length bucket.

    Args:
        dynamic: torch.compile's ``dynamic`` (None: automatic dynamic shapes).

    Returns:
        The compiled ``flex_attention``.
    """
    if dynamic not in _COMPILED:
        from torch.nn.attention.flex_attention import flex_attention

        # every (mask kind, head_dim, dtype) is a cache entry of the one compiled function;
        # the default limit (8) would silently fall back to eager, which materialises N^2
        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), 64))

        _COMPILED[dynamic] = torch.compile(flex_attention, dynamic=dynamic)
    return _COMPILED[dynamic]


class _FlexBase(AttentionBackend):
    """Shared machinery: layout caching, padding, flex call or torch block-sparse path."""

    def __init__(
        self,
        block_size: int = 128,
        steps_per_octave: int = 8,
        impl: str = "auto",
        dynamic: bool | None = None,
    ):
        super().__init__()
        self.dynamic = dynamic
        if impl not in ("auto", "flex", "torch"):
            raise ValueError(f"impl must be 'auto', 'flex' or 'torch', got {impl!r}")
        self.block_size = block_size
        self.steps_per_octave = steps_per_octave
        self.impl = impl

    def _make_plan(self, batch) -> AttentionPlan:
        """The plan alone (no block layout)."""
        raise NotImplementedError

    def _kind_params(self) -> tuple[str, dict]:
        raise NotImplementedError

    def plan(self, batch, sync: bool | None = None) -> AttentionPlan:
        """Plan + block layout (+ BlockMask where flex runs) as one static program; see
        plans.build_plan for ``sync`` (None: sync unless the stream is capturing)."""
        kind, params = self._kind_params()
        with_bm = batch.x.device.type == "cuda" or self.impl == "flex"
        n = batch.x.shape[0]
        key = f"layout_b{self.block_size}"

        def attach(plan, t):  # host work done while the GPU builds the plan
            lay = layout_from_tensors(t, n, self.block_size)
            plan.extra[key] = lay
            if with_bm:
                plan.extra[f"{key}_bm"] = lay.block_mask()

        n_pad = bucket_length(n, self.block_size, self.steps_per_octave)
        return build_plan(
            kind,
            batch,
            params,
            p=n_pad,
            fn=plan_layout_tensors,
            fn_kwargs={"block": self.block_size},
            sync=sync,
            before_sync=attach,
        )[0]

    def layout(self, plan: AttentionPlan, with_block_mask: bool = True) -> BlockLayout:
        key = f"layout_b{self.block_size}"
        if key not in plan.extra:
            plan.extra[key] = build_layout(plan, self.block_size, self.steps_per_octave)
        lay = plan.extra[key]
        if with_block_mask and f"{key}_bm" not in plan.extra:
            plan.extra[f"{key}_bm"] = lay.block_mask()
        return lay

    def _use_flex(self, device: torch.device) -> bool:
        return self.impl == "flex" or (self.impl == "auto" and device.type == "cuda")

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan) -> Tensor:
        n = q.shape[0]
        use_flex = self._use_flex(q.device)
        lay = self.layout(plan, with_block_mask=use_flex)
        if n != lay.n:
            raise ValueError(f"q has {n} rows but the plan covers {lay.n} hits")
        if plan.perm is not None:
            q, k, v = q[plan.perm], k[plan.perm], v[plan.perm]  # (N, H, D) sorted
        pad = lay.n_pad - n
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))  # (n_pad, H, D)
        if use_flex:
            bm = plan.extra[f"layout_b{self.block_size}_bm"]
            fn = compiled_flex_attention(self.dynamic) if q.device.type == "cuda" else _eager_flex()
            out = fn(
                q.transpose(0, 1)[None],
                k.transpose(0, 1)[None],
                v.transpose(0, 1)[None],
                block_mask=bm,
            )[0].transpose(0, 1)
        else:
            out = blocksparse_attention(q, k, v, lay)  # (n_pad, H, D)
        out = out[:n]
        return out if plan.inv_perm is None else out[plan.inv_perm]


def _eager_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


@register
class FlexAttention(_FlexBase):
    """Part-2 geometric neighbourhoods (``mask="cluster"``) or whole events (``"full"``)."""

    name = "flex"
    capabilities = Capabilities(
        varlen=True,
        masks=("cluster", "full", "window"),
        dtypes=(torch.bfloat16, torch.float16, torch.float32, torch.float64),
        devices=("cuda", "cpu"),
        needs_compile=True,
    )

    def __init__(
        self,
        mask: str = "cluster",
        group_size: int = 128,
        sector_size: int = 4096,
        adjacency: int = 1,
        block_size: int = 128,
        steps_per_octave: int = 8,
        impl: str = "auto",
        dynamic: bool | None = None,
    ):
        super().__init__(block_size, steps_per_octave, impl, dynamic)
        if mask not in ("cluster", "full"):
            raise ValueError(f"flex mask must be 'cluster' or 'full', got {mask!r}")
        self.mask = mask
        self.group_size, self.sector_size, self.adjacency = group_size, sector_size, adjacency

    def _kind_params(self) -> tuple[str, dict]:
        if self.mask == "full":
            return "full", {}
        return "cluster", dict(
            group_size=self.group_size,
            sector_size=self.sector_size,
            adjacency=int(self.adjacency),
            radius=BARREL_RADIUS_MM,
            endcap_z=ENDCAP_Z_MM,
        )

    def _make_plan(self, batch) -> AttentionPlan:
        if self.mask == "full":
            return full_plan(batch)
        return cluster_plan(
            batch,
            group_size=self.group_size,
            sector_size=self.sector_size,
            adjacency=self.adjacency,
        )


@register
class WindowedAttention(_FlexBase):
    """Hits sorted by phi in each event, sliding window +-window with wrap-around at +-pi."""

    name = "windowed"
    capabilities = Capabilities(
        varlen=True,
        masks=("window",),
        dtypes=(torch.bfloat16, torch.float16, torch.float32, torch.float64),
        devices=("cuda", "cpu"),
        needs_compile=True,
    )

    def __init__(
        self,
        window: int = 256,
        block_size: int = 128,
        steps_per_octave: int = 8,
        impl: str = "auto",
        dynamic: bool | None = None,
    ):
        super().__init__(block_size, steps_per_octave, impl, dynamic)
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.window = int(window)

    def _kind_params(self) -> tuple[str, dict]:
        return "window", dict(window=self.window)

    def _make_plan(self, batch) -> AttentionPlan:
        return window_plan(batch, self.window)
