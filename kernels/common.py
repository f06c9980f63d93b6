"""Triton helpers shared by the forward and backward kernels: segments, masks and exp2."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_bounds(TILES, t):
    """Tile t's descriptor (8 int32 per tile, metadata.py): its own rows [start, end) and its
    key hull [a_lo, a_hi) with the fully attended part [f_lo, f_hi) inside it."""
    tb = TILES + t * 8
    start = tl.load(tb + 0)
    end = tl.load(tb + 1)
    a_lo = tl.load(tb + 2)
    f_lo = tl.load(tb + 3)
    f_hi = tl.load(tb + 4)
    a_hi = tl.load(tb + 5)
    return start, end, a_lo, f_lo, f_hi, a_hi


@triton.jit
def wrap_bounds(TILES, t):
    """Tile t's wrap-around key segment [b_lo, b_hi) (window masks; empty when b_lo == b_hi)."""
    tb = TILES + t * 8
    return tl.load(tb + 6), tl.load(tb + 7)


@triton.jit
def split_hull(a_lo, f_lo, f_hi, a_hi, BLOCK_N: tl.constexpr):
    """Block boundaries of the hull [a_lo, a_hi): masked head [a_lo, h_end), unmasked body
    [h_end, b_end) of whole blocks inside the full range [f_lo, f_hi), masked tail [b_end, a_hi).

    Blocks are aligned on a_lo, so the three loops together run ceil((a_hi - a_lo) / BLOCK_N)
    iterations, the fewest possible, and only blocks that reach outside [f_lo, f_hi) are masked.
    """
    h_end = tl.minimum(a_lo + ((f_lo - a_lo + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, a_hi)
    b_end = h_end + (tl.maximum(f_hi - h_end, 0) // BLOCK_N) * BLOCK_N
    return h_end, b_end


@triton.jit
def clamp_ranges(lo, hi, start, end):
    """Per-row range [lo, hi) clipped to the segment [start, end): (lo, width >= 0)."""
    lo = tl.maximum(lo, start)
    return lo, tl.maximum(tl.minimum(hi, end) - lo, 0)


@triton.jit
def _inside(j, lo, width):
    """lo <= j < lo + width as ONE unsigned compare of j - lo (width >= 0)."""
    d = (j - lo[:, None]).to(tl.uint32, bitcast=True)
    return d < width[:, None].to(tl.uint32, bitcast=True)


@triton.jit
def allowed(offs_n, lo1, w1, lo2, w2, HAS_WRAP: tl.constexpr):
    """(BLOCK_M, BLOCK_N) mask: key j in the row's (segment-clipped) range 1 or range 2,
    ranges given as (lo, width) by clamp_ranges."""
    j = offs_n[None, :]
    ok = _inside(j, lo1, w1)
    if HAS_WRAP:
        ok = ok | _inside(j, lo2, w2)
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
                "ex2.approx.ftz.bf16x2 $0, $1;",
                "=r,r",
                [x.to(tl.bfloat16)],
                dtype=tl.bfloat16,
                is_pure=True,
                pack=2,
            )
        else:
            return tl.inline_asm_elementwise(
                "ex2.approx.f16x2 $0, $1;",
                "=r,r",
                [x.to(tl.float16)],
                dtype=tl.float16,
                is_pure=True,
                pack=2,
            )
    else:
        return tl.math.exp2(x).to(DT)
