"""CuTe DSL ``mask_mod`` of the FA4 path: a row's key ranges, read from an aux tensor.

Imported only where ``cutlass`` (nvidia-cutlass-dsl) is installed: by the JIT path of
:mod:`trackformers.kernels.fa4` and by ``benchmarks/fa4_build.py``, which compiles the
kernels ahead of time. The function must live in a source file: CuTe DSL reads its source.

FA4 calls ``mask_mod(batch, head, q_idx, kv_idx, seqlen_info, aux_tensors)`` on every
element of a partial block; ``aux_tensors[0]`` is ``FA4Layout.aux`` (M * 128, 4) int32, the
ranges ``lo1, hi1, lo2, hi2`` of each sorted row (padded to whole query blocks, so every
query index of a block reads inside the tensor). Key j is kept iff lo1 <= j < hi1 or
lo2 <= j < hi2: the same rule as the Triton kernels' element mask.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from flash_attn.cute import utils


@cute.jit
def ranges_mask_mod(batch, head, q_idx, kv_idx, seqlen_info, aux_tensors):
    """True where key kv_idx is in one of query q_idx's two ranges (TensorSSA of shape (1,)).

    Args:
        batch: batch index (always 0: the events are one packed sequence).
        head: head index (the ranges are shared by the heads).
        q_idx: query row, sorted order.
        kv_idx: key row, sorted order.
        seqlen_info: FA4's sequence lengths (unused: the ranges never leave an event).
        aux_tensors: ``[FA4Layout.aux]``, the (M * 128, 4) int32 ranges of each row.
    """
    ranges = aux_tensors[0]
    q = q_idx[0]
    lo1 = utils.scalar_to_ssa(ranges[q, 0], cutlass.Int32)
    hi1 = utils.scalar_to_ssa(ranges[q, 1], cutlass.Int32)
    lo2 = utils.scalar_to_ssa(ranges[q, 2], cutlass.Int32)
    hi2 = utils.scalar_to_ssa(ranges[q, 3], cutlass.Int32)
    return ((kv_idx >= lo1) & (kv_idx < hi1)) | ((kv_idx >= lo2) & (kv_idx < hi2))
