"""Checks and counted repairs on an EventChunk.

Repairs (counted in the RepairLog, reported once per file):
  * hits with NaN/inf in any float hit field are dropped;
  * particles with NaN/inf in any float particle field are dropped (their hits then count as
    hits without truth);
  * events left without hits are dropped;
  * hits whose particle id is neither 0 (noise) nor in the event's particle table ("orphan"
    hits) become noise: particle id and weight set to 0, counted. This is the one rule for
    training (loss and targets), validation and evaluation metrics, which all read events
    through here: an orphan never counts as a particle (the table defines the particles),
    and it stays in the event as a hit.
Errors (DataError naming file, event id and value): duplicate hit ids or particle ids within
an event.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trackformers.data.chunk import EventChunk, counts_to_offsets, gather_rows, segment_ids
from trackformers.data.errors import DataError, RepairLog
from trackformers.data.fastpath import join_particle_rows


def validate_chunk(chunk: EventChunk, repairs: RepairLog) -> EventChunk:
    """Check a chunk and apply the counted repairs of the module docstring.

    Args:
        chunk: the chunk as read.
        repairs: log that counts each repair per source file.

    Returns:
        The repaired chunk (the same object when nothing needed repair).

    Raises:
        DataError: duplicate hit or particle ids within an event.
    """
    src = chunk.source
    floats = [k for k, v in chunk.hits.items() if v.dtype.kind == "f"]
    if floats:
        good = np.ones(chunk.num_hits, dtype=bool)
        for k in floats:
            good &= np.isfinite(chunk.hits[k])
        nbad = int(chunk.num_hits - good.sum())
        if nbad:
            bad_fields = [k for k in floats if not np.isfinite(chunk.hits[k]).all()]
            repairs.add(src, "nonfinite_hits", nbad)
            for name in bad_fields:
                repairs.note(src, "nonfinite_hits", name)
            chunk = chunk.select_hits(good)
    if chunk.part_offsets is not None and chunk.parts:
        chunk = _drop_nonfinite_particles(chunk, repairs)
    empty = chunk.hit_counts == 0
    if empty.any():
        repairs.add(src, "empty_events", int(empty.sum()))
        chunk = chunk.select_events(~empty)
    if "hit_id" in chunk.hits:
        check_unique(chunk.hits["hit_id"], chunk.hit_offsets, chunk, "hit id")
    if "part_particle_id" in chunk.parts:
        check_unique(chunk.parts["part_particle_id"], chunk.part_offsets, chunk, "particle id")
        if "hit_particle_id" in chunk.hits:
            chunk = orphans_to_noise(chunk, repairs)
    return chunk


def orphans_to_noise(chunk: EventChunk, repairs: RepairLog) -> EventChunk:
    """The chunk with hits whose particle id is missing from their event's particle table
    turned into noise (particle id 0, weight 0); the count goes to the repair log with the
    first ids and events.

    Args:
        chunk: the events.
        repairs: log of counted repairs.
    """
    orphan = ~hits_with_truth(chunk)  # (total_hits,)
    n = int(orphan.sum())
    if not n:
        return chunk
    pid = chunk.hits["hit_particle_id"]
    first = np.unique(pid[orphan])[:3].tolist()
    events = np.unique(chunk.event["event_id"][segment_ids(chunk.hit_offsets)[orphan]])
    note = f"e.g. particle ids {first} in event(s) {events[:3].tolist()}"
    repairs.add(chunk.source, "hits_without_truth", n, note=note)
    hits = dict(chunk.hits)
    hits["hit_particle_id"] = np.where(orphan, np.zeros((), pid.dtype), pid)
    if "hit_weight" in hits:  # noise carries no TrackML score weight
        w = hits["hit_weight"]
        hits["hit_weight"] = np.where(orphan, np.zeros((), w.dtype), w)
    return dataclasses.replace(chunk, hits=hits)


def _drop_nonfinite_particles(chunk: EventChunk, repairs: RepairLog) -> EventChunk:
    floats = [k for k, v in chunk.parts.items() if v.dtype.kind == "f"]
    if not floats:
        return chunk
    good = np.ones(len(next(iter(chunk.parts.values()))), dtype=bool)
    for k in floats:
        good &= np.isfinite(chunk.parts[k])
    if good.all():
        return chunk
    repairs.add(chunk.source, "nonfinite_particles", int((~good).sum()))
    seg = segment_ids(chunk.part_offsets)
    counts = np.bincount(seg[good], minlength=chunk.num_events)
    return EventChunk(
        event=chunk.event,
        hit_offsets=chunk.hit_offsets,
        hits=chunk.hits,
        part_offsets=counts_to_offsets(counts),
        parts={k: v[good] for k, v in chunk.parts.items()},
        source=chunk.source,
    )


def check_unique(ids: np.ndarray, offsets: np.ndarray, chunk: EventChunk, what: str) -> None:
    """DataError if some event holds the same id twice. O(N) when ids increase per event.

    Args:
        ids: flat ids of all events.
        offsets: (n + 1,) offsets of the events in ``ids``.
        chunk: the chunk (source and event ids for the error).
        what: name of the ids in the error.
    """
    if len(ids) < 2:
        return
    d = np.diff(ids.astype(np.int64, copy=False)) if ids.dtype.kind in "iu" else np.diff(ids)
    boundary = np.zeros(len(ids) - 1, dtype=bool)
    inner = offsets[1:-1]
    boundary[inner[(inner > 0) & (inner < len(ids))] - 1] = True
    if ((d > 0) | boundary).all():
        return  # strictly increasing inside every event
    seg = segment_ids(offsets)
    order = np.lexsort((ids, seg))
    s_ids, s_seg = ids[order], seg[order]
    dup = (s_ids[1:] == s_ids[:-1]) & (s_seg[1:] == s_seg[:-1])
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        ev = chunk.event["event_id"][s_seg[i]]
        ndup = int(dup.sum())
        raise DataError(
            f"{chunk.source}: event {ev} holds {what} {s_ids[i]} more than once "
            f"({ndup} duplicate {what}s in this chunk)"
        )


def hits_with_truth(chunk: EventChunk) -> np.ndarray:
    """(total_hits,) bool: noise (id 0) or a particle id present in the event's table.

    Args:
        chunk: the events.
    """
    row = cached_particle_row(chunk)
    return (chunk.hits["hit_particle_id"] == 0) | (row >= 0)


def particle_row(chunk: EventChunk) -> np.ndarray:
    """(total_hits,) int64 flat particle row of each hit's particle, -1 if absent or noise.

    A hash join per event (trackformers.data.fastpath); duplicate particle ids (refused by
    validation) match their first row.

    Args:
        chunk: the events.
    """
    return join_particle_rows(
        chunk.hits["hit_particle_id"],
        chunk.hit_offsets,
        chunk.parts["part_particle_id"],
        chunk.part_offsets,
    )


def cached_particle_row(chunk: EventChunk) -> np.ndarray:
    """particle_row(chunk), computed once per chunk (select_hits keeps it in step).

    Args:
        chunk: the events.
    """
    if chunk.hit_part_row is None:
        chunk.hit_part_row = particle_row(chunk)
    return chunk.hit_part_row


__all__ = ["validate_chunk", "check_unique", "hits_with_truth", "particle_row", "gather_rows"]
