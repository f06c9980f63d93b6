"""Hopper (sm90) path of the fused attention: flash-attn-4's CuTe DSL kernels, block-sparse.

flash-attn-4 (``flash_attn.cute``, FA4) runs on Hopper a warp-specialised kernel: one
producer warp loads K/V by TMA, two MMA warpgroups each own 64 query rows and overlap the
softmax of one key block with the QK product of the next (``intra_wg_overlap``), the PV
product reads P from registers. This module feeds it the plan's O(N) block lists
(:mod:`trackformers.kernels.fa4_meta`) and the per-row ranges as the ``mask_mod``'s aux
tensor (:mod:`trackformers.kernels.fa4_mask`). The packed events are ONE sequence of N
rows (batch 1): the ranges never leave an event. Contract (as the Triton kernels): q, k, v
(N, H, D) in the plan's sorted order, bf16 or fp16, D in 32, 64, 128, autograd, N free.

Two ways to run the same kernels (``Runner``):

* ``JitRunner``: ``flash_attn.cute`` installed; FA4 compiles each (dtype, D) once per
  process (its compile keys hold no N: no recompilation when N changes).
* ``PrebuiltRunner``: a folder of kernels compiled ahead of time by
  ``benchmarks/fa4_build.py`` (``manifest.json``, one ``.so`` per kernel and
  ``libcute_dsl_runtime.so``), named by ``$TRACKFORMERS_FA4_KERNELS``. It needs only
  ``apache-tvm-ffi``: neither cutlass (a 190 MB compiler library) nor flash-attn. The calls
  pass the arguments in the order FA4 4.0.0b40's interface passes them to the same compiled
  functions (``_flash_attn_fwd`` / ``_flash_attn_bwd`` for sm90, batch 1, no varlen, no
  GQA, not deterministic): the manifest pins that version.

``choose(device, dtype, head_dim)`` says which runner a call gets, or why none.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor
from trackformers.kernels.fa4_meta import FA4_BLOCK, FA4Layout, block_sparse_layout, max_blocks
from trackformers.kernels.metadata import build_row_intervals

DTYPES = (torch.bfloat16, torch.float16)
HEAD_DIMS = (32, 64, 128)
ENV_KERNELS = "TRACKFORMERS_FA4_KERNELS"  # folder of prebuilt kernels (benchmarks/fa4_build.py)
FA4_VERSION = "4.0.0b40"  # the interface whose argument order PrebuiltRunner repeats
MIN_ROWS = FA4_BLOCK + 1  # FA4 compiles a separate kernel for a single query block


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of an FA4 dtype in kernel names ("bf16", "fp16").

    Args:
        dtype: torch.bfloat16 or torch.float16 (KeyError otherwise).
    """
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def build_layout(plan, num_rows: int, check: bool = False) -> FA4Layout:
    """Per-row ranges (one launch) and the block lists (one launch) of a sorted-order plan.

    Args:
        plan: the attention plan, in sorted order.
        num_rows: N, the rows of the packed batch.
        check: sync once to raise a ValueError when a block list overflows its bound.
    """
    rows = build_row_intervals(
        plan.kind,
        plan.cu_seqlens,
        plan.max_seqlen,
        plan.group_id,
        plan.adjacency,
        plan.window,
        num_rows=num_rows,
        group_ptr=plan.group_ptr,
    )
    return block_sparse_layout(rows, num_rows, max_blocks(plan, num_rows), check=check)


def _broadcast_heads(t: Tensor, h: int) -> Tensor:
    """(1, 1, ...) -> (1, H, ...) with head stride 0, as FA4 expands head-shared block lists
    (the stride-0 pattern is part of its compiled kernels' signature, also at H = 1)."""
    st = list(t.stride())
    return t.as_strided((1, h, *t.shape[2:]), (st[0], 0, *st[2:]))


class JitRunner:
    """FA4 through ``flash_attn.cute``'s internal entry points (the ones its autograd uses)."""

    name = "fa4-jit"

    def __init__(self):
        from flash_attn.cute import interface
        from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
        from trackformers.kernels.fa4_mask import ranges_mask_mod

        self._fa, self._bst, self._mask = interface, BlockSparseTensorsTorch, ranges_mask_mod

    def _sparse(self, lay: FA4Layout):
        return self._bst(
            lay.mask_cnt,
            lay.mask_idx,
            lay.full_cnt,
            lay.full_idx,
            block_size=(lay.block_m, lay.block_n),
        )

    def forward(self, q, k, v, lay: FA4Layout, scale: float, out=None) -> tuple[Tensor, Tensor]:
        """q, k, v (1, N, H, D) -> out (1, N, H, D), lse (1, H, N) float32 (``out``: both
        preallocated, e.g. NaN-poisoned by tests)."""
        o, lse = out if out is not None else (None, None)
        o, lse, *_ = self._fa._flash_attn_fwd(
            q,
            k,
            v,
            softmax_scale=scale,
            mask_mod=self._mask,
            aux_tensors=[lay.aux],
            block_sparse_tensors=self._sparse(lay),
            return_lse=True,
            out=o,
            lse=lse,
        )
        return o, lse

    def backward(self, q, k, v, out, dout, lse, lay: FA4Layout, scale: float, grads=None):
        """dq, dk, dv (1, N, H, D) (``grads``: preallocated)."""
        dq, dk, dv = grads if grads is not None else (None, None, None)
        dq, dk, dv = self._fa._flash_attn_bwd(
            q,
            k,
            v,
            out,
            dout,
            lse,
            scale,
            mask_mod=self._mask,
            aux_tensors=[lay.aux],
            block_sparse_tensors=self._sparse(lay),
            dq=dq,
            dk=dk,
            dv=dv,
        )
        return dq, dk, dv

    def compiled(self) -> int:
        """Kernels FA4 compiled so far in this process (its four compile caches)."""
        fa = self._fa
        return sum(
            len(f.compile_cache.cache)
            for f in (
                fa._flash_attn_fwd,
                fa._bwd_preprocess,
                fa._flash_attn_bwd,
                fa._bwd_postprocess_convert,
            )
        )


