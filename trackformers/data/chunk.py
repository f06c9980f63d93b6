"""EventChunk: a run of events held column-wise (flat hit and particle arrays plus offsets).

This is the working representation between the reader, validation, features and packing:
vectorised numpy over a whole chunk instead of a Python loop over events. It converts to and
from the in-memory event of COMMON.md (``dict[str, np.ndarray]`` keyed by schema names) and to
awkward arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from trackformers.data.schema import (
    CLUSTER_BRANCHES,
    EVENT_BRANCHES,
    HIT_BRANCHES,
    PARTICLE_BRANCHES,
)

# per-hit branches an in-memory event may carry (the cluster summary is optional)
_HIT_KEYS = {**HIT_BRANCHES, **CLUSTER_BRANCHES}


def counts_to_offsets(counts: np.ndarray) -> np.ndarray:
    """Offsets [0, c0, c0 + c1, ...] of consecutive segments.

    Args:
        counts: (n,) rows per segment.

    Returns:
        (n + 1,) int64 offsets.
    """
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def segment_ids(offsets: np.ndarray) -> np.ndarray:
    """(total,) int64 index of the segment (event) that owns each flat row.

    Args:
        offsets: (n + 1,) segment offsets.
    """
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


@dataclass
class EventChunk:
    """``n`` events; hits of event i are rows ``hit_offsets[i]:hit_offsets[i+1]`` of ``hits``."""

    event: dict[str, np.ndarray]  # scalar branches, each (n,)
    hit_offsets: np.ndarray  # (n+1,) int64
    hits: dict[str, np.ndarray]  # hit_* branches, each (total_hits,)
    part_offsets: np.ndarray | None = None  # (n+1,) int64, None when particles not read
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # part_* branches (total_parts,)
    source: str = "<memory>"  # file the chunk came from (for error messages)
    hit_part_row: np.ndarray | None = None  # (total_hits,) cached flat particle row, -1 none

    @property
    def num_events(self) -> int:
        """Number of events in the chunk."""
        return len(self.hit_offsets) - 1

    @property
    def num_hits(self) -> int:
        """Number of hits of all events."""
        return int(self.hit_offsets[-1])

    @property
    def hit_counts(self) -> np.ndarray:
        """(num_events,) hits per event."""
        return np.diff(self.hit_offsets)

    @property
    def event_ids(self) -> np.ndarray:
        """(num_events,) event id of each event."""
        return self.event["event_id"]

    def hit_event_index(self) -> np.ndarray:
        """(num_hits,) int64 index of the event of each hit."""
        return segment_ids(self.hit_offsets)

    def select_hits(self, keep: np.ndarray) -> EventChunk:
        """Keep hits where ``keep`` (total_hits,) bool is true; events and particles stay.

        Args:
            keep: (total_hits,) bool.

        Returns:
            The chunk with the kept hits (itself when all are kept).
        """
        if keep.all():
            return self
        kept_per_event = np.bincount(segment_ids(self.hit_offsets)[keep], minlength=self.num_events)
        return EventChunk(
            event=self.event,
            hit_offsets=counts_to_offsets(kept_per_event),
            hits={k: v[keep] for k, v in self.hits.items()},
            part_offsets=self.part_offsets,
            parts=self.parts,
            source=self.source,
            hit_part_row=None if self.hit_part_row is None else self.hit_part_row[keep],
        )

    def select_events(self, keep: np.ndarray) -> EventChunk:
        """Keep events where ``keep`` (n,) bool is true (or an index array, in that order).

        Args:
            keep: (n,) bool mask or an index array.

        Returns:
            The chunk with the kept events, their hits and particles.
        """
        idx = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep, dtype=np.int64)
        if len(idx) == self.num_events and (idx == np.arange(self.num_events)).all():
            return self
        hit_rows = _gather_rows(self.hit_offsets, idx)
        out = EventChunk(
            event={k: v[idx] for k, v in self.event.items()},
            hit_offsets=counts_to_offsets(self.hit_counts[idx]),
            hits={k: v[hit_rows] for k, v in self.hits.items()},
            source=self.source,
        )
        if self.part_offsets is not None:
            part_rows = _gather_rows(self.part_offsets, idx)
            out.part_offsets = counts_to_offsets(np.diff(self.part_offsets)[idx])
            out.parts = {k: v[part_rows] for k, v in self.parts.items()}
            if self.hit_part_row is not None:  # move cached rows to the new particle offsets
                shift = np.repeat(out.part_offsets[:-1] - self.part_offsets[idx], out.hit_counts)
                old = self.hit_part_row[hit_rows]
                out.hit_part_row = np.where(old >= 0, old + shift, -1)
        return out

    # ---- conversions -------------------------------------------------------------------
    def events(self) -> Iterator[dict[str, np.ndarray]]:
        """Per-event dicts keyed by schema names (scalars as numpy scalars)."""
        for i in range(self.num_events):
            a, b = self.hit_offsets[i], self.hit_offsets[i + 1]
            ev: dict[str, np.ndarray] = {k: v[i] for k, v in self.event.items()}
            ev.update({k: v[a:b] for k, v in self.hits.items()})
            if self.part_offsets is not None:
                c, d = self.part_offsets[i], self.part_offsets[i + 1]
                ev.update({k: v[c:d] for k, v in self.parts.items()})
            yield ev

    def to_awkward(self) -> ak.Array:
        """Record array, one entry per event, with the schema branch names as fields."""
        cols: dict[str, ak.Array] = {k: ak.Array(v) for k, v in self.event.items()}
        for k, v in self.hits.items():
            cols[k] = ak.unflatten(v, self.hit_counts)
        if self.part_offsets is not None:
            for k, v in self.parts.items():
                cols[k] = ak.unflatten(v, np.diff(self.part_offsets))
        return ak.zip(cols, depth_limit=1)

    @classmethod
    def from_events(cls, events: Sequence[dict], source: str = "<memory>") -> EventChunk:
        """Concatenate per-event dicts (schema names; missing optional fields are left out).

        Args:
            events: per-event dicts.
            source: name reported in errors and repairs.

        Returns:
            One chunk holding every event.
        """
        if len(events) == 0:
            raise ValueError("from_events needs at least one event")
        first = events[0]
        ev_keys = [k for k in EVENT_BRANCHES if k in first]
        hit_keys = [k for k in _HIT_KEYS if k in first]
        part_keys = [k for k in PARTICLE_BRANCHES if k in first]
        if "hit_x" not in hit_keys:
            raise ValueError(f"{source}: events need at least hit_x/hit_y/hit_z")
        counts = np.array([len(e["hit_x"]) for e in events], dtype=np.int64)
        chunk = cls(
            event={k: np.array([e[k] for e in events], dtype=EVENT_BRANCHES[k]) for k in ev_keys},
            hit_offsets=counts_to_offsets(counts),
            hits={
                k: np.concatenate([np.asarray(e[k], dtype=_HIT_KEYS[k]) for e in events])
                for k in hit_keys
            },
            source=source,
        )
        if "event_id" not in chunk.event:
            chunk.event["event_id"] = np.arange(len(events), dtype=np.uint64)
        if part_keys:
            pc = np.array([len(e[part_keys[0]]) for e in events], dtype=np.int64)
            chunk.part_offsets = counts_to_offsets(pc)
            chunk.parts = {
                k: np.concatenate([np.asarray(e[k], dtype=PARTICLE_BRANCHES[k]) for e in events])
                for k in part_keys
            }
        return chunk


def concat_chunks(chunks: Sequence[EventChunk]) -> EventChunk:
    """Concatenate chunks that carry the same fields.

    Args:
        chunks: chunks with the same fields.

    Returns:
        One chunk, events in order.
    """
    if len(chunks) == 1:
        return chunks[0]
    out = EventChunk(
        event={k: np.concatenate([c.event[k] for c in chunks]) for k in chunks[0].event},
        hit_offsets=counts_to_offsets(np.concatenate([c.hit_counts for c in chunks])),
        hits={k: np.concatenate([c.hits[k] for c in chunks]) for k in chunks[0].hits},
        source=",".join(sorted({c.source for c in chunks})),
    )
    if all(c.part_offsets is not None for c in chunks):
        out.part_offsets = counts_to_offsets(
            np.concatenate([np.diff(c.part_offsets) for c in chunks])
        )
        out.parts = {k: np.concatenate([c.parts[k] for c in chunks]) for k in chunks[0].parts}
    return out


def _gather_rows(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Flat row indices of segments ``idx`` (in that order), vectorised."""
    starts = offsets[idx]
    lens = offsets[idx + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # row r of the output = starts[seg] + (r - out_start[seg])
    out_starts = counts_to_offsets(lens)[:-1]
    rows = np.arange(total, dtype=np.int64)
    rows += np.repeat(starts - out_starts, lens)
    return rows


gather_rows = _gather_rows
