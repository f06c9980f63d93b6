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

__all__ = [
    "BlockLayout",
    "bucket_length",
    "build_layout",
    "layout_tensors",
    "BLOCK_KEYS",
    "plan_layout_tensors",
    "layout_from_tensors",
    "blocksparse_attention",
]


@dataclass
class BlockLayout:
    """Row ranges of a plan and the block-sparse layout derived from them (FlexAttention's
    ``BlockMask`` inputs), for ``n`` real rows padded to ``n_pad``.
    """

    n: int  # real rows
    n_pad: int  # padded rows, multiple of block
    block: int
    ranges: list  # per range r: (lo_r, hi_r), each (n_pad,) int32 (pads: [i, i+1), then empty)
    blocks: tuple  # kv_num_blocks (1, 1, QB), kv_indices (1, 1, QB, KB), full_kv_num_blocks,
    #                full_kv_indices, int32, in the shapes BlockMask.from_kv_blocks takes

    @property
    def lo(self) -> Tensor:
        """(n_pad, R) int32 key range starts per sorted row."""
        return torch.stack([lo for lo, _ in self.ranges], 1)

    @property
    def hi(self) -> Tensor:
        """(n_pad, R) int32 key range ends."""
        return torch.stack([hi for _, hi in self.ranges], 1)

    @property
    def kv_num_blocks(self) -> Tensor:
        """(QB,) partially attended key blocks per query block."""
        return self.blocks[0][0, 0]

    @property
    def kv_indices(self) -> Tensor:
        """(QB, KB) indices of the partially attended key blocks first (the rest: unspecified)."""
        return self.blocks[1][0, 0]

    @property
    def full_kv_num_blocks(self) -> Tensor:
        """(QB,) fully attended key blocks."""
        return self.blocks[2][0, 0]

    @property
    def full_kv_indices(self) -> Tensor:
        """(QB, KB) indices of the fully attended key blocks first (the rest: unspecified)."""
        return self.blocks[3][0, 0]

    def mask_mod(self):
        """FlexAttention mask_mod reading the range tensors (no N x N evaluation)."""
        (lo0, hi0) = self.ranges[0]
        if len(self.ranges) == 1:

            def mask_mod(b, h, q_idx, kv_idx):
                return (kv_idx >= lo0[q_idx]) & (kv_idx < hi0[q_idx])

            return mask_mod
        (lo1, hi1) = self.ranges[1]

        def mask_mod2(b, h, q_idx, kv_idx):
            main = (kv_idx >= lo0[q_idx]) & (kv_idx < hi0[q_idx])
            return main | ((kv_idx >= lo1[q_idx]) & (kv_idx < hi1[q_idx]))

        return mask_mod2

    def block_mask(self):
        """FlexAttention ``BlockMask`` of this layout (block size ``block``, mask read from the
        range tensors).
        """
        from torch.nn.attention.flex_attention import BlockMask

        kw = dict(BLOCK_SIZE=self.block, mask_mod=self.mask_mod())
        try:
            # every plan mask (and the pad diagonal) is symmetric, so the query-side layout
            # equals the key-side one: skip torch's dense transposition of the block matrix
            bm = BlockMask.from_kv_blocks(
                *self.blocks, seq_lengths=(self.n_pad, self.n_pad), compute_q_blocks=False, **kw
            )
        except TypeError:  # older torch: let from_kv_blocks transpose
            return BlockMask.from_kv_blocks(*self.blocks, **kw)
        bm.q_num_blocks, bm.q_indices, bm.full_q_num_blocks, bm.full_q_indices = self.blocks
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


