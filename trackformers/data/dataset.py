"""Torch datasets over events: a streaming one over native ROOT files and an in-memory one.

``NativeEventStream`` (IterableDataset) yields ready PackedBatches. Its work items are entry
ranges of the files (about ``chunk_bytes`` of requested branches each); every epoch the items
are shuffled with a seed that depends on the epoch, shared out among DDP ranks at event
granularity (equal event counts, data/sharding.py) and round-robin among DataLoader workers,
read, validated, restricted to the split, featurized, shuffled inside the chunk and packed by
token budget. Memory is bounded by the chunk size, not the dataset size.

``EventListDataset`` (map-style) holds per-event dicts; with ``TokenBudgetBatchSampler`` and
``PackCollate`` it gives the same batches from events already in memory (e.g. generated on
the fly).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from trackformers.data.augment import AugmentConfig, augment_chunk
from trackformers.data.batch import PackedBatch
from trackformers.data.errors import DataError, RepairLog, check_on_error, log
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import featurize, pack_events, token_budget_batches
from trackformers.data.reader import (
    DEFAULT_CHUNK_BYTES,
    TARGET_PART_FIELDS,
    ReadSpec,
    check_branches,
    check_complete,
    entry_ranges,
    open_tree,
    read_chunk,
)
from trackformers.data.sharding import check_enough, deal_events, rank_world, worker_slot
from trackformers.data.validate import validate_chunk

SPLITS = ("train", "val", "test")


def split_of(
    event_id: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0
) -> np.ndarray:
    """(n,) int8 split of each event: 0 train, 1 val, 2 test — a hash of (event id, seed).

    Depends only on the event id, never on file layout or reading order, so an event is in
    exactly one split whatever the files, chunking or workers.

    Args:
        event_id: (n,) event ids.
        val_fraction: share of events in validation.
        test_fraction: share of events in test.
        seed: seed of the split.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions val={val_fraction} test={test_fraction}")
    h = np.asarray(event_id).astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    with np.errstate(over="ignore"):  # splitmix64 finaliser
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)  # uniform [0, 1)
    out = np.zeros(len(u), dtype=np.int8)
    out[u < val_fraction + test_fraction] = 2
    out[u < val_fraction] = 1
    return out


def _epoch_seed(base_seed: int, counter: int) -> int:
    """Seed for this pass: from the DataLoader's per-epoch worker seed when in a worker."""
    info = get_worker_info()
    if info is not None:
        return int((info.seed - info.id) % 2**63)  # same in every worker of this epoch
    return int(np.random.default_rng([base_seed, counter]).integers(2**62))


