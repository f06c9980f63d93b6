"""pair_recall == the fraction counted on the dense mask of the same plan (small N)."""

import pytest
import torch

from trackformers.attention.coverage import pair_recall, same_particle_pairs
from trackformers.attention.plans import (
    cluster_plan,
    dense_mask_reference,
    full_plan,
    window_plan,
)
from trackformers.attention.synthetic import synthetic_batch


def _reference(plan, pid, label):
    mask = dense_mask_reference(plan)  # (N, N) sorted order
    inv = torch.arange(pid.numel()) if plan.inv_perm is None else plan.inv_perm
    seen = mask[inv][:, inv]  # (N, N) input order
    same = (pid[:, None] == pid[None, :]) & (pid[:, None] != 0)
    same.fill_diagonal_(False)
    out = {"all": seen[same].float().mean().item()}
    for v in torch.unique(label).tolist():
        rows = same & (label[:, None] == v)
        out[f"label={v}"] = seen[rows].float().mean().item()
    return out


def test_pairs_of_each_particle():
    pid = torch.tensor([3, 0, 3, 5, 3, 5, 7])
    a, b = same_particle_pairs(pid)
    got = sorted(zip(a.tolist(), b.tolist(), strict=True))
    assert got == [(0, 2), (0, 4), (2, 0), (2, 4), (3, 5), (4, 0), (4, 2), (5, 3)]


@pytest.mark.parametrize(
    "make",
    [
        lambda b: cluster_plan(b, group_size=16, sector_size=64, adjacency=1),
        lambda b: cluster_plan(b, group_size=8, sector_size=40, adjacency=2),
        lambda b: window_plan(b, 10),
        full_plan,
    ],
)
def test_pair_recall_equals_the_dense_mask_count(make):
    batch = synthetic_batch([300, 0, 157], seed=4)
    gen = torch.Generator().manual_seed(1)
    pid = torch.randint(0, 60, (batch.x.shape[0],), generator=gen)  # 0 = noise
    pid[batch.cu_seqlens[1] :] += 100  # particles never cross events
    pid[pid == 100] = 0
    label = (batch.coords[:, 2] > 0).long()
    plan = make(batch)
    got, want = pair_recall(plan, pid, label), _reference(plan, pid, label)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    if plan.kind == "full":
        assert got["all"] == 1.0
    else:
        assert got["all"] < 1.0  # random particles span whole events


def test_pair_recall_rejects_a_foreign_plan():
    plan = window_plan(synthetic_batch([50], seed=1), 4)
    with pytest.raises(ValueError, match="plan covers 50 hits but particle_id has 49"):
        pair_recall(plan, torch.ones(49, dtype=torch.long))
