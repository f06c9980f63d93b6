"""Events -> packed varlen batches (PackedBatch), token-budget batching and the padded path.

feat = featurize(chunk, cfg)                       # selection, features, targets (numpy)
for idx in token_budget_batches(feat.lengths, max_tokens=40_000, order=perm):
    batch = feat.pack(idx)                         # PackedBatch of those events
batch = pack_events(list_of_event_dicts, cfg)      # the same from in-memory events
padded, mask = pad_packed(batch.x, batch.cu_seqlens)   # (B, L, F), (B, L) where needed
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from trackformers.data.batch import PackedBatch
from trackformers.data.chunk import EventChunk, counts_to_offsets, gather_rows
from trackformers.data.errors import RepairLog
from trackformers.data.features import FeatureConfig, hit_features, hit_targets, select_hits
from trackformers.data.sharding import check_enough, rank_world, run_bounds
from trackformers.data.validate import validate_chunk


@dataclass
class Featurized:
    """A chunk turned into model inputs; event i owns rows hit_offsets[i]:hit_offsets[i+1]."""

    x: np.ndarray  # (N, F) float32
    coords: np.ndarray  # (N, 3) float32 mm
    hit_offsets: np.ndarray  # (n+1,) int64
    event_id: np.ndarray  # (n,) int64
    particle_id: np.ndarray | None = None  # (N,) int64, 0 = noise
    weight: np.ndarray | None = None  # (N,) float32
    hit_id: np.ndarray | None = None  # (N,) int64
    volume_id: np.ndarray | None = None  # (N,) int32
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # per-hit, first dim N

    @property
    def num_events(self) -> int:
        """Number of events."""
        return len(self.hit_offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(num_events,) hits per event."""
        return np.diff(self.hit_offsets)

    def pack(self, events: np.ndarray | Sequence[int] | None = None) -> PackedBatch:
        """PackedBatch of the given events (indices into this chunk, in that order).

        Args:
            events: event indices (None: all, in order).
        """
        if events is None:
            idx = np.arange(self.num_events)
        else:
            idx = np.asarray(events, dtype=np.int64)
        lens = self.lengths[idx]
        contiguous = len(idx) > 0 and (np.diff(idx) == 1).all()
        if contiguous:
            sl = slice(int(self.hit_offsets[idx[0]]), int(self.hit_offsets[idx[-1] + 1]))
            take = lambda a: a[sl]
        else:
            rows = gather_rows(self.hit_offsets, idx)
            take = lambda a: np.take(a, rows, axis=0)

        def t(a):
            if a is None:
                return None
            v = np.ascontiguousarray(take(a))
            if not v.flags.writeable or isinstance(v, np.memmap):  # e.g. a read-only cache map
                v = np.array(v)
            return torch.from_numpy(v)

        cu = torch.from_numpy(counts_to_offsets(lens).astype(np.int32))  # (B+1,)
        return PackedBatch(
            x=t(self.x),  # (total_hits, F)
            cu_seqlens=cu,
            max_seqlen=int(lens.max()) if len(lens) else 0,
            coords=t(self.coords),  # (total_hits, 3)
            particle_id=t(self.particle_id),
            weight=t(self.weight),
            hit_id=t(self.hit_id),
            volume_id=t(self.volume_id),
            event_id=torch.from_numpy(self.event_id[idx].copy()),  # (B,)
            targets={k: t(v) for k, v in self.targets.items()},
        )


def _as_int64(a: np.ndarray) -> np.ndarray:
    """uint64 ids as int64 bit patterns (keeps 0 = noise and uniqueness)."""
    return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64, copy=False)


def featurize(chunk: EventChunk, cfg: FeatureConfig) -> Featurized:
    """Selection, features and (when configured) targets of a validated chunk.

    Args:
        chunk: validated events.
        cfg: the feature configuration.

    Returns:
        Features, targets and hit ids of the selected hits, per event.
    """
    chunk = select_hits(chunk, cfg)
    h = chunk.hits
    coords = np.stack([h["hit_x"], h["hit_y"], h["hit_z"]], axis=1).astype(np.float32, copy=False)
    feat = Featurized(
        x=hit_features(h, cfg),
        coords=coords,
        hit_offsets=chunk.hit_offsets,
        event_id=_as_int64(chunk.event["event_id"]),
        particle_id=_as_int64(h["hit_particle_id"]) if "hit_particle_id" in h else None,
        weight=h.get("hit_weight"),
        hit_id=_as_int64(h["hit_id"]) if "hit_id" in h else None,
        volume_id=h.get("hit_volume_id"),
    )
    if cfg.needs_particles:
        feat.targets = hit_targets(chunk, cfg)
    return feat