def _interval_layout(lo: Tensor, hi: Tensor, block: int) -> tuple[Tensor, ...]:
    """Block layout of ONE range per row whose union over the rows of every query block is
    contiguous (cluster and full plans: lo, hi non-decreasing, no gap between consecutive
    rows), in closed form from per-block min/max: touched key blocks [t0, t1), full ones
    [f0, f1) (inside every row's range), partial = touched minus full. Index rows list the
    partial (full) blocks ascending; entries past the count are unspecified key blocks
    (in range, never read by FlexAttention). O(N) reductions + O(QB * KB) elementwise."""
    nb = lo.shape[0] // block
    lo_b, hi_b = lo.view(nb, block), hi.view(nb, block)  # (QB, block)
    t0 = (lo_b.amin(1) // block)[:, None]  # (QB, 1) first touched key block
    t1 = ((hi_b.amax(1) - 1) // block + 1)[:, None]  # (QB, 1) one past the last touched
    f0 = ((lo_b.amax(1) + block - 1) // block)[:, None]  # (QB, 1) full blocks [f0, f1)
    f1 = (hi_b.amin(1) // block)[:, None]
    none = f1 <= f0
    f0, f1 = torch.where(none, t1, f0), torch.where(none, t1, f1)  # empty, at the end
    k = torch.arange(nb, dtype=lo.dtype, device=lo.device)[None, :]  # (1, KB)
    before = f0 - t0  # (QB, 1) partial blocks before the full ones
    kv_idx = torch.where(k < before, t0 + k, f1 + k - before).clamp_max(nb - 1)  # (QB, KB)
    full_idx = (f0 + k).clamp_max(nb - 1)
    return (before + t1 - f1)[:, 0], kv_idx, (f1 - f0)[:, 0], full_idx


def layout_tensors(ranges: list, block: int, contiguous: bool = False) -> dict[str, Tensor]:
    """Block layout of padded key ranges [(lo_r, hi_r)], each (n_pad,) (pads [i, i+1)).

    Static-shaped and sync-free: kv_num_blocks (1, 1, QB), kv_indices (1, 1, QB, QB)
    (partially attended key blocks first, ascending), full_kv_num_blocks, full_kv_indices
    (every row attends every key of the block), all int32. Only the first count entries of
    an index row mean anything (FlexAttention reads no more); the rest are in range.
    contiguous=True: one range per row whose union over every query block is contiguous
    (cluster, full plans; see _interval_layout), the same layout from per-block min/max
    instead of difference arrays.

    Args:
        ranges: per range, (lo, hi) (n_pad,) int32 key bounds of each sorted row.
        block: block size (n_pad is a multiple of it).
        contiguous: the ranges' union per query block is contiguous (faster path).

    Returns:
        ``kv_num_blocks``, ``kv_indices``, ``full_kv_num_blocks``, ``full_kv_indices``.
    """
    nb = ranges[0][0].shape[0] // block
    if contiguous and len(ranges) == 1:  # int32 arithmetic (int64 costs several instructions)
        layout = _interval_layout(ranges[0][0].int(), ranges[0][1].int(), block)
        kv_num, kv_idx, full_num, full_idx = (t.int() for t in layout)
    else:
        lo = torch.stack([a for a, _ in ranges]).long()  # (R, n_pad)
        hi = torch.stack([b for _, b in ranges]).long()
        r, n_pad = lo.shape
        qb = (torch.arange(n_pad, device=lo.device) // block)[None, :].expand(r, -1)  # (R, n_pad)
        nonempty = hi > lo
        touch_b0 = lo // block
        touch_b1 = torch.where(nonempty, (hi - 1) // block + 1, touch_b0)
        touched = _count_blocks(qb, touch_b0, touch_b1, nb, nb) > 0  # (QB, KB)
        full_b0 = (lo + block - 1) // block
        full_b1 = torch.maximum(hi // block, full_b0)
        full = _count_blocks(qb, full_b0, full_b1, nb, nb) == block  # every row covers it
        kv_num, kv_idx = _first_true(touched & ~full)
        full_num, full_idx = _first_true(full)
    return dict(
        kv_num_blocks=kv_num.view(1, 1, nb),
        kv_indices=kv_idx.view(1, 1, nb, nb),
        full_kv_num_blocks=full_num.view(1, 1, nb),
        full_kv_indices=full_idx.view(1, 1, nb, nb),
    )


_layout_tensors = on_device(layout_tensors)
CONTIGUOUS_KINDS = ("cluster", "full")  # plans whose block rows cover contiguous key ranges
BLOCK_KEYS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")


def _ranges_of(t: dict) -> list:
    return [(t[f"lo{r}"], t[f"hi{r}"]) for r in range(2) if f"lo{r}" in t]


def plan_layout_tensors(
    kind: str, coords: Tensor, cu_stage: Tensor, block: int = 128, **statics
) -> dict[str, Tensor]:
    """plans.plan_tensors and layout_tensors as ONE static, sync-free program (what the
    flex/windowed backends capture as a CUDA graph); coords has n_pad rows.

    Args:
        kind: plan kind (``cluster``, ``window``, ``full``).
        coords: (n_pad, 3) hit coordinates, pad rows after the real ones.
        cu_stage: (L,) int64 event boundaries then N repeated (``plans.stage_length``).
        block: block size of the layout.
        **statics: the plan's static parameters (``plans.plan_tensors``).

    Returns:
        The plan tensors and the layout tensors in one dict.
    """
    t = plan_tensors(kind, coords, cu_stage, **statics)
    t.update(_layout_tensors(_ranges_of(t), block, kind in CONTIGUOUS_KINDS))
    return t


def layout_from_tensors(t: dict[str, Tensor], n: int, block: int) -> BlockLayout:
    """BlockLayout of the outputs of plan_layout_tensors (n real rows).

    Args:
        t: output of :func:`plan_layout_tensors` (``lo0``, ``hi0``, ... and the block tensors).
        n: real rows.
        block: block size.

    Returns:
        The layout, its tensors shared with ``t``.
    """
    return BlockLayout(n, t["lo0"].shape[0], block, _ranges_of(t), tuple(t[k] for k in BLOCK_KEYS))


def build_layout(plan: AttentionPlan, block: int = 128, steps_per_octave: int = 8) -> BlockLayout:
    """Block layout of any plan from its row ranges (the backends build theirs together with
    the plan, see plan_layout_tensors; this is the general path).

    Args:
        plan: any attention plan.
        block: block size.
        steps_per_octave: padding ladder of the row count (``plans.bucket_length``).

    Returns:
        The layout of the plan's sorted rows, padded to a bucketed length.
    """
    lo, hi = row_ranges(plan)  # (N, R) int64, sorted order
    n, r = lo.shape
    n_pad = bucket_length(n, block, steps_per_octave)
    pad_rows = torch.arange(n, n_pad, device=lo.device)  # (n_pad - N,)
    t = {}
    for i in range(r):
        t[f"lo{i}"] = torch.cat([lo[:, i], pad_rows]).int()  # (n_pad,)
        t[f"hi{i}"] = torch.cat([hi[:, i], pad_rows + (1 if i == 0 else 0)]).int()
    t.update(_layout_tensors(_ranges_of(t), block))
    return layout_from_tensors(t, n, block)


def attended_blocks(layout: BlockLayout) -> tuple[int, int]:
    """(partial, full) numbers of (query block, key block) pairs visited.

    Args:
        layout: a block layout.

    Returns:
        (partially attended, fully attended) block pairs; a host sync.
    """
    return int(layout.kv_num_blocks.sum()), int(layout.full_kv_num_blocks.sum())


def blocksparse_attention(q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout) -> Tensor:
    """Reference block-sparse attention with autograd ops; q, k, v (n_pad, H, D) sorted+padded.

    Memory O(n_pad * max_blocks_per_row * block); exact masking from the row ranges.

    Args:
        q: (n_pad, H, D) queries in sorted, padded order.
        k: (n_pad, H, D) keys.
        v: (n_pad, H, D) values.
        layout: the block layout of the plan.

    Returns:
        (n_pad, H, D) attention output.
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
