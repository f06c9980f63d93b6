"""TrackDataModule: event-id splits, seeded shuffling, workers, budgets, the Hydra config."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trackformers.data.batch import PackedBatch
from trackformers.data.datamodule import TrackDataModule
from trackformers.data.dataset import EventListDataset, PackCollate, split_of
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import TokenBudgetBatchSampler
from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events

CONF = Path(__file__).resolve().parents[1] / "conf" / "data" / "demo.yaml"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    for i in range(3):
        write_events(d / f"shard_{i:05d}.root", helix_events(40, seed=i, first_id=1000 * i), {})
    return d


def _ids(loader):
    return [b.event_id.tolist() for b in loader]


def _dm(path, **kw):
    kw.setdefault("features", {"features": ["x", "y", "z", "r"], "targets": ["eta", "q_over_pt"]})
    kw.setdefault("chunk_bytes", 30_000)
    return TrackDataModule(path=str(path), max_tokens=2500, **kw)


def test_splits_disjoint_and_complete(dataset_dir):
    dm = _dm(dataset_dir, val_fraction=0.2, test_fraction=0.1)
    dm.setup("fit")
    got = {
        s: np.concatenate(_ids(getattr(dm, f"{s}_dataloader")())) for s in ("train", "val", "test")
    }
    sets = {s: set(v.tolist()) for s, v in got.items()}
    assert all(len(sets[s]) == len(got[s]) for s in sets)  # no event twice in a split
    assert not (
        sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"]
    )
    everything = {1000 * i + j for i in range(3) for j in range(40)}
    assert sets["train"] | sets["val"] | sets["test"] == everything
    assert 0.1 < len(sets["val"]) / 120 < 0.3 and 0.03 < len(sets["test"]) / 120 < 0.2
    # the split is a function of the event id alone
    ids = np.array(sorted(everything), dtype=np.uint64)
    split = split_of(ids, 0.2, 0.1)
    assert {int(i) for i in ids[split == 1]} == sets["val"]


def test_batches_respect_budget_and_content(dataset_dir):
    dm = _dm(dataset_dir)
    dm.setup("fit")
    for b in dm.train_dataloader():
        assert isinstance(b, PackedBatch)
        lens = b.cu_seqlens.diff()
        assert b.num_hits <= 2500 or b.num_events == 1
        assert b.max_seqlen == int(lens.max())
        assert b.x.shape == (b.num_hits, 4) and b.targets["params"].shape == (b.num_hits, 2)
    assert dm.num_features == 4 and dm.num_params == 2
    pinned = _dm(dataset_dir, pin_memory=True, num_workers=2)
    loader = pinned.train_dataloader()
    assert loader.pin_memory and loader.num_workers == 2 and loader.batch_size is None
    assert hasattr(PackedBatch, "pin_memory")  # what the DataLoader's pin thread calls


@pytest.mark.parametrize("workers", [0, 2])
def test_seeded_shuffle_changes_per_epoch(dataset_dir, workers):
    dm = _dm(dataset_dir, num_workers=workers, seed=3, chunk_bytes=100_000)
    dm.setup("fit")
    loader = dm.train_dataloader()
    e1, e2 = _ids(loader), _ids(loader)
    assert e1 != e2  # a new order every epoch
    assert sorted(sum(e1, [])) == sorted(sum(e2, []))  # same events, each once
    again = _dm(dataset_dir, num_workers=workers, seed=3, chunk_bytes=100_000)
    assert _ids(again.train_dataloader()) == e1  # reproducible from the seed
    if workers == 0:
        other = _dm(dataset_dir, seed=4, chunk_bytes=100_000).train_dataloader()
        assert _ids(other) != e1
        val = _dm(dataset_dir).val_dataloader()
        assert _ids(val) == _ids(val)  # evaluation order is fixed
    else:  # workers together see exactly the events a single process sees
        single = _dm(dataset_dir, chunk_bytes=100_000).train_dataloader()
        assert sorted(sum(_ids(single), [])) == sorted(sum(e1, []))


def test_demo_config_instantiates(dataset_dir):
    cfg = OmegaConf.load(CONF)
    cfg.path = str(dataset_dir)
    dm = instantiate(cfg)
    assert isinstance(dm, TrackDataModule)
    dm.setup("fit")
    assert dm.num_classes == cfg.num_classes == 64
    b = next(iter(dm.train_dataloader()))
    cls = b.targets["class"]
    assert cls.min() >= -1 and cls.max() < 64
    assert (cls[~b.targets["valid"]] == -1).all()
    cfg.num_features = 5
    with pytest.raises(Exception, match="num_features=5 but features.features lists 3"):
        instantiate(cfg)


def test_in_memory_sampler_and_collate():
    events = helix_events(12, seed=4)
    ds = EventListDataset(events)
    sampler = TokenBudgetBatchSampler(ds.lengths, max_tokens=700, shuffle=True, seed=1)
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=PackCollate(FeatureConfig()))
    seen = []
    for b in loader:
        assert b.num_hits <= 700 or b.num_events == 1
        seen += b.event_id.tolist()
    assert sorted(seen) == list(range(12))


def test_stream_source_fresh_events_disjoint_splits():
    dm = TrackDataModule(
        source="stream",
        stream={"n_train": 4, "n_val": 2, "n_test": 1},
        max_tokens=250,
        features={"targets": ["eta", "q_over_pt"]},
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    epoch0 = _ids(loader)
    assert sum(epoch0, []) == list(range(4)) and len(epoch0) >= 2  # ~100-hit gun events
    dm.datasets["train"].set_epoch(1)
    assert sum(_ids(loader), []) == list(range(4, 8))  # fresh events each epoch
    val_batches = list(dm.val_dataloader())
    val = [int(e) for b in val_batches for e in b.event_id]
    test = sum(_ids(dm.test_dataloader()), [])
    assert len(val) == 2 and len(test) == 1 and not set(val) & set(test) and min(val) >= 8
    for b in val_batches:
        assert b.num_hits <= 250 or b.num_events == 1
        assert b.targets["params"].shape == (b.num_hits, 2) and b.targets["valid"].any()
    with pytest.raises(ValueError, match="unknown data.stream keys"):
        TrackDataModule(source="stream", stream={"n_trian": 3}).setup()


def test_cache_gives_the_same_batches(dataset_dir, tmp_path):
    native = _dm(dataset_dir)
    cached = _dm(dataset_dir, cache_dir=str(tmp_path / "cache"))
    for split in ("val", "test", "train"):
        a = {int(e): None for b in getattr(native, f"{split}_dataloader")() for e in b.event_id}
        b_batches = list(getattr(cached, f"{split}_dataloader")())
        assert sorted(a) == sorted(int(e) for b in b_batches for e in b.event_id)
    nb = list(native.val_dataloader())
    cb = list(cached.val_dataloader())
    x_native = {
        int(e): b.x[b.cu_seqlens[i] : b.cu_seqlens[i + 1]]
        for b in nb
        for i, e in enumerate(b.event_id)
    }
    for b in cb:
        assert b.num_hits <= 2500 or b.num_events == 1
        for i, e in enumerate(b.event_id):
            x = b.x[b.cu_seqlens[i] : b.cu_seqlens[i + 1]]
            assert torch.equal(x, x_native[int(e)])
            t = b.targets["params"][b.cu_seqlens[i] : b.cu_seqlens[i + 1]]
            assert t.shape == (len(x), 2)
    # reused, not rebuilt; a changed feature config gets its own cache
    dirs = list((tmp_path / "cache").iterdir())
    _dm(dataset_dir, cache_dir=str(tmp_path / "cache")).setup()
    assert list((tmp_path / "cache").iterdir()) == dirs
    _dm(dataset_dir, cache_dir=str(tmp_path / "cache"), features={"features": ["x"]}).setup()
    assert len(list((tmp_path / "cache").iterdir())) == 2
