"""TrackDataModule: event-id splits, seeded shuffling, workers, budgets, the Hydra config."""

from pathlib import Path

import numpy as np
import pytest
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
        stream={"n_train": 12, "n_val": 4, "n_test": 4},
        max_tokens=400,
        features={"targets": ["eta", "q_over_pt"]},
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    epoch0 = sum(_ids(loader), [])
    assert epoch0 == list(range(12))
    dm.datasets["train"].set_epoch(1)
    assert sum(_ids(loader), []) == list(range(12, 24))  # fresh events each epoch
    val, test = sum(_ids(dm.val_dataloader()), []), sum(_ids(dm.test_dataloader()), [])
    assert len(val) == len(test) == 4 and not set(val) & set(test) and not set(val) & set(epoch0)
    for b in dm.val_dataloader():
        assert b.num_hits <= 400 or b.num_events == 1
        assert b.targets["params"].shape == (b.num_hits, 2) and b.targets["valid"].any()
    with pytest.raises(ValueError, match="unknown data.stream keys"):
        TrackDataModule(source="stream", stream={"n_trian": 3}).setup()
