"""Block-sparse layout of a plan: padding to a bucketed length, FlexAttention BlockMask.

A plan's mask is, per sorted row, a union of <= 2 key ranges (``plans.row_ranges``). The
rows are padded to ``n_pad`` (a multiple of the block size on a geometric ladder, so that
event sizes share a few compiled shapes); pad rows attend only themselves. The block layout
(which key blocks each query block touches, and which of them are fully attended) comes from
difference arrays over the ranges: O(N) scatter plus O((n_pad / block)^2) block bookkeeping,
never an element-level N x N mask. A torch reference (``blocksparse_attention``) runs the
same layout with ordinary autograd ops, for CPU training and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trackformers.attention.base import AttentionPlan
from trackformers.attention.compiled import on_device
from trackformers.attention.plans import bucket_length, plan_tensors, row_ranges

__all__ = ["BlockLayout", "bucket_length", "build_layout", "layout_tensors",
           "plan_layout_tensors", "layout_from_tensors", "blocksparse_attention"]  # fmt: skip


@dataclass
class BlockLayout:
    n: int  # real rows
    n_pad: int  # padded rows, multiple of block
    block: int
    lo: Tensor  # (n_pad, R) int32 key range starts per sorted row (pads: [i, i+1))
    hi: Tensor  # (n_pad, R) int32 key range ends
    kv_num_blocks: Tensor  # (QB,) int32 partially attended key blocks per query block
    kv_indices: Tensor  # (QB, KB) int32 their indices first
    full_kv_num_blocks: Tensor  # (QB,) int32 fully attended key blocks
    full_kv_indices: Tensor  # (QB, KB) int32

    def mask_mod(self):
        """FlexAttention mask_mod reading the range tensors (no N x N evaluation)."""
        ranges = [
            (self.lo[:, r].contiguous(), self.hi[:, r].contiguous())
            for r in range(self.lo.shape[1])
        ]
        (lo0, hi0) = ranges[0]
        if self.lo.shape[1] == 1:

            def mask_mod(b, h, q_idx, kv_idx):
                return (kv_idx >= lo0[q_idx]) & (kv_idx < hi0[q_idx])

            return mask_mod
        (lo1, hi1) = ranges[1]

        def mask_mod2(b, h, q_idx, kv_idx):
            main = (kv_idx >= lo0[q_idx]) & (kv_idx < hi0[q_idx])
            return main | ((kv_idx >= lo1[q_idx]) & (kv_idx < hi1[q_idx]))

        return mask_mod2

    def block_mask(self):
        from torch.nn.attention.flex_attention import BlockMask

        args = (
            self.kv_num_blocks[None, None],  # (1, 1, QB)
            self.kv_indices[None, None],  # (1, 1, QB, KB)
            self.full_kv_num_blocks[None, None],
            self.full_kv_indices[None, None],
        )
        kw = dict(BLOCK_SIZE=self.block, mask_mod=self.mask_mod())
        try:
            # every plan mask (and the pad diagonal) is symmetric, so the query-side layout
            # equals the key-side one: skip torch's dense transposition of the block matrix
            bm = BlockMask.from_kv_blocks(
                *args, seq_lengths=(self.n_pad, self.n_pad), compute_q_blocks=False, **kw
            )
        except TypeError:  # older torch: let from_kv_blocks transpose
            return BlockMask.from_kv_blocks(*args, **kw)
        bm.q_num_blocks, bm.q_indices = args[0], args[1]
        bm.full_q_num_blocks, bm.full_q_indices = args[2], args[3]
        return bm


def _count_blocks(qb: Tensor, b0: Tensor, b1: Tensor, nqb: int, nkb: int) -> Tensor:
    """(nqb, nkb) int32: per query block, how many (row, range) pairs cover key block j,
    from half-open block intervals [b0, b1) per (row, range); empty where b1 <= b0."""
    ok = (b1 > b0).to(torch.int32)
    base = qb * (nkb + 1)
    diff = torch.zeros(nqb * (nkb + 1), dtype=torch.int32, device=qb.device)
    diff.scatter_add_(0, (base + torch.where(ok > 0, b0, 0)).flatten(), ok.flatten())
    diff.scatter_add_(0, (base + torch.where(ok > 0, b1, 0)).flatten(), -ok.flatten())
    return diff.view(nqb, nkb + 1).cumsum(1, dtype=torch.int32)[:, :nkb]


def _first_true(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Counts and column indices of True entries first, then the False ones (order kept)
    per row: the stable argsort of ~mask, from one cumsum and one scatter."""
    m = mask.to(torch.int32)  # (QB, KB)
    counts = m.sum(1, dtype=torch.int32)  # (QB,)
    before = m.cumsum(1, dtype=torch.int32)  # (QB, KB) trues up to and including column
    col = torch.arange(mask.shape[1], dtype=torch.int32, device=mask.device)[None, :]
    dest = torch.where(mask, before - 1, counts[:, None] + col - before)  # (QB, KB)
    idx = torch.empty_like(m).scatter_(1, dest.long(), col.expand_as(m))
    return counts, idx