class PrebuiltRunner:
    """FA4 kernels compiled ahead of time, loaded through TVM-FFI (see module docstring)."""

    name = "fa4-prebuilt"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{ENV_KERNELS}={root}: no manifest.json there")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("flash_attn_4") != FA4_VERSION:
            raise ValueError(
                f"{path}: kernels of flash-attn-4 {self.manifest.get('flash_attn_4')}"
                f", the calls here follow {FA4_VERSION}"
            )
        import tvm_ffi

        runtime = self.root / "libcute_dsl_runtime.so"
        if not runtime.is_file():
            raise FileNotFoundError(f"{runtime} missing (unpack it: data_local/fa4/README)")
        # the kernels' host code resolves _cuda*/TVMFFI* symbols in these: load them global
        self._libs = [
            ctypes.CDLL(str(runtime), mode=ctypes.RTLD_GLOBAL),
            ctypes.CDLL(tvm_ffi.libinfo.find_libtvm_ffi(), mode=ctypes.RTLD_GLOBAL),
        ]
        self._tvm = tvm_ffi
        self._fns: dict[str, object] = {}

    def has(self, dtype: torch.dtype, head_dim: int) -> bool:
        """Whether the folder holds the kernels of this (dtype, head_dim).

        Args:
            dtype: torch.bfloat16 or torch.float16.
            head_dim: D.
        """
        return f"{dtype_name(dtype)}_d{head_dim}" in self.manifest["variants"]

    def _fn(self, dtype, d: int, kind: str):
        entry = self.manifest["variants"][f"{dtype_name(dtype)}_d{d}"]
        name = entry[kind]
        if name not in self._fns:
            self._fns[name] = self._tvm.load_module(str(self.root / f"{name}.so"))["func"]
        return self._fns[name], entry

    @staticmethod
    def _sparse(lay: FA4Layout, h: int) -> tuple:
        cnt, idx, fcnt, fidx = (
            _broadcast_heads(t, h) for t in (lay.mask_cnt, lay.mask_idx, lay.full_cnt, lay.full_idx)
        )
        return (cnt, idx, fcnt, fidx, None, None, None, None)

    def compiled(self) -> int:
        """Kernel modules loaded so far (a fixed set: nothing is ever compiled here)."""
        return len(self._fns)

    def forward(self, q, k, v, lay: FA4Layout, scale: float, out=None) -> tuple[Tensor, Tensor]:
        _, n, h, d = q.shape
        fn, _ = self._fn(q.dtype, d, "fwd")
        if out is None:
            out = (
                torch.empty_like(q),
                torch.empty((1, h, n), dtype=torch.float32, device=q.device),
            )
        out, lse = out
        # _flash_attn_fwd (sm90): q k v out lse scale, cu_seqlens_q/k, seqused_q/k,
        # page_table, window left/right, learnable_sink, block-sparse tuple, AuxData,
        # cu_total_m_blocks, cu_total_splits_m_blocks, tensormap_workspace
        fn(
            q,
            k,
            v,
            out,
            lse,
            float(scale),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            self._sparse(lay, h),
            ([lay.aux], None),
            None,
            None,
            None,
        )
        return out, lse

    def backward(self, q, k, v, out, dout, lse, lay: FA4Layout, scale: float, grads=None):
        _, n, h, d = q.shape
        pre, e = self._fn(q.dtype, d, "bwd_pre")
        main, _ = self._fn(q.dtype, d, "bwd")
        post, _ = self._fn(q.dtype, d, "bwd_post")
        tile_m, mult = e["bwd_tile_m"], e["hdim_multiple_of"]
        rows = math.ceil(n / tile_m) * tile_m
        d_round = math.ceil(d / mult) * mult
        dev = q.device
        dq_accum = torch.empty((1, h, rows * d_round), dtype=torch.float32, device=dev)
        dpsum = torch.empty((1, h, rows), dtype=torch.float32, device=dev)
        lse_log2 = torch.empty((1, h, rows), dtype=torch.float32, device=dev)
        if grads is None:
            grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
        dq, dk, dv = grads
        # preprocess: dpsum = rowsum(o * do), lse * log2(e), dq_accum = 0
        pre(
            out, dout, dpsum, lse, lse_log2, dq_accum, None, None, None, None, None, 1.0, None, None
        )
        # main: dk, dv and dq_accum (block lists indexed by key block: symmetric masks)
        main(
            q,
            k,
            v,
            dout,
            lse_log2,
            dpsum,
            dq_accum,
            dk,
            dv,
            float(scale),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            ([lay.aux], None),
            self._sparse(lay, h),
            None,
            None,
        )
        post(dq_accum, dq, float(scale), None, None, None, None)  # dq_accum -> dq
        return dq, dk, dv


