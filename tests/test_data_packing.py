"""Packing events into varlen batches, token budgets, the batch sampler and the padded path."""

import numpy as np
import pytest
import torch

from trackformers.data.features import FeatureConfig
from trackformers.data.packing import (
    TokenBudgetBatchSampler,
    pack_events,
    pad_packed,
    token_budget_batches,
    unpad,
)
from trackformers.data.synthetic import helix_events


@pytest.fixture(scope="module")
def events():
    return helix_events(6, seed=5)


def test_pack_events_layout(events):
    cfg = FeatureConfig(features=("x", "y", "z", "r"), scales={"x": 1.0, "y": 1.0, "z": 1.0})
    batch = pack_events(events, cfg)
    lens = [len(e["hit_x"]) for e in events]
    assert batch.cu_seqlens.dtype == torch.int32
    assert batch.cu_seqlens.tolist() == np.concatenate([[0], np.cumsum(lens)]).tolist()
    assert batch.max_seqlen == max(lens) and batch.num_events == len(events)
    assert batch.x.shape == (sum(lens), 4) and batch.x.dtype == torch.float32
    e3 = events[3]
    rows = slice(sum(lens[:3]), sum(lens[:4]))
    np.testing.assert_allclose(batch.x[rows, 0].numpy(), e3["hit_x"])
    np.testing.assert_allclose(
        batch.x[rows, 3].numpy(), np.hypot(e3["hit_x"], e3["hit_y"]) / 1000, rtol=1e-6
    )
    np.testing.assert_array_equal(batch.particle_id[rows].numpy(), e3["hit_particle_id"])
    np.testing.assert_array_equal(batch.hit_id[rows].numpy(), e3["hit_id"])
    np.testing.assert_array_equal(batch.event_id.numpy(), [e["event_id"] for e in events])
    np.testing.assert_allclose(batch.coords[rows].numpy()[:, 2], e3["hit_z"])
    assert batch.seq_index()[rows].eq(3).all()


def test_token_budget_batches():
    lengths = np.array([5, 5, 5, 12, 3, 3, 8])
    batches = token_budget_batches(lengths, max_tokens=10)
    assert [b.tolist() for b in batches] == [[0, 1], [2], [3], [4, 5], [6]]
    assert all(lengths[b].sum() <= 10 or len(b) == 1 for b in batches)
    order = np.array([6, 5, 4, 3, 2, 1, 0])
    batches = token_budget_batches(lengths, 10, order=order)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))  # nothing lost
    assert [b.tolist() for b in token_budget_batches(lengths, 100, max_events=3)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6],
    ]
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches(lengths, 0)


def test_sampler_seeded_and_epoch_dependent():
    lengths = np.random.default_rng(0).integers(1, 50, 200)
    s = TokenBudgetBatchSampler(lengths, max_tokens=300, shuffle=True, seed=7)
    first = list(s)
    assert list(TokenBudgetBatchSampler(lengths, 300, shuffle=True, seed=7)) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(200))
        assert all(lengths[b].sum() <= 300 for b in batches)
    assert len(s) == len(second)


def test_pad_round_trip(events):
    batch = pack_events(events)
    padded, mask = pad_packed(batch.x, batch.cu_seqlens)
    assert padded.shape == (len(events), batch.max_seqlen, 3)
    assert mask.sum().item() == batch.num_hits
    assert torch.equal(
        padded[2, : mask[2].sum()], batch.x[batch.cu_seqlens[2] : batch.cu_seqlens[3]]
    )
    assert padded[~mask].abs().sum() == 0
    assert torch.equal(unpad(padded, mask), batch.x)
