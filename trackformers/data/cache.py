"""Preprocessed cache: featurized events as raw memory-mapped columns, for loaders that must
outrun ROOT decompression.

``build_cache`` streams native files once (validated, selected, featurized with a
FeatureConfig) into ``<cache_dir>/<key>/``: one raw little-endian file per column plus
``manifest.json`` (dtypes, shapes, feature config, source files with size and mtime). The key
hashes the feature config and the sources, so a changed file or config builds a new cache and
a stale one is never read. ``CachedEventStream`` then serves PackedBatches from memory maps,
with the same splits, shuffling and token budget as ``NativeEventStream``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset

from trackformers.data.batch import PackedBatch
from trackformers.data.dataset import SPLITS, _epoch_seed, split_of
from trackformers.data.errors import RepairLog
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import Featurized, featurize, token_budget_batches
from trackformers.data.reader import TARGET_PART_FIELDS, ReadSpec, iter_chunks
from trackformers.data.sharding import check_enough, deal_events, rank_world, worker_slot

CACHE_VERSION = 2  # 2: hits of particles missing from the table are noise
HIT_COLUMNS = ("x", "coords", "particle_id", "weight", "hit_id", "volume_id")


def _config_dict(cfg: FeatureConfig) -> dict:
    d = dataclasses.asdict(cfg)
    if d.get("class_bins") is not None:
        d["class_bins"] = {k: np.asarray(v).tolist() for k, v in d["class_bins"].items()}
    return json.loads(json.dumps(d, default=list))


def cache_key(files: Sequence[str | Path], cfg: FeatureConfig) -> str:
    """Key of the cache of ``files`` featurized with ``cfg``.

    Args:
        files: the source files (path, size and modification time enter the key).
        cfg: the feature configuration.

    Returns:
        16 hex digits; a changed file or config gives another key.
    """
    h = hashlib.sha256()
    h.update(
        json.dumps({"v": CACHE_VERSION, "features": _config_dict(cfg)}, sort_keys=True).encode()
    )
    for f in files:
        st = os.stat(f)
        h.update(f"{Path(f).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_cache(
    files: Sequence[str | Path],
    cfg: FeatureConfig,
    cache_dir: str | Path,
    chunk_bytes: int = 64 * 1024**2,
    on_error: str = "raise",
) -> Path:
    """Featurize ``files`` into a cache directory (reused when already complete).

    Args:
        files: native ROOT files.
        cfg: the feature configuration.
        cache_dir: folder that holds the caches (one sub-folder per :func:`cache_key`).
        chunk_bytes: uncompressed bytes read per chunk.
        on_error: ``raise`` or ``skip`` bad files.

    Returns:
        The cache folder.
    """
    files = [str(f) for f in files]
    out = Path(cache_dir) / cache_key(files, cfg)
    if (out / "manifest.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    spec = ReadSpec(
        hit_fields=cfg.hit_fields(),
        part_fields=TARGET_PART_FIELDS if cfg.needs_particles else ("part_particle_id",),
        chunk_bytes=chunk_bytes,
    )
    handles: dict[str, object] = {}
    meta: dict[str, dict] = {}
    counts: list[np.ndarray] = []
    event_ids: list[np.ndarray] = []
    repairs = RepairLog()

    def append(name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if name not in handles:
            handles[name] = open(tmp / f"{name}.bin", "wb")  # noqa: SIM115 - closed below
            meta[name] = {"dtype": arr.dtype.str, "inner": list(arr.shape[1:]), "rows": 0}
        try:
            handles[name].write(arr.tobytes())
        except OSError as err:  # e.g. EFBIG / ENOSPC, raised without a file name
            raise OSError(err.errno, err.strerror, str(tmp / f"{name}.bin")) from err
        meta[name]["rows"] += len(arr)

    complete = False
    try:
        for chunk in iter_chunks(files, spec, on_error=on_error, repairs=repairs):
            feat = featurize(chunk, cfg)
            if feat.num_events == 0:
                continue
            for name in HIT_COLUMNS:
                if getattr(feat, name) is not None:
                    append(name, getattr(feat, name))
            for name, arr in feat.targets.items():
                append(f"target.{name}", arr)
            counts.append(feat.lengths)
            event_ids.append(feat.event_id)
        complete = True
    finally:
        close_error = None
        for name, fh in handles.items():
            try:
                fh.close()  # flushes the buffer: may fail as a write does
            except OSError as err:
                close_error = close_error or OSError(
                    err.errno, err.strerror, str(tmp / f"{name}.bin")
                )
        if not complete or close_error is not None:  # no half-built cache left behind
            shutil.rmtree(tmp, ignore_errors=True)
        if complete and close_error is not None:
            raise close_error
    lengths = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    np.save(tmp / "hit_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    np.save(tmp / "event_id.npy", np.concatenate(event_ids) if event_ids else np.zeros(0))
    manifest = {
        "version": CACHE_VERSION,
        "features": _config_dict(cfg),
        "columns": meta,
        "sources": [{"path": f, "size": os.stat(f).st_size} for f in files],
        "num_events": int(len(lengths)),
        "num_hits": int(lengths.sum()),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    try:
        os.replace(tmp, out)
    except OSError:  # another process (e.g. a DDP rank) finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "manifest.json").is_file():
            raise
    return out


class CachedEvents:
    """Memory-mapped view of a cache directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        man = json.loads((self.path / "manifest.json").read_text())
        if man.get("version") != CACHE_VERSION:
            raise ValueError(f"{self.path}: cache version {man.get('version')} != {CACHE_VERSION}")
        self.manifest = man
        self.hit_offsets = np.load(self.path / "hit_offsets.npy", mmap_mode="r")
        self.event_id = np.load(self.path / "event_id.npy", mmap_mode="r")
        self.columns = {}
        for name, m in man["columns"].items():
            shape = (m["rows"], *m["inner"])
            if m["rows"] == 0:
                self.columns[name] = np.zeros(shape, dtype=np.dtype(m["dtype"]))
                continue
            self.columns[name] = np.memmap(
                self.path / f"{name}.bin", dtype=np.dtype(m["dtype"]), mode="r", shape=shape
            )

    @property
    def num_events(self) -> int:
        """Number of events in the cache."""
        return len(self.event_id)

    def featurized(self, start: int, stop: int) -> Featurized:
        """Events [start, stop) as a Featurized (memory-map views, no copy yet).

        Args:
            start: first event.
            stop: end of the range.
        """
        a, b = int(self.hit_offsets[start]), int(self.hit_offsets[stop])
        col = lambda n: self.columns[n][a:b] if n in self.columns else None
        return Featurized(
            x=col("x"),
            coords=col("coords"),
            hit_offsets=np.asarray(self.hit_offsets[start : stop + 1]) - a,
            event_id=np.asarray(self.event_id[start:stop]),
            particle_id=col("particle_id"),
            weight=col("weight"),
            hit_id=col("hit_id"),
            volume_id=col("volume_id"),
            targets={
                n.split(".", 1)[1]: self.columns[n][a:b]
                for n in self.columns
                if n.startswith("target.")
            },
        )


