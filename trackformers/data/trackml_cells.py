"""TrackML ``event<N>-cells.csv`` files: the cells of every hit, and their cluster summary.

Columns ``hit_id, ch0, ch1, value`` (one row per cell). The cells become the native cell
branches (``cell_*``, in file order grouped by hit id) and the per-hit cluster summary
(``hit_ncells`` ...) of schema.CLUSTER_BRANCHES, computed by
:func:`trackformers.sim.clusters.cluster_summary` with the pitches and sensor thickness of the
TrackML geometry, exactly as the simulation does. Repairs (counted): cells with a non-finite
value and cells of hit ids the hits file does not hold are dropped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from trackformers.data.errors import DataError, RepairLog
from trackformers.sim.clusters import cluster_summary, hit_cell_sizes
from trackformers.sim.geometry import load_geometry

CELL_COLUMNS = ("hit_id", "ch0", "ch1", "value")


def cells_path(prefix: str) -> str | None:
    """Path of the event's cells file (``.csv`` or ``.csv.gz``), None when there is none.

    Args:
        prefix: path prefix of the event's files.
    """
    for suffix in (".csv", ".csv.gz"):
        path = f"{prefix}-cells{suffix}"
        if Path(path).is_file():
            return path
    return None


@functools.lru_cache(maxsize=4)
def _geometry(path: str | None):
    return load_geometry(path)


def read_cells(
    path: str,
    hit_id: np.ndarray,
    volume_id: np.ndarray,
    repairs: RepairLog,
    source: str,
    geometry: str | None = None,
) -> dict[str, np.ndarray]:
    """Cell branches and cluster summary of one event from its cells CSV.

    Args:
        path: the cells CSV.
        hit_id: (n,) uint64 hit ids of the event, increasing (the importer's hit order).
        volume_id: (n,) volume ids of those hits (select the pitches and thickness).
        repairs: counts dropped cells.
        source: name reported with the repairs.
        geometry: geometry YAML for the pitches (None: the TrackML detector).

    Returns:
        ``cell_*`` and ``hit_ncells`` ... arrays keyed by schema names.
    """
    try:
        df = pd.read_csv(path)
    except Exception as err:
        raise DataError(f"{path}: cannot parse CSV ({type(err).__name__}: {err})") from err
    missing = [c for c in CELL_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    for c in CELL_COLUMNS:
        want = "f" if c == "value" else "iu"
        if df[c].dtype.kind not in want:
            raise DataError(f"{path}: column '{c}' is {df[c].dtype}, expected numbers")
    if len(df) and (df[["ch0", "ch1"]].to_numpy() < 0).any():
        raise DataError(f"{path}: negative channel number in ch0/ch1")
    value = df["value"].to_numpy(np.float64)
    finite = np.isfinite(value)
    repairs.add(source, "nonfinite_cells", int((~finite).sum()))
    cid = df["hit_id"].to_numpy().astype(np.uint64)
    hit_id = np.asarray(hit_id, np.uint64)
    row = np.searchsorted(hit_id, cid)
    known = (row < len(hit_id)) & (hit_id[np.minimum(row, len(hit_id) - 1)] == cid)
    repairs.add(source, "cells_without_hit", int((finite & ~known).sum()))
    keep = finite & known
    order = np.argsort(row[keep], kind="stable")  # group by hit, file order within a hit
    row = row[keep][order]
    ch0 = df["ch0"].to_numpy()[keep][order].astype(np.int32)
    ch1 = df["ch1"].to_numpy()[keep][order].astype(np.int32)
    val = value[keep][order].astype(np.float32)
    try:
        pu, pv, thick = hit_cell_sizes(_geometry(geometry), volume_id)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    out = cluster_summary(row, ch0, ch1, val, len(hit_id), pu, pv, thick)
    out.update(cell_hit_id=hit_id[row], cell_ch0=ch0, cell_ch1=ch1, cell_value=val)
    return out
