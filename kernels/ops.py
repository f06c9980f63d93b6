"""Launchers and the autograd Function of the fused block-sparse attention.

``fused_attention(q, k, v, plan)`` is the public entry point: q, k, v of shape (N, H, D) in the
plan's SORTED order (the attention backend applies the plan's perm), the metadata built on
the device in O(N) by :mod:`trackformers.kernels.metadata` on every call unless given.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
from torch import Tensor
from trackformers.kernels.bwd import (
    attention_bwd_dkdv_kernel,
    attention_bwd_dq_kernel,
    bwd_configs,
    bwd_preprocess_kernel,
)
from trackformers.kernels.fwd import attention_fwd_kernel, fwd_configs
from trackformers.kernels.metadata import BlockMeta, build_block_meta

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes; block_m fixes the metadata, the rest is autotuned when tune=True."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3
    maxnreg: int | None = None  # register cap per thread (None: the compiler's choice)

    def launch(self) -> dict:
        """Launch options of a fixed (tune=False) configuration."""
        opts = dict(BLOCK_N=self.block_n, num_warps=self.num_warps, num_stages=self.num_stages)
        if self.maxnreg is not None:
            opts["maxnreg"] = self.maxnreg
        return opts


# Query/key tile rows of the metadata per head_dim (forward, backward); README.md says why.
# D <= 32: a 128-register cap gives 4 CTAs per SM instead of 3 (153 registers), no spills.
FWD_CONFIGS = {
    16: KernelConfig(64, 64, 4, 3, 128),
    32: KernelConfig(64, 64, 4, 3, 128),
    64: KernelConfig(64, 64, 4, 3),
    128: KernelConfig(64, 64, 4, 2),
}
# Backward, dK/dV kernel: at D <= 32 the 128-register cap gives 4 CTAs per SM (136 registers:
# 3); the dQ kernel (94 registers, 5 CTAs per SM) is faster without it (H200, autotune timings).
BWD_CONFIGS = {
    16: KernelConfig(64, 32, 4, 3, 128),
    32: KernelConfig(64, 32, 4, 3, 128),
    64: KernelConfig(64, 32, 4, 3),
    128: KernelConfig(64, 32, 4, 2),
}
# The dQ kernel's own key block / warps / stages (its block_m must equal BWD_CONFIGS').
DQ_CONFIGS = {
    16: KernelConfig(64, 32, 4, 3),
    32: KernelConfig(64, 32, 4, 3),
    64: KernelConfig(64, 32, 4, 3),
    128: KernelConfig(64, 32, 4, 2),
}


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (kernels run on the CPU interpreter)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_TUNED: dict[str, object] = {}


def _tuned(name: str, fn, block_m: int, configs):
    key = f"{name}:{block_m}"
    if key not in _TUNED:
        extra = {"dkdv": ["ATOMIC_DQ"]}.get(name, [])  # the forward tunes ROWSUM_MMA
        keys = ["HEAD_DIM", "HAS_WRAP", "FAST_EXP"] + extra
        _TUNED[key] = triton.autotune(configs=configs(block_m), key=keys)(fn)
    return _TUNED[key]


# Packed 16-bit exp2 on CUDA for bf16/fp16 inputs (see kernels/common.py); benchmarks toggle it.
FAST_EXP = True
# Forward row sums on the tensor cores instead of the FP32 units (fixed configs; the
# autotuned forward chooses it per key).
ROWSUM_MMA = True
# Backward dQ by fp32 atomics from the dK/dV kernel instead of a second kernel (variant).
ATOMIC_DQ = False
# Forward body: issue the next block's QK product before this block's softmax (variant).
PIPE_QK = False
# Forward timing probes (kernels/fwd.py; WRONG outputs when != 0): benchmarks only.
PROBE = 0
# Last compiled kernel per launcher ("fwd", "dkdv", "dq"): registers, spills, shared memory.
LAST_KERNEL: dict[str, object] = {}


class FusedMeta:
    """Forward tile metadata of one plan, and the backward's, built on first use."""

    def __init__(self, plan, num_rows: int, head_dim: int):
        self.plan, self.num_rows = plan, num_rows
        self.has_wrap = plan.kind == "window"
        self.fwd = build_block_meta(plan, num_rows, FWD_CONFIGS[head_dim].block_m)
        self._bwd_block_m = BWD_CONFIGS[head_dim].block_m
        self._bwd: BlockMeta | None = None

    @property
    def bwd(self) -> BlockMeta:
        """Tile metadata of the backward kernels (the forward's when their block sizes agree)."""
        if self._bwd is None:
            if self._bwd_block_m == self.fwd.block_m:
                self._bwd = self.fwd
            else:  # one launch reading the per-row ranges of the forward build
                self._bwd = build_block_meta(
                    self.plan, self.num_rows, self._bwd_block_m, rows=self.fwd.rows
                )
        return self._bwd


