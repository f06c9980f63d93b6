"""FA4 block-sparse lists (kernels/fa4_meta.py) against the dense reference mask, on CPU.

The lists expanded to an (N, N) mask (full blocks whole, partial blocks through the per-row
ranges the kernel's mask_mod reads) must equal ``plans.dense_mask_reference`` for random
packed events, cluster and window (with wrap-around) plans, several N and block sizes. The
Triton build must equal the torch reference bit for bit (checked in a child process under
TRITON_INTERPRET=1, as tests/test_kernels_interp.py does).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from interp_child import Checks, run_child

SIZES = ([300], [700, 1, 300, 90, 900], [40, 33, 260, 7, 129, 128])  # ragged, tiny events


def _cases(sizes):
    from trackformers.attention.plans import cluster_plan, full_plan, presorted, window_plan
    from trackformers.attention.synthetic import synthetic_batch

    b = synthetic_batch(sizes, seed=len(sizes))
    return {
        "full": full_plan(b),
        "cluster": presorted(cluster_plan(b, group_size=64)),
        "cluster_adj2": presorted(cluster_plan(b, group_size=48, adjacency=2)),
        "window100": presorted(window_plan(b, 100)),
        "window7": presorted(window_plan(b, 7)),  # many wrap pieces inside one query block
    }


def _rows(plan, n):
    from trackformers.attention.plans import row_ranges

    lo, hi = row_ranges(plan)  # (N, R)
    rows = torch.zeros(4, n, dtype=torch.long)
    rows[0], rows[1] = lo[:, 0], hi[:, 0]
    if lo.shape[1] > 1:  # empty wrap ranges as (0, 0), as kernels/metadata.py writes them
        has = hi[:, 1] > lo[:, 1]
        rows[2], rows[3] = torch.where(has, lo[:, 1], 0), torch.where(has, hi[:, 1], 0)
    return rows


@pytest.mark.parametrize("sizes", SIZES)
def test_layout_expands_to_the_dense_mask(sizes):
    from trackformers.kernels.fa4_meta import (
        block_sparse_layout_reference,
        expand_mask,
        max_blocks,
        visited_pairs,
    )

    from trackformers.attention.plans import dense_mask_reference

    n = sum(sizes)
    for name, plan in _cases(sizes).items():
        ref = dense_mask_reference(plan)  # (N, N), tests only
        rows = _rows(plan, n)
        for bs in (16, 64, 128):
            lay = block_sparse_layout_reference(rows, n, max_blocks(plan, n, bs, bs), bs, bs)
            assert torch.equal(expand_mask(lay), ref), (sizes, name, bs)
            assert visited_pairs(lay) >= int(ref.sum())
            m = -(-n // bs)
            assert lay.mask_idx.shape[:3] == (1, 1, m) and lay.aux.shape == (m * bs, 4)
            for cnt, idx in ((lay.mask_cnt, lay.mask_idx), (lay.full_cnt, lay.full_idx)):
                for qb in range(m):  # ascending lists (the kernel masks keys >= N on the
                    lst = idx[0, 0, qb, : int(cnt[0, 0, qb])]  # highest block it visits)
                    assert bool((lst[1:] > lst[:-1]).all()), (name, bs, qb)
            if n % bs:  # the tail key block is never full
                assert not bool(
                    (lay.full_idx[0, 0] == n // bs)
                    .logical_and(torch.arange(lay.max_blocks)[None] < lay.full_cnt[0, 0, :, None])
                    .any()
                )


def test_bound_is_o_of_n_for_window_and_cluster():
    """K stays fixed while N grows: the lists are O(N) memory."""
    from trackformers.kernels.fa4_meta import max_blocks

    from trackformers.attention.base import AttentionPlan

    cu = torch.tensor([0, 65536], dtype=torch.int32)
    win = AttentionPlan("window", cu, 65536, window=512)
    clu = AttentionPlan("cluster", cu, 65536, adjacency=1, extra={"group_size": 384})
    assert max_blocks(win, 65536) == max_blocks(win, 1 << 20) == 28
    assert max_blocks(clu, 65536) == max_blocks(clu, 1 << 20) == 20
    assert max_blocks(AttentionPlan("full", cu, 65536), 65536) == 512  # full: every block


def test_bad_input_gives_clear_errors():
    from trackformers.kernels.fa4_meta import block_sparse_layout_reference

    rows = torch.zeros(4, 10, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"rows of shape \(4, 12\)"):
        block_sparse_layout_reference(rows, 12, 4)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        block_sparse_layout_reference(rows, 10, 4, block_m=48)
    with pytest.raises(ValueError, match="integer rows"):
        block_sparse_layout_reference(rows.float(), 10, 4)
    with pytest.raises(ValueError, match="at least one row"):
        block_sparse_layout_reference(torch.zeros(4, 0, dtype=torch.int32), 0, 4)
    plan = _cases([300])["full"]
    with pytest.raises(ValueError, match="more than max_blocks=1"):
        block_sparse_layout_reference(_rows(plan, 300), 300, 1, 16, 16)


# --- Triton build under the interpreter (child process) ---------------------------------


def _triton_vs_reference():
    from trackformers.kernels.fa4_meta import (
        block_sparse_layout,
        block_sparse_layout_reference,
        max_blocks,
    )
    from trackformers.kernels.metadata import build_row_intervals

    out = {}
    for sizes in SIZES[1:]:
        n = sum(sizes)
        for name, p in _cases(sizes).items():
            if name == "full":
                continue
            rows = build_row_intervals(
                p.kind,
                p.cu_seqlens,
                p.max_seqlen,
                p.group_id,
                p.adjacency,
                p.window,
                num_rows=n,
                group_ptr=p.group_ptr,
            )
            same_rows = torch.equal(rows.long(), _rows(p, n))
            for bs in (16, 128):
                k = max_blocks(p, n, bs, bs)
                a = block_sparse_layout_reference(rows, n, k, bs, bs)
                t = block_sparse_layout(rows, n, k, bs, bs, check=True)
                fields = ("mask_cnt", "mask_idx", "full_cnt", "full_idx", "aux")
                out[f"{len(sizes)}/{name}/{bs}"] = same_rows and all(
                    torch.equal(getattr(a, f), getattr(t, f)) for f in fields
                )
    rows = build_row_intervals("full", torch.tensor([0, 300], dtype=torch.int32), 300, num_rows=300)
    try:
        block_sparse_layout(rows, 300, 1, 16, 16, check=True)
        out["overflow_raises"] = False
    except ValueError as e:
        out["overflow_raises"] = "max_blocks=1" in str(e)
    return out


@pytest.fixture(scope="module")
def interp():
    return run_child(__file__, timeout=600)


@pytest.mark.slow  # ~20 s: the interpreter runs the layout kernel per query block
def test_triton_build_equals_reference(interp):
    res = interp["triton"]
    assert isinstance(res, dict), res  # a traceback string otherwise
    assert res and all(res.values()), {k: v for k, v in res.items() if not v}


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    torch.set_num_threads(1)
    checks = Checks()
    checks("triton", _triton_vs_reference)
    import json

    print(json.dumps(checks.report))
    sys.exit(0)