def layout_tensors(lo: Tensor, hi: Tensor, block: int) -> dict[str, Tensor]:
    """Block layout of padded key ranges lo, hi (R, n_pad) (pad rows already [i, i+1)).

    Static-shaped and sync-free: kv_num_blocks (QB,), kv_indices (QB, QB) (partially
    attended key blocks first), full_kv_num_blocks, full_kv_indices (every row attends every
    key of the block), all int32.
    """
    r, n_pad = lo.shape
    nb = n_pad // block
    lo, hi = lo.long(), hi.long()
    qb = (torch.arange(n_pad, device=lo.device) // block)[None, :].expand(r, -1)  # (R, n_pad)
    nonempty = hi > lo
    touch_b0 = lo // block
    touch_b1 = torch.where(nonempty, (hi - 1) // block + 1, touch_b0)
    touched = _count_blocks(qb, touch_b0, touch_b1, nb, nb) > 0  # (QB, KB)
    full_b0 = (lo + block - 1) // block
    full_b1 = torch.maximum(hi // block, full_b0)
    full = _count_blocks(qb, full_b0, full_b1, nb, nb) == block  # every row covers the block
    kv_num, kv_idx = _first_true(touched & ~full)
    full_num, full_idx = _first_true(full)
    return dict(kv_num_blocks=kv_num, kv_indices=kv_idx, full_kv_num_blocks=full_num,
                full_kv_indices=full_idx)  # fmt: skip


_layout_tensors = on_device(layout_tensors)


def plan_layout_tensors(kind: str, coords: Tensor, cu_stage: Tensor, block: int = 128,
                        **statics) -> dict[str, Tensor]:  # fmt: skip
    """plans.plan_tensors and layout_tensors as ONE static, sync-free program (what the
    flex/windowed backends capture as a CUDA graph); coords has n_pad rows."""
    t = plan_tensors(kind, coords, cu_stage, **statics)
    t.update(layout_tensors(t["lo"], t["hi"], block))
    return t


_plan_layout_tensors = on_device(plan_layout_tensors)


def layout_from_tensors(t: dict[str, Tensor], n: int, block: int) -> BlockLayout:
    """BlockLayout of the outputs of plan_layout_tensors (n real rows)."""
    return BlockLayout(
        n=n,
        n_pad=t["lo"].shape[1],
        block=block,
        lo=t["lo"].t(),  # (n_pad, R) view, columns contiguous
        hi=t["hi"].t(),
        kv_num_blocks=t["kv_num_blocks"],
        kv_indices=t["kv_indices"],
        full_kv_num_blocks=t["full_kv_num_blocks"],
        full_kv_indices=t["full_kv_indices"],
    )


def build_layout(plan: AttentionPlan, block: int = 128, steps_per_octave: int = 8) -> BlockLayout:
    """Block layout of any plan from its row ranges (the backends build theirs together with
    the plan, see plan_layout_tensors; this is the general path)."""
    lo, hi = row_ranges(plan)  # (N, R) int64, sorted order
    n, r = lo.shape
    n_pad = bucket_length(n, block, steps_per_octave)
    pad_rows = torch.arange(n, n_pad, device=lo.device)[:, None]  # (n_pad - N, 1)
    first = (torch.arange(r, device=lo.device) == 0).long()[None, :]  # (1, R)
    lo = torch.cat([lo, pad_rows.expand(-1, r)]).t().int().contiguous()  # (R, n_pad)
    hi = torch.cat([hi, pad_rows + first]).t().int().contiguous()
    t = dict(lo=lo, hi=hi, **_layout_tensors(lo, hi, block))
    return layout_from_tensors(t, n, block)


def attended_blocks(layout: BlockLayout) -> tuple[int, int]:
    """(partial, full) numbers of (query block, key block) pairs visited."""
    return int(layout.kv_num_blocks.sum()), int(layout.full_kv_num_blocks.sum())


def blocksparse_attention(q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout) -> Tensor:
    """Reference block-sparse attention with autograd ops; q, k, v (n_pad, H, D) sorted+padded.

    Memory O(n_pad * max_blocks_per_row * block); exact masking from the row ranges.
    """
    n_pad, h, d = q.shape
    bs = layout.block
    nb = n_pad // bs
    num = layout.kv_num_blocks + layout.full_kv_num_blocks  # (QB,)
    kmax = int(num.max())
    touched = torch.zeros(nb, nb + 1, dtype=torch.bool, device=q.device)
    rows = torch.arange(nb, device=q.device)[:, None]
    for count, idx in (
        (layout.kv_num_blocks, layout.kv_indices),
        (layout.full_kv_num_blocks, layout.full_kv_indices),
    ):
        col = torch.arange(nb, device=q.device)[None, :]
        touched[rows.expand(-1, nb), torch.where(col < count[:, None], idx.long(), nb)] = True
    sel_count, sel = _first_true(touched[:, :nb])
    sel = sel[:, :kmax].long()  # (QB, kmax)
    valid_blk = torch.arange(kmax, device=q.device)[None, :] < sel_count[:, None]  # (QB, kmax)
    qb = q.transpose(0, 1).reshape(h, nb, bs, d)  # (H, QB, bs, D)
    kb = k.transpose(0, 1).reshape(h, nb, bs, d)[:, sel].reshape(h, nb, kmax * bs, d)
    vb = v.transpose(0, 1).reshape(h, nb, bs, d)[:, sel].reshape(h, nb, kmax * bs, d)
    key_row = (sel[:, :, None] * bs + torch.arange(bs, device=q.device)).reshape(nb, -1)
    q_row = torch.arange(n_pad, device=q.device).view(nb, bs)  # (QB, bs)
    keys = key_row[:, None, :]  # (QB, 1, kmax*bs)
    lo, hi = layout.lo.long()[q_row], layout.hi.long()[q_row]  # (QB, bs, R)
    allowed = torch.zeros(nb, bs, kmax * bs, dtype=torch.bool, device=q.device)
    for r in range(lo.shape[-1]):
        allowed |= (keys >= lo[..., r, None]) & (keys < hi[..., r, None])
    allowed &= valid_blk.repeat_interleave(bs, 1)[:, None, :]
    scores = torch.einsum("hqid,hqjd->hqij", qb, kb) * d**-0.5  # (H, QB, bs, kmax*bs)
    scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    p = scores.masked_fill(~allowed, float("-inf")).softmax(-1).to(vb.dtype)
    out = torch.einsum("hqij,hqjd->hqid", p, vb)  # (H, QB, bs, D)
    return out.reshape(h, n_pad, d).transpose(0, 1)  # (n_pad, H, D)
