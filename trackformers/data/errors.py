"""Data errors and the repair log: bad input is refused loudly or repaired with a count.

Every repair (dropping NaN rows, empty events, marking hits without truth) is counted per
file and kind, and reported exactly once per file by :meth:`RepairLog.flush` as one
``DataRepairWarning`` carrying the count (a warning only, not also a log line: the two would
print the same text twice on a terminal). Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("trackformers.data")

ON_ERROR = ("raise", "skip")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, field and offending value."""


class DataRepairWarning(UserWarning):
    """Input data was repaired (rows dropped or marked); the message carries the count."""


REPAIR_TEXT = {
    "nonfinite_hits": "hits with NaN/inf values dropped",
    "empty_events": "events without hits dropped",
    "hits_without_truth": "hits whose particle id is not in the particle table, made noise",
    "selection_empty_events": "events left without hits by the hit selection dropped",
    "cast": "branches converted to the schema dtype",
    "skipped_files": "files skipped (on_error=skip)",
    "skipped_chunks": "entry ranges skipped after a read error (on_error=skip)",
    "nonfinite_particles": "particles with NaN/inf values dropped (their hits lose truth)",
    "noise_hits_without_truth_row": "hits without a truth row, kept as noise",
    "particles_without_row": "hit particle ids missing from the particle file",
    "truth_rows_without_hit": "truth rows whose hit id is not in the hits file dropped",
    "skipped_events": "events skipped (on_error=skip)",
    "nonfinite_cells": "cells with a NaN/inf value dropped",
    "cells_without_hit": "cells of hit ids missing from the hits file dropped",
}
MAX_NOTES = 5  # files named in one report; the rest are counted


@dataclass
class RepairLog:
    """Counts repairs per (source, kind); ``flush(source)`` reports them once."""

    counts: Counter = field(default_factory=Counter)
    notes: dict = field(default_factory=dict)  # (source, kind) -> list of extra texts
    reported: Counter = field(default_factory=Counter)  # totals already flushed
    seen: set = field(default_factory=set)  # (source, kind, key) counted once

    def add(
        self, source: str, kind: str, n: int = 1, note: str | None = None, key: object = None
    ) -> None:
        """Count ``n`` repairs; with ``key``, count it only the first time for this source.

        Args:
            source: file the repair was made in.
            kind: repair kind (e.g. ``nonfinite_hits``).
            n: repairs made.
            note: text attached to the report.
            key: identity of the repair, counted once per source.
        """
        if n <= 0:
            return
        if key is not None:
            if (source, kind, key) in self.seen:
                return
            self.seen.add((source, kind, key))
        self.counts[(source, kind)] += int(n)
        if note:
            self.note(source, kind, note)

    def note(self, source: str, kind: str, text: str) -> None:
        """Attach ``text`` (once) to the report of (source, kind).

        Args:
            source: file the repairs were made in.
            kind: repair kind.
            text: the note.
        """
        lst = self.notes.setdefault((source, kind), [])
        if text not in lst:
            lst.append(text)

    def flush(self, source: str | None = None) -> None:
        """Warn once per (source, kind) with the count accumulated since the last flush.

        Args:
            source: report this file only (None: every file).
        """
        for (src, kind), n in sorted(self.counts.items()):
            if source is not None and src != source:
                continue
            text = REPAIR_TEXT.get(kind, kind)
            notes = self.notes.get((src, kind)) or []
            if len(notes) > MAX_NOTES:
                notes = [*notes[:MAX_NOTES], f"and {len(notes) - MAX_NOTES} more"]
            msg = f"{src}: {n} {text}" + (f" ({'; '.join(notes)})" if notes else "")
            warnings.warn(msg, DataRepairWarning, stacklevel=3)
            self.reported[kind] += n
        for key in [k for k in self.counts if source is None or k[0] == source]:
            del self.counts[key]
            self.notes.pop(key, None)

    def total(self, kind: str) -> int:
        """All repairs of ``kind`` so far, flushed or not.

        Args:
            kind: repair kind.
        """
        pending = sum(n for (_, k), n in self.counts.items() if k == kind)
        return self.reported[kind] + pending


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` policy.

    Args:
        on_error: ``raise`` or ``skip``.

    Returns:
        ``on_error`` unchanged.

    Raises:
        ValueError: any other value.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error
