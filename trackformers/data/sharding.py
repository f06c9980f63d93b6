"""How the events of one pass are dealt to DDP ranks and DataLoader workers.

A pass reads work items (entry ranges of files, or event ranges of a cache) in some order
(shuffled per epoch for training, file order otherwise). The events of the split, taken in
that order, are cut into ``world`` consecutive runs whose sizes differ by at most one, and rank
r reads only the part of each item that holds its run (``deal_events``). So every rank gets
its own events (no event on two ranks, none left out) and as many as any other rank; in
particular every rank has validation events, which DDP needs: a rank without a single
validation batch would skip the collective of the logged validation loss and leave the others
waiting. A rank's spans are then dealt round-robin to its DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the DataLoader worker running this; (0, 1) in the
    main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def run_bounds(total: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi): rank's run of ``total`` events cut into ``world`` runs of sizes that differ
    by at most one.

    Args:
        total: events to share.
        rank: this rank.
        world: number of ranks.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world}), got {rank}")
    return rank * total // world, (rank + 1) * total // world


def deal_events(members: Sequence[np.ndarray], rank: int, world: int) -> list[tuple[int, int, int]]:
    """This rank's share of the events of a pass.

    Args:
        members: per work item, in reading order, the sorted offsets (from the item's first
            entry) of the item's events that belong to the split.
        rank: this process's rank, ``0 <= rank < world``.
        world: number of ranks.

    Returns:
        ``(k, start, stop)`` spans, in reading order: read offsets ``start:stop`` of item
        ``members[k]``. The spans of different ranks never overlap, together they hold every
        listed event, and the ranks' event counts differ by at most one.
    """
    lo, hi = run_bounds(sum(len(m) for m in members), rank, world)
    spans, first = [], 0  # first: index of the item's first event in the pass
    for k, m in enumerate(members):
        s, e = max(lo - first, 0), min(hi - first, len(m))
        if s < e:
            spans.append((k, int(m[s]), int(m[e - 1]) + 1))
        first += len(m)
    return spans


def check_enough(total: int, world: int, split: str | None) -> None:
    """Under DDP every rank needs at least one event of the split: raise (on every rank alike,
    since all see the same total) when the split has fewer events than ranks.

    Args:
        total: events of the split.
        world: number of ranks.
        split: split name for the error.
    """
    if world > 1 and total < world:
        raise ValueError(
            f"the {split or 'data'} split has {total} event(s), fewer than the {world} DDP "
            "ranks; every rank needs at least one: add events, raise data.val_fraction / "
            "data.test_fraction, or use fewer devices"
        )