class NativeEventStream(IterableDataset):
    """Packed batches streamed from native ROOT files (see the module docstring)."""

    def __init__(
        self,
        files: Sequence[str | Path],
        features: FeatureConfig,
        max_tokens: int,
        split: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        on_error: str = "raise",
        max_events_per_batch: int | None = None,
        augment: AugmentConfig | None = None,
    ):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.files = [str(f) for f in files]
        self.features = features
        self.max_tokens = int(max_tokens)
        self.split = split
        self.fractions = (float(val_fraction), float(test_fraction))
        self.split_seed = int(split_seed)
        self.shuffle, self.seed = shuffle, int(seed)
        self.on_error = check_on_error(on_error)
        self.max_events_per_batch = max_events_per_batch
        self.augment = augment  # rotation / reflection of each event (training), data/augment.py
        self.spec = ReadSpec(
            hit_fields=features.hit_fields(),
            part_fields=TARGET_PART_FIELDS if features.needs_particles else ("part_particle_id",),
            chunk_bytes=int(chunk_bytes),
        )
        self.repairs = RepairLog()
        self._items: list[tuple[str, int, int]] | None = None
        self._members: list[np.ndarray] | None = None  # per item: offsets of the split's events
        self._passes = 0
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Fix the shuffling seed to (seed, epoch) instead of the per-pass default.

        Args:
            epoch: the epoch.
        """
        self.epoch = int(epoch)

    def plan(self) -> list[tuple[str, int, int]]:
        """(file, entry_start, entry_stop) work items; files failing to open obey on_error.

        Also notes, per item, which entries hold events of the split (from the event ids), so
        that DDP ranks can be given equal shares of the split's events."""
        if self._items is None:
            items, members = [], []
            for path in self.files:
                try:
                    tree = open_tree(path)
                    try:
                        check_branches(tree, self.spec.branches, path)
                        check_complete(tree, self.spec.branches, path)
                        ranges = entry_ranges(tree, self.spec.branches, self.spec.chunk_bytes)
                        in_split = self._in_split(tree, path)
                    finally:
                        tree.file.close()
                    items += [(path, a, b) for a, b in ranges]
                    members += [np.flatnonzero(in_split[a:b]) for a, b in ranges]
                except (DataError, FileNotFoundError) as err:
                    if self.on_error == "raise":
                        raise
                    log.error("skipping %s: %s", path, err)
                    self.repairs.add(path, "skipped_files", 1, note=str(err))
                    self.repairs.flush(path)
            self._items, self._members = items, members
        return self._items

    def _in_split(self, tree, path: str) -> np.ndarray:
        """(entries,) bool: the file's events that belong to this stream's split."""
        n = int(tree.num_entries)
        if self.split is None:
            return np.ones(n, dtype=bool)
        try:
            ids = np.asarray(tree["event_id"].array(library="np"))
        except Exception as err:  # uproot raises many types for damaged branches
            raise DataError(f"{path}: cannot read branch event_id ({err})") from err
        split = split_of(ids, *self.fractions, self.split_seed)
        return split == SPLITS.index(self.split)

    def _my_items(self, rng: np.random.Generator | None) -> list[tuple[str, int, int]]:
        """This process's entry ranges of the pass: its rank's equal share of the split's
        events (data/sharding.py), dealt round-robin to the DataLoader workers."""
        items = self.plan()
        order = rng.permutation(len(items)) if rng is not None else np.arange(len(items))
        members = [self._members[i] for i in order]
        rank, world = rank_world()
        check_enough(sum(len(m) for m in members), world, self.split)
        mine = [
            (items[order[k]][0], items[order[k]][1] + s, items[order[k]][1] + e)
            for k, s, e in deal_events(members, rank, world)
        ]
        wid, nw = worker_slot()
        return mine[wid::nw]

    def __iter__(self) -> Iterator[PackedBatch]:
        if self.shuffle:
            seed = (
                int(np.random.default_rng([self.seed, self.epoch]).integers(2**62))
                if self.epoch is not None
                else _epoch_seed(self.seed, self._passes)
            )
            rng = np.random.default_rng(seed)
        else:
            rng = None
        aug_epoch = self.epoch if self.epoch is not None else self._passes
        self._passes += 1
        trees: dict[str, object] = {}
        current = None
        for path, a, b in self._my_items(rng):
            if current is not None and path != current:
                self.repairs.flush(current)
                old = trees.pop(current, None)
                if old is not None:
                    old.file.close()
            current = path
            try:
                if path not in trees:
                    trees[path] = open_tree(path)
                chunk = read_chunk(
                    trees[path],
                    path,
                    self.spec.hit_fields,
                    self.spec.part_fields,
                    a,
                    b,
                    self.spec.event_fields,
                    self.repairs,
                )
                chunk = validate_chunk(chunk, self.repairs)
            except (DataError, FileNotFoundError) as err:
                if self.on_error == "raise":
                    raise
                log.error("skipping %s entries %d..%d: %s", path, a, b, err)
                self.repairs.add(path, "skipped_chunks", 1, note=str(err))
                continue
            if self.split is not None:
                keep = split_of(chunk.event_ids, *self.fractions, self.split_seed)
                chunk = chunk.select_events(keep == SPLITS.index(self.split))
            if chunk.num_events == 0:
                continue
            if self.augment is not None:
                chunk = augment_chunk(chunk, self.augment, self.seed, aug_epoch)
            feat = featurize(chunk, self.features)
            if feat.num_events == 0:
                continue
            order = rng.permutation(feat.num_events) if rng is not None else None
            for idx in token_budget_batches(
                feat.lengths, self.max_tokens, order, self.max_events_per_batch
            ):
                yield feat.pack(idx)
        if current is not None:
            self.repairs.flush(current)
        for tree in trees.values():
            tree.file.close()


class EventListDataset(Dataset):
    """Map-style dataset of in-memory events (per-event dicts keyed by schema names)."""

    def __init__(self, events: Sequence[dict]):
        self.events = list(events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int) -> dict:
        return self.events[i]

    @property
    def lengths(self) -> np.ndarray:
        """(n_events,) int64 hits per event."""
        return np.array([len(e["hit_x"]) for e in self.events], dtype=np.int64)


class PackCollate:
    """collate_fn: a list of per-event dicts -> one PackedBatch (picklable for workers)."""

    def __init__(self, features: FeatureConfig):
        self.features = features

    def __call__(self, events: list[dict]) -> PackedBatch:
        return pack_events(events, self.features)
