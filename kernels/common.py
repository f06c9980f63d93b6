"""Triton helpers shared by the forward and backward kernels: element masks and exp2."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def clamp_ranges(lo, hi, start, end):
    """Per-row range [lo, hi) clipped to the segment [start, end) being visited."""
    return tl.maximum(lo, start), tl.minimum(hi, end)


@triton.jit
def allowed(offs_n, lo1, hi1, lo2, hi2, HAS_WRAP: tl.constexpr):
    """(BLOCK_M, BLOCK_N) mask: key j in the row's (segment-clipped) range 1 or range 2."""
    j = offs_n[None, :]
    ok = (j >= lo1[:, None]) & (j < hi1[:, None])
    if HAS_WRAP:
        ok = ok | ((j >= lo2[:, None]) & (j < hi2[:, None]))
    return ok


@triton.jit
def exp2(x, DT: tl.constexpr, FAST_EXP: tl.constexpr):
    """2**x of fp32 x, returned in DT (the dtype of the following tensor-core product).

    FAST_EXP (CUDA, bf16/fp16 only): packed ex2.approx on pairs of 16-bit values, two results
    per special-function instruction; the result has DT's precision, which the product with
    V would round it to anyway. Otherwise fp32 exp2, then a cast.
    """
    if FAST_EXP:
        if DT == tl.bfloat16:
            return tl.inline_asm_elementwise(
                "ex2.approx.ftz.bf16x2 $0, $1;", "=r,r", [x.to(tl.bfloat16)],
                dtype=tl.bfloat16, is_pure=True, pack=2,
            )  # fmt: skip
        else:
            return tl.inline_asm_elementwise(
                "ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)],
                dtype=tl.float16, is_pure=True, pack=2,
            )  # fmt: skip
    else:
        return tl.math.exp2(x).to(DT)