def build_meta(plan, num_rows: int, head_dim: int) -> FusedMeta:
    """Metadata of one plan for one head_dim: one launch (+ one in the first backward).

    Args:
        plan: the attention plan.
        num_rows: N.
        head_dim: D (selects the tile sizes).
    """
    if head_dim not in FWD_CONFIGS:
        raise ValueError(f"fused attention supports head_dim {HEAD_DIMS}, got {head_dim}")
    return FusedMeta(plan, num_rows, head_dim)


def _check(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"fused attention needs q, k, v of one shape (N, H, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] not in HEAD_DIMS:
        raise ValueError(f"fused attention supports head_dim {HEAD_DIMS}, got {q.shape[2]}")
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"fused attention needs one dtype of {DTYPES}; got {q.dtype}")
    if q.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"fused attention runs on CUDA (got device {q.device}); on CPU only under "
            "TRITON_INTERPRET=1 (tests)"
        )


def _fast_exp(q: Tensor) -> bool:
    return FAST_EXP and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16)


def attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    meta: BlockMeta,
    sm_scale: float,
    tune: bool = True,
    out: tuple[Tensor, Tensor] | None = None,
    has_wrap: bool = True,
) -> tuple[Tensor, Tensor]:
    """o (N, H, D) in q's dtype and stats (2, H, N) float32: row max m (log2 units) and l.

    ``out`` = (o, lse) preallocated (tests poison them to prove every element is written).

    Args:
        q: (N, H, D) queries, sorted order.
        k: (N, H, D) keys.
        v: (N, H, D) values.
        meta: tile metadata of the forward.
        sm_scale: softmax scale.
        tune: autotune the launch.
        out: preallocated (o, stats).
        has_wrap: the plan has wrap-around ranges (window).
    """
    n, h, d = q.shape
    if out is None:
        o = torch.empty_like(q)
        lse = torch.empty((2, h, n), dtype=torch.float32, device=q.device)
    else:
        o, lse = out
    if n == 0:
        return o, lse
    grid = (meta.tiles.shape[0], h)
    cfg = FWD_CONFIGS[d]
    args = (q, k, v, o, lse, meta.tiles, meta.rows, n, h, sm_scale)
    flags = dict(
        HEAD_DIM=d,
        BLOCK_M=meta.block_m,
        HAS_WRAP=has_wrap,
        FAST_EXP=_fast_exp(q),
        PIPE_QK=PIPE_QK,
        PROBE=PROBE,
    )
    if tune and not interpreting():
        kern = _tuned("fwd", attention_fwd_kernel, meta.block_m, fwd_configs)
        LAST_KERNEL["fwd"] = kern[grid](*args, **flags)
    else:
        LAST_KERNEL["fwd"] = attention_fwd_kernel[grid](
            *args, **flags, ROWSUM_MMA=ROWSUM_MMA, **cfg.launch()
        )
    return o, lse


