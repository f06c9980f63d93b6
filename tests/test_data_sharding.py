"""DDP shares of the events: every loader path (ROOT stream, cache, simulated stream, map-style
batch sampler) gives each rank its own events, all of them together, in equal numbers (within
one) — also when the validation events all sit in one file of two, which dealt whole chunks
left one rank without any (and the DDP run dead in a mismatched collective)."""

import numpy as np
import pytest

import trackformers.data.cache as cache_mod
import trackformers.data.dataset as dataset_mod
import trackformers.sim.stream as stream_mod
from trackformers.data.cache import CachedEventStream, build_cache
from trackformers.data.dataset import NativeEventStream, split_of
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import TokenBudgetBatchSampler
from trackformers.data.sharding import check_enough, deal_events
from trackformers.data.synthetic import helix_event
from trackformers.sim.stream import SimulatedEventStream
from trackformers.sim.writer import write_events

FRACTIONS = (0.2, 0.1)


def check_shares(shares, everything):
    """Disjoint, complete, balanced."""
    flat = [i for s in shares for i in s]
    assert len(flat) == len(set(flat)) and set(flat) == set(everything)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1, sizes


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_deal_events_spans(world):
    rng = np.random.default_rng(world)
    members = [np.sort(rng.choice(20, rng.integers(0, 8), replace=False)) for _ in range(9)]
    shares = []
    for rank in range(world):
        share = []
        for k, start, stop in deal_events(members, rank, world):
            m = members[k]
            inside = m[(m >= start) & (m < stop)]
            assert len(inside) and inside[0] == start and inside[-1] == stop - 1  # tight spans
            share += [(k, int(i)) for i in inside]
        shares.append(share)
    check_shares(shares, [(k, int(i)) for k, m in enumerate(members) for i in m])
    assert [s for r in range(world) for s in shares[r]] == sorted(sum(shares, []))  # in order
    with pytest.raises(ValueError, match="rank"):
        deal_events(members, world, world)


def test_too_few_events_for_the_ranks_is_an_error():
    check_enough(3, 3, "val")
    check_enough(0, 1, "val")  # one process: an empty split is not this check's business
    with pytest.raises(ValueError, match="val split has 2 event.*3 DDP ranks"):
        check_enough(2, 3, "val")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """a.root: the validation events and some training events; b.root: training events."""
    d = tmp_path_factory.mktemp("shard_files")
    ids = np.arange(600)
    split = split_of(ids, *FRACTIONS)
    val, train = ids[split == 1][:7], ids[split == 0][:40]
    rng = np.random.default_rng(0)
    make = lambda sel: [helix_event(rng, int(i), n_particles=4) for i in sel]  # noqa: E731
    write_events(d / "a.root", make([*val, *train[:15]]), {"test": True})
    write_events(d / "b.root", make(train[15:]), {"test": True})
    return [d / "a.root", d / "b.root"], {int(i) for i in val}, {int(i) for i in train}


def shares_of(make, module, monkeypatch, world, epoch=None):
    shares = []
    for rank in range(world):
        monkeypatch.setattr(module, "rank_world", lambda rank=rank: (rank, world))
        ds = make()
        if epoch is not None:
            ds.set_epoch(epoch)
        shares.append([i for b in ds for i in b.event_id.tolist()])
    return shares


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("chunk_bytes", [10**9, 3000])  # one chunk per file / many
def test_root_stream_shares(files, monkeypatch, world, chunk_bytes):
    paths, val, train = files
    for split, ids, shuffle in (("val", val, False), ("train", train, True)):

        def make(split=split, shuffle=shuffle):
            return NativeEventStream(
                paths,
                FeatureConfig(),
                max_tokens=500,
                split=split,
                val_fraction=FRACTIONS[0],
                test_fraction=FRACTIONS[1],
                shuffle=shuffle,
                seed=1,
                chunk_bytes=chunk_bytes,
            )

        shares = shares_of(make, dataset_mod, monkeypatch, world, epoch=2 if shuffle else None)
        check_shares(shares, ids)


@pytest.mark.parametrize("world", [2, 3])
def test_cache_stream_shares(files, monkeypatch, tmp_path, world):
    paths, val, train = files
    path = build_cache(paths, FeatureConfig(), tmp_path)
    for split, ids, shuffle in (("val", val, False), ("train", train, True)):

        def make(split=split, shuffle=shuffle):
            return CachedEventStream(
                path,
                max_tokens=500,
                split=split,
                val_fraction=FRACTIONS[0],
                test_fraction=FRACTIONS[1],
                shuffle=shuffle,
                seed=1,
                events_per_item=8,
            )

        check_shares(shares_of(make, cache_mod, monkeypatch, world, epoch=1), ids)


def test_too_few_validation_events_for_the_ranks(files, monkeypatch):
    paths, val, _ = files
    monkeypatch.setattr(dataset_mod, "rank_world", lambda: (0, len(val) + 1))
    ds = NativeEventStream(
        paths,
        FeatureConfig(),
        max_tokens=500,
        split="val",
        val_fraction=FRACTIONS[0],
        test_fraction=FRACTIONS[1],
    )
    with pytest.raises(ValueError, match=f"val split has {len(val)} event"):
        list(ds)


def test_simulated_stream_shares(monkeypatch):
    settings = {
        "process": {"name": "gun", "n_particles": [2, 3], "pt": [1.0, 5.0], "eta": [-2.0, 2.0]},
        "seed": 3,
        "pileup": 0,
    }
    shares = []
    for rank in range(2):
        monkeypatch.setattr(stream_mod, "rank_world", lambda rank=rank: (rank, 2))
        ds = SimulatedEventStream(settings, n_events=5)
        ds.set_epoch(1)
        shares.append([int(e["event_id"]) for e in ds])
        assert len(ds) == len(shares[-1])
    check_shares(shares, range(5, 10))  # epoch 1: events 5..9


def test_batch_sampler_shares():
    lengths = np.random.default_rng(0).integers(10, 100, 23)
    for shuffle in (False, True):
        shares = []
        for rank in range(3):
            s = TokenBudgetBatchSampler(
                lengths, 150, shuffle=shuffle, seed=4, num_replicas=3, rank=rank
            )
            s.set_epoch(2)
            batches = list(s)
            assert len(s) == len(batches)
            assert all(lengths[b].sum() <= 150 or len(b) == 1 for b in batches)
            shares.append([i for b in batches for i in b])
        check_shares(shares, range(23))
    with pytest.raises(ValueError, match="rank"):
        TokenBudgetBatchSampler(lengths, 150, num_replicas=2, rank=2)