def pack_events(
    events: Sequence[dict] | EventChunk, cfg: FeatureConfig | None = None, validate: bool = True
) -> PackedBatch:
    """Pack in-memory events (per-event dicts keyed by schema names) into one PackedBatch.

    With ``validate`` the events get the reader's checks and counted repairs first.

    Args:
        events: per-event dicts or a chunk.
        cfg: the feature configuration (None: the defaults).
        validate: apply the reader's checks and repairs.

    Returns:
        One PackedBatch of every event.
    """
    cfg = cfg or FeatureConfig()
    chunk = events if isinstance(events, EventChunk) else EventChunk.from_events(list(events))
    if validate:
        repairs = RepairLog()
        chunk = validate_chunk(chunk, repairs)
        repairs.flush()
    return featurize(chunk, cfg).pack()


def token_budget_batches(
    lengths: np.ndarray,
    max_tokens: int,
    order: np.ndarray | None = None,
    max_events: int | None = None,
) -> list[np.ndarray]:
    """Greedy batches of event indices (in ``order``) with at most ``max_tokens`` hits each.

    An event longer than ``max_tokens`` forms a batch of its own (never split, never dropped).

    Args:
        lengths: (n,) hits per event.
        max_tokens: hit budget per batch.
        order: event order (None: 0..n-1).
        max_events: events per batch at most (None: no limit).

    Returns:
        Index arrays, one per batch.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.arange(len(lengths)) if order is None else np.asarray(order, dtype=np.int64)
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    lens = lengths[order]
    for i, n in enumerate(lens.tolist()):
        full = tokens + n > max_tokens or (max_events is not None and i - start >= max_events)
        if i > start and full:
            batches.append(order[start:i])
            start, tokens = i, 0
        tokens += n
    if start < len(order):
        batches.append(order[start:])
    return batches


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batch sampler for map-style event datasets: batches of at most ``max_tokens`` hits.

    ``lengths[i]`` is the hit count of dataset item i. With ``shuffle`` the order is a seeded
    permutation that changes with :meth:`set_epoch` (Lightning calls it every epoch). Under
    DDP each rank batches only its own run of that order (``num_replicas`` runs whose sizes
    differ by at most one, as data/sharding.py deals streamed events): no event on two ranks.
    Give ``use_distributed_sampler=False`` to the Trainer (conf/trainer/ddp.yaml does).

    Args:
        num_replicas: number of ranks (None: the process group's world size when iterated).
        rank: this rank (None: the process group's rank when iterated).
    """

    def __init__(
        self,
        lengths,
        max_tokens: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        max_events: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens = int(max_tokens)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.max_events = max_events
        self.num_replicas, self.rank = num_replicas, rank
        if num_replicas is not None or rank is not None:
            run_bounds(0, int(rank or 0), int(num_replicas or 1))  # checks 0 <= rank < replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the next pass's shuffle.

        Args:
            epoch: the epoch.
        """
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        order = np.arange(len(self.lengths))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths))
        rank, world = rank_world()
        rank = rank if self.rank is None else int(self.rank)
        world = world if self.num_replicas is None else int(self.num_replicas)
        check_enough(len(order), world, None)
        lo, hi = run_bounds(len(order), rank, world)
        batches = token_budget_batches(self.lengths, self.max_tokens, order[lo:hi], self.max_events)
        if self.drop_last and len(batches) > 1:
            batches = batches[:-1]  # the last batch is the one that may be under-filled
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._batches())


def pad_packed(
    values: Tensor, cu_seqlens: Tensor, max_seqlen: int | None = None, pad_value: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Packed (N, ...) -> padded (B, L, ...) and mask (B, L) bool (True = real hit).

    Args:
        values: (N, ...) packed values.
        cu_seqlens: (B+1,) event boundaries.
        max_seqlen: L (None: the longest event).
        pad_value: value of the padding.
    """
    lengths = cu_seqlens.diff().long()  # (B,)
    B = lengths.numel()
    L = int(max_seqlen) if max_seqlen is not None else int(lengths.max().item()) if B else 0
    pos = torch.arange(L, device=values.device)  # (L,)
    mask = pos[None, :] < lengths[:, None]  # (B, L)
    padded = values.new_full((B, L, *values.shape[1:]), pad_value)  # (B, L, ...)
    padded[mask] = values
    return padded, mask


def unpad(padded: Tensor, mask: Tensor) -> Tensor:
    """Padded (B, L, ...) and its mask (B, L) -> packed (N, ...) in event order.

    Args:
        padded: (B, L, ...) values.
        mask: (B, L) bool, True on real hits.
    """
    return padded[mask]
