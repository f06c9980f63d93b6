"""Plans: mask of the plan == mask definition (base.py), element by element, small N."""

import numpy as np
import pytest
import torch

from trackformers.attention.plans import (
    cluster_plan,
    dense_mask_reference,
    full_plan,
    row_ranges,
    surface_coordinates,
    window_plan,
)
from trackformers.attention.synthetic import synthetic_batch

SIZES = [37, 130, 1, 64, 300]


def mask_from_ranges(plan):
    lo, hi = row_ranges(plan)
    n = lo.shape[0]
    keys = torch.arange(n)[None, :, None]
    return ((keys >= lo[:, None, :]) & (keys < hi[:, None, :])).any(-1)  # (N, N)


def independent_window_mask(batch, window):
    """Window mask in INPUT order from numpy, not using the plan."""
    cu = batch.cu_seqlens.numpy()
    xyz = batch.coords.numpy()
    n = xyz.shape[0]
    mask = np.zeros((n, n), bool)
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        m = b - a
        order = np.argsort(np.arctan2(xyz[a:b, 1], xyz[a:b, 0]), kind="stable")
        pos = np.empty(m, int)
        pos[order] = np.arange(m)
        d = np.abs(pos[:, None] - pos[None, :])
        ok = np.minimum(d, m - d) <= window
        mask[a:b, a:b] = ok if m > 2 * window + 1 else True
    return torch.from_numpy(mask)


def to_input_order(mask_sorted, plan):
    if plan.perm is None:
        return mask_sorted
    inv = plan.inv_perm
    return mask_sorted[inv][:, inv]


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(SIZES, num_features=4, seed=3)


def test_full_plan_is_block_diagonal(batch):
    plan = full_plan(batch)
    mask = mask_from_ranges(plan)
    seq = batch.seq_index()
    assert torch.equal(mask, seq[:, None] == seq[None, :])
    assert torch.equal(dense_mask_reference(plan), mask)


@pytest.mark.parametrize("window", [0, 3, 20, 200])
def test_window_plan_matches_definition(batch, window):
    plan = window_plan(batch, window)
    assert torch.equal(plan.perm[plan.inv_perm], torch.arange(batch.num_hits))
    mask = mask_from_ranges(plan)
    assert torch.equal(mask, dense_mask_reference(plan))
    assert torch.equal(to_input_order(mask, plan), independent_window_mask(batch, window))


@pytest.mark.parametrize("group_size,sector_size,adjacency", [(8, 32, 1), (16, 1000, 2), (4, 4, 0)])
def test_cluster_plan_matches_definition(batch, group_size, sector_size, adjacency):
    plan = cluster_plan(batch, group_size=group_size, sector_size=sector_size, adjacency=adjacency)
    gid, ptr = plan.group_id.long(), plan.group_ptr.long()
    seq_sorted = batch.seq_index()[plan.perm]
    # groups contiguous, ids non-decreasing, never crossing an event
    assert bool((gid.diff() >= 0).all())
    assert ptr[0] == 0 and ptr[-1] == batch.num_hits and ptr.numel() == int(gid[-1]) + 2
    for g in range(ptr.numel() - 1):
        rows = slice(int(ptr[g]), int(ptr[g + 1]))
        assert bool((gid[rows] == g).all())
        assert seq_sorted[rows].unique().numel() == 1
        assert 1 <= ptr[g + 1] - ptr[g] <= group_size
    # hits stay inside their event after sorting
    assert torch.equal(seq_sorted, batch.seq_index())
    # mask from the plan's ranges == |gid_i - gid_j| <= adjacency within an event
    mask = mask_from_ranges(plan)
    same = seq_sorted[:, None] == seq_sorted[None, :]
    expected = same & ((gid[:, None] - gid[None, :]).abs() <= adjacency)
    assert torch.equal(mask, expected)
    assert torch.equal(dense_mask_reference(plan), expected)


def test_cluster_groups_are_geometric_neighbourhoods():
    batch = synthetic_batch([4000], seed=5)
    plan = cluster_plan(batch, group_size=64, sector_size=1000)
    phi, s = surface_coordinates(batch.coords)
    phi, s = phi[plan.perm], s[plan.perm]
    ptr = plan.group_ptr.long()
    spread = [float(s[ptr[g] : ptr[g + 1]].std()) for g in range(ptr.numel() - 1)]
    # a group covers a small part of the unrolled surface (s spans ~2 * 1011 mm)
    assert np.median(spread) < 0.1 * float(s.std())
    sectors = [float(torch.cos(phi[ptr[g] : ptr[g + 1]]).std()) for g in range(ptr.numel() - 1)]
    assert np.median(sectors) < 0.35  # one of ~4 phi sectors per group


def test_surface_projection_barrel_and_endcap():
    coords = torch.tensor([[91.0, 0.0, 100.0], [0.0, 10.0, 1000.0], [0.0, -10.0, -1000.0]])
    phi, s = surface_coordinates(coords)
    assert torch.allclose(s, torch.tensor([100.0, 920 + 91 - 9.2, -(920 + 91 - 9.2)]))
    assert torch.allclose(phi, torch.tensor([0.0, np.pi / 2, -np.pi / 2]))


def test_bad_batch_is_rejected(batch):
    bad = synthetic_batch([10, 10])
    bad.cu_seqlens = torch.tensor([0, 10, 15], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        cluster_plan(bad)
    with pytest.raises(ValueError, match="window"):
        window_plan(batch, -1)


def test_wrong_max_seqlen_is_rejected():
    bad = synthetic_batch([10, 30])
    bad.max_seqlen = 20
    with pytest.raises(ValueError, match="max_seqlen=20 < longest event"):
        cluster_plan(bad)


@pytest.mark.gpu
def test_compiled_plans_equal_eager_on_gpu(monkeypatch):
    import warnings

    from trackformers.attention import compiled
    from trackformers.attention.blocksparse import build_layout

    batch = synthetic_batch([3000, 17, 1, 5000], seed=9, device="cuda")

    def everything():
        out = []
        for plan in (cluster_plan(batch, 64, 1000), window_plan(batch, 50), full_plan(batch)):
            lay = build_layout(plan, 128)
            out += [
                plan.perm,
                plan.inv_perm,
                plan.group_id,
                plan.group_ptr,
                lay.lo,
                lay.hi,
                lay.kv_num_blocks,
                lay.kv_indices,
                lay.full_kv_num_blocks,
                lay.full_kv_indices,
            ]
        return out

    monkeypatch.setattr(compiled, "DEVICES", ())
    eager = everything()
    monkeypatch.setattr(compiled, "DEVICES", ("cuda",))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile must not hide here
        comp = everything()
    for a, b in zip(eager, comp, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_compile_failure_falls_back_to_eager_loudly(monkeypatch):
    from trackformers.attention import compiled

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("inductor exploded")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(compiled, "DEVICES", ("cpu",))
    monkeypatch.setattr(compiled, "_BROKEN", set())

    @compiled.on_device
    def double(x):
        return 2 * x

    x = torch.arange(4)
    with pytest.warns(RuntimeWarning, match="inductor exploded"):
        assert torch.equal(double(x), 2 * x)
    assert torch.equal(double(x), 2 * x)  # no second warning: eager from now on
    monkeypatch.setattr(compiled, "DEVICES", ())
    assert torch.equal(double(x), 2 * x)