class CachedEventStream(IterableDataset):
    """PackedBatches from a cache, split/shuffled/budgeted like NativeEventStream."""

    def __init__(
        self,
        path: str | Path,
        max_tokens: int,
        split: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        events_per_item: int = 256,
        max_events_per_batch: int | None = None,
    ):
        self.path = str(path)
        self.max_tokens = int(max_tokens)
        self.split, self.fractions, self.split_seed = (
            split,
            (val_fraction, test_fraction),
            split_seed,
        )
        self.shuffle, self.seed = shuffle, int(seed)
        self.events_per_item = int(events_per_item)
        self.max_events_per_batch = max_events_per_batch
        self.epoch: int | None = None
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next pass's shuffle.

        Args:
            epoch: the epoch.
        """
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[PackedBatch]:
        data = CachedEvents(self.path)
        rng = None
        if self.shuffle:
            seed = (
                int(np.random.default_rng([self.seed, self.epoch]).integers(2**62))
                if self.epoch is not None
                else _epoch_seed(self.seed, self._passes)
            )
            rng = np.random.default_rng(seed)
        self._passes += 1
        n = data.num_events
        items = [(a, min(a + self.events_per_item, n)) for a in range(0, n, self.events_per_item)]
        order = rng.permutation(len(items)) if rng is not None else np.arange(len(items))
        in_split = np.ones(n, dtype=bool)
        if self.split is not None:
            split = split_of(data.event_id, *self.fractions, self.split_seed)
            in_split = split == SPLITS.index(self.split)
        members = [np.flatnonzero(in_split[items[i][0] : items[i][1]]) for i in order]
        rank, world = rank_world()  # equal shares of the split's events (data/sharding.py)
        check_enough(sum(len(m) for m in members), world, self.split)
        mine = [
            (items[order[k]][0] + s, items[order[k]][0] + e)
            for k, s, e in deal_events(members, rank, world)
        ]
        wid, nw = worker_slot()
        for a, b in mine[wid::nw]:
            feat = data.featurized(a, b)
            keep = np.flatnonzero(in_split[a:b])
            if len(keep) == 0:
                continue
            if rng is not None:
                keep = keep[rng.permutation(len(keep))]
            for idx in token_budget_batches(
                feat.lengths[keep], self.max_tokens, None, self.max_events_per_batch
            ):
                yield feat.pack(keep[idx])