def attention_backward(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    meta: BlockMeta,
    sm_scale: float,
    tune: bool = True,
    out: tuple[Tensor, Tensor, Tensor] | None = None,
    has_wrap: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv (N, H, D) in q's dtype (``out``: preallocated, as for attention_forward).

    Args:
        do: (N, H, D) output gradient.
        q: (N, H, D) queries.
        k: (N, H, D) keys.
        v: (N, H, D) values.
        o: (N, H, D) forward output.
        lse: (2, H, N) forward stats.
        meta: tile metadata of the backward.
        sm_scale: softmax scale.
        tune: autotune the launches.
        out: preallocated (dq, dk, dv).
        has_wrap: the plan has wrap-around ranges (window).
    """
    n, h, d = q.shape
    do = do.contiguous()
    if out is None:
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    else:
        dq, dk, dv = out
    if n == 0:
        return dq, dk, dv
    delta = torch.empty((h, n), dtype=torch.float32, device=q.device)
    dos = torch.empty_like(do)  # (N, H, D) dO / l
    block = 64
    bwd_preprocess_kernel[(triton.cdiv(n * h, block),)](
        o, do, lse, dos, delta, n * h, h, n, HEAD_DIM=d, BLOCK=block
    )
    do = dos
    grid = (meta.tiles.shape[0], h)
    cfg = BWD_CONFIGS[d]
    dq_args = (q, k, v, do, dq, lse, delta, meta.tiles, meta.rows, n, h, sm_scale)
    dqa = torch.zeros((n, h, d), dtype=torch.float32, device=q.device) if ATOMIC_DQ else dq
    kv_args = (q, k, v, do, dk, dv, dqa, lse, delta, meta.tiles, meta.rows, n, h, sm_scale)
    flags = dict(HEAD_DIM=d, BLOCK_M=meta.block_m, HAS_WRAP=has_wrap, FAST_EXP=_fast_exp(q))
    kv_flags = dict(flags, ATOMIC_DQ=ATOMIC_DQ)
    if tune and not interpreting():
        kern = _tuned("dkdv", attention_bwd_dkdv_kernel, meta.block_m, bwd_configs)
        LAST_KERNEL["dkdv"] = kern[grid](*kv_args, **kv_flags)
        if not ATOMIC_DQ:
            kern = _tuned("dq", attention_bwd_dq_kernel, meta.block_m, bwd_configs)
            LAST_KERNEL["dq"] = kern[grid](*dq_args, **flags)
    else:
        LAST_KERNEL["dkdv"] = attention_bwd_dkdv_kernel[grid](*kv_args, **kv_flags, **cfg.launch())
        if not ATOMIC_DQ:
            dq_cfg = DQ_CONFIGS[d]
            if dq_cfg.block_m != meta.block_m:
                raise ValueError(f"DQ_CONFIGS[{d}].block_m must be {meta.block_m} (metadata)")
            LAST_KERNEL["dq"] = attention_bwd_dq_kernel[grid](*dq_args, **flags, **dq_cfg.launch())
    if ATOMIC_DQ:
        dq.copy_(dqa)
    return dq, dk, dv


class FusedAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: q, k, v (N, H, D) sorted, contiguous; metadata from build_meta."""

    @staticmethod
    def forward(ctx, q, k, v, meta: FusedMeta, sm_scale: float, tune: bool):
        o, lse = attention_forward(q, k, v, meta.fwd, sm_scale, tune, has_wrap=meta.has_wrap)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.meta, ctx.sm_scale, ctx.tune = meta, sm_scale, tune
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        meta = ctx.meta
        dq, dk, dv = attention_backward(
            do, q, k, v, o, lse, meta.bwd, ctx.sm_scale, ctx.tune, has_wrap=meta.has_wrap
        )
        return dq, dk, dv, None, None, None


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan,
    sm_scale: float | None = None,
    meta: FusedMeta | None = None,
    tune: bool = True,
) -> Tensor:
    """Block-sparse attention of (N, H, D) q, k, v in the plan's sorted order -> (N, H, D).

    Args:
        q: (N, H, D) queries.
        k: (N, H, D) keys.
        v: (N, H, D) values.
        plan: the attention plan.
        sm_scale: softmax scale (None: 1 / sqrt(D)).
        meta: prebuilt metadata of the plan (None: built here).
        tune: autotune the launches.
    """
    _check(q, k, v)
    n, _, d = q.shape
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(d)
    if meta is None:
        meta = build_meta(plan, n, d)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return FusedAttentionFunction.apply(q, k, v, meta, float(sm_scale), tune)