@functools.lru_cache(maxsize=1)
def jit_importable() -> bool:
    """flash_attn.cute and cutlass installed (nothing imported here)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("cutlass", "flash_attn.cute"))
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=4)
def _runner(kind: str, root: str | None):
    return JitRunner() if kind == "jit" else PrebuiltRunner(root)


def choose(device: torch.device, dtype: torch.dtype, head_dim: int, num_rows: int):
    """(runner, reason): the FA4 runner for this call, or (None, why not).

    A prebuilt folder named by ``$TRACKFORMERS_FA4_KERNELS`` wins over the JIT path.

    Args:
        device: the device of q, k, v (FA4 needs a Hopper GPU).
        dtype: their dtype (bf16 or fp16).
        head_dim: D (one of ``HEAD_DIMS``).
        num_rows: N (more than one query block, ``MIN_ROWS``).
    """
    if device.type != "cuda":
        return None, f"FA4 needs a CUDA device (got {device.type})"
    cap = torch.cuda.get_device_capability(device)
    if cap[0] != 9:
        return None, f"FA4 path is for Hopper (sm90); this GPU is sm{cap[0]}{cap[1]}"
    if dtype not in DTYPES:
        return None, f"FA4 takes bf16/fp16, not {dtype}"
    if head_dim not in HEAD_DIMS:
        return None, f"FA4 path built for head_dim {HEAD_DIMS}, not {head_dim}"
    if num_rows < MIN_ROWS:
        return None, f"FA4 path needs more than {FA4_BLOCK} rows (got {num_rows})"
    root = os.environ.get(ENV_KERNELS)
    if root:
        runner = _runner("prebuilt", root)
        if not runner.has(dtype, head_dim):
            return None, f"no prebuilt FA4 kernel for {dtype_name(dtype)} D={head_dim} in {root}"
        return runner, f"prebuilt FA4 kernels from {root}"
    if jit_importable():
        return _runner("jit", None), "flash_attn.cute (JIT)"
    return None, f"flash_attn.cute not installed and ${ENV_KERNELS} not set"


class FA4AttentionFunction(torch.autograd.Function):
    """Autograd over a runner: q, k, v (N, H, D) sorted and contiguous."""

    @staticmethod
    def forward(ctx, q, k, v, lay: FA4Layout, scale: float, runner):
        q4, k4, v4 = q[None], k[None], v[None]  # (1, N, H, D) views
        out, lse = runner.forward(q4, k4, v4, lay, scale)
        ctx.save_for_backward(q4, k4, v4, out, lse)
        ctx.lay, ctx.scale, ctx.runner = lay, scale, runner
        return out[0]

    @staticmethod
    def backward(ctx, do):
        q4, k4, v4, out, lse = ctx.saved_tensors
        dq, dk, dv = ctx.runner.backward(
            q4, k4, v4, out, do.contiguous()[None], lse, ctx.lay, ctx.scale
        )
        return dq[0], dk[0], dv[0], None, None, None


def fa4_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan,
    runner,
    layout: FA4Layout | None = None,
    sm_scale: float | None = None,
) -> Tensor:
    """Block-sparse attention of (N, H, D) q, k, v in the plan's sorted order (FA4 kernels)
    -> (N, H, D).

    Args:
        q: (N, H, D) queries, bf16 or fp16.
        k: (N, H, D) keys.
        v: (N, H, D) values.
        plan: the attention plan, in sorted order.
        runner: the runner ``choose`` returned.
        layout: the plan's block lists (None: built here, two launches).
        sm_scale: softmax scale (None: 1 / sqrt(D)).
    """
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"FA4 attention needs q, k, v of one shape (N, H, D); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"FA4 attention needs q, k, v in one of {DTYPES}; got {q.dtype}")
    n, _, d = q.shape
    lay = layout if layout is not None else build_layout(plan, n)
    if lay.num_rows != n:
        raise ValueError(f"FA4 layout covers {lay.num_rows} rows, q has {n}")
    scale = float(d**-0.5 if sm_scale is None else sm_scale)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return FA4AttentionFunction.apply(q, k, v, lay, scale, runner)
