"""Import the TrackML CSV release into native events.

A directory holds per event ``event<N>-hits.csv``, ``-truth.csv``, ``-particles.csv`` and
optionally ``-cells.csv`` (hit_id, ch0, ch1, value: read by trackformers.data.trackml_cells into
the cell branches and the per-hit cluster summary); ``.csv.gz`` works too. Columns:

    hits:      hit_id, x, y, z, volume_id, layer_id, module_id
    truth:     hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz[, weight]
    particles: particle_id, vx, vy, vz, px, py, pz, q, nhits[, particle_type]

Weights come from the truth ``weight`` column when present, else from the official rule
(trackformers.sim.weights). ``particle_type`` (PDG id) is optional (0 when absent). The vertex
id is the particles' ``vertex_id`` column when present (written by our TrackML export), else
the primary-vertex field of the ACTS barcode that TrackML ids use (top 12 bits), made 0-based.

Ids never pass through float64: ``hit_id`` and ``particle_id`` are parsed as 64-bit unsigned
integers, ``volume_id``, ``layer_id``, ``module_id``, ``nhits`` and ``particle_type`` as
integers. Repairs (counted, warned once per directory, naming the files): rows with NaN/inf in
a measured value (hit or truth position and momentum, particle vertex, momentum, charge)
dropped, hits without a truth row kept as noise (weight 0), truth rows without a hit dropped.
Errors (naming file, column and row): a missing or non-integer id (``hit_id``,
``particle_id``, ``volume_id``, ``layer_id``, ``module_id``, ``nhits``, ``particle_type``) or
a missing/non-finite ``weight``: these are labels, not measurements, and no repair would give
the right data; a header-only file ("no rows"); missing files or columns; duplicate ids.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from trackformers.data.errors import DataError, RepairLog, log
from trackformers.data.schema import unknown_origin
from trackformers.data.trackml_cells import cells_path, read_cells
from trackformers.sim.weights import trackml_weights

HIT_COLUMNS = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")
TRUTH_COLUMNS = ("hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz")
PARTICLE_COLUMNS = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits")
# integer columns, parsed without float64; a missing value is refused (file, column, row)
INT_DTYPES = {
    "hit_id": "UInt64",
    "particle_id": "UInt64",
    "volume_id": "Int64",
    "layer_id": "Int64",
    "module_id": "Int64",
    "nhits": "Int64",
    "particle_type": "Int64",
    "vertex_id": "Int64",
    "parent_id": "UInt64",
    "process": "Int64",
}
COMPLETE_COLUMNS = ("weight",)  # floats that are labels: NaN/inf refused, never repaired
EVENT_RE = re.compile(r"event(\d+)-hits\.csv(\.gz)?$")
VERTEX_SHIFT = 52  # ACTS barcode: primary vertex in the top 12 bits


def find_events(directory: str | Path) -> list[tuple[int, str]]:
    """(event id, file prefix) of every ``event<N>-hits.csv[.gz]`` in ``directory``, sorted.

    Args:
        directory: a TrackML directory.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"TrackML directory not found: {d}")
    out = []
    for p in d.iterdir():
        m = EVENT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), str(d / p.name[: -len("-hits.csv" + (m.group(2) or ""))])))
    if not out:
        raise FileNotFoundError(f"no event<N>-hits.csv files in {d}")
    return sorted(out)


def _read(prefix: str, kind: str, required: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    for suffix in (".csv", ".csv.gz"):
        path = f"{prefix}-{kind}{suffix}"
        if Path(path).is_file():
            break
    else:
        raise FileNotFoundError(f"missing TrackML file {prefix}-{kind}.csv")
    try:
        df = pd.read_csv(path, dtype=INT_DTYPES)
    except (TypeError, ValueError, OverflowError) as err:
        msg = _bad_integer(path) or f"{path}: cannot parse CSV ({type(err).__name__}: {err})"
        raise DataError(msg) from err
    except Exception as err:
        raise DataError(f"{path}: cannot parse CSV ({type(err).__name__}: {err})") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        hints = [
            c
            + (
                f" (did you mean {close[0]}?)"
                if (close := difflib.get_close_matches(c, list(df.columns), n=1))
                else ""
            )
            for c in missing
        ]
        raise DataError(f"{path}: missing column(s) {', '.join(hints)}; has {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows (the file holds only the header)")
    for c in required:
        if df[c].dtype.kind not in "iuf":
            raise DataError(f"{path}: column '{c}' is {df[c].dtype}, expected numbers")
    for c in df.columns:
        if c in INT_DTYPES or c in COMPLETE_COLUMNS:
            vals = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(vals))
            if len(bad):
                raise DataError(
                    f"{path}: column '{c}' has no valid value in row {bad[0]} (line "
                    f"{bad[0] + 2}){f' and {len(bad) - 1} more rows' if len(bad) > 1 else ''}; "
                    "ids and weights are not repaired: fix or drop those rows"
                )
    return df, path


def _bad_integer(path: str) -> str | None:
    """Message naming the first integer-column cell of ``path`` that is not an integer."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception:
        return None
    for c, dtype in INT_DTYPES.items():
        if c not in raw.columns:
            continue
        for i, text in enumerate(raw[c]):
            v = text.strip()
            ok = re.fullmatch(r"[+-]?\d+(\.0*)?", v) is not None
            ok = ok and (dtype != "UInt64" or not v.startswith("-"))
            limit = 2**64 if dtype == "UInt64" else 2**63
            if ok and abs(int(v.split(".")[0])) >= limit:
                ok = False
            if not ok:
                kind = "a non-negative 64-bit" if dtype == "UInt64" else "a 64-bit"
                return (
                    f"{path}: column '{c}' row {i} (line {i + 2}): {text!r} is not {kind} "
                    "integer (ids never pass through floats)"
                )
    return None


def _drop_nonfinite(df: pd.DataFrame, cols, path: str, repairs: RepairLog, src: str):
    vals = df[list(cols)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals).all(axis=1)
    if bad.any():
        repairs.add(src, "nonfinite_hits", int(bad.sum()))
        repairs.note(src, "nonfinite_hits", Path(path).name)
        df = df[~bad]
    return df


def read_event(prefix: str, event_id: int, repairs: RepairLog, source: str) -> dict:
    """One TrackML event as a native event dict (schema names and dtypes).

    Args:
        prefix: path prefix of the event's files (``.../event000001000``).
        event_id: the event's id.
        repairs: log of counted repairs.
        source: name in errors and repairs.
    """
    hits, hpath = _read(prefix, "hits", HIT_COLUMNS)
    truth, tpath = _read(prefix, "truth", TRUTH_COLUMNS)
    parts, ppath = _read(prefix, "particles", PARTICLE_COLUMNS)
    listed = hits["hit_id"]  # a truth row of a hit dropped here is not an orphan
    hits = _drop_nonfinite(hits, ("x", "y", "z"), hpath, repairs, source)
    truth = _drop_nonfinite(truth, TRUTH_COLUMNS[2:], tpath, repairs, source)
    parts = _drop_nonfinite(parts, PARTICLE_COLUMNS[1:8], ppath, repairs, source)
    for df, path in ((hits, hpath), (truth, tpath)):
        dup = df["hit_id"].duplicated()
        if dup.any():
            raise DataError(
                f"{path}: hit id {int(df['hit_id'][dup].iloc[0])} appears "
                f"{int(dup.sum()) + 1} times or more"
            )
    if parts["particle_id"].duplicated().any():
        pid = int(parts["particle_id"][parts["particle_id"].duplicated()].iloc[0])
        raise DataError(f"{ppath}: particle id {pid} appears more than once")
    # both hit_id columns are UInt64: hits without a truth row get <NA>, never a float NaN
    merged = hits.merge(truth, on="hit_id", how="left", indicator=True)
    no_truth = (merged["_merge"] == "left_only").to_numpy()
    tname, pname = Path(tpath).name, Path(ppath).name
    repairs.add(source, "noise_hits_without_truth_row", int(no_truth.sum()), note=tname)
    n_orphan = int((~truth["hit_id"].isin(listed)).sum())
    repairs.add(source, "truth_rows_without_hit", n_orphan, note=tname)
    merged = merged.sort_values("hit_id", kind="stable")
    n = len(merged)
    f32 = lambda c: merged[c].to_numpy(dtype=np.float64, na_value=0.0).astype(np.float32)
    hit_pid = merged["particle_id"].fillna(0).to_numpy(dtype=np.uint64)  # no truth row: noise
    part_pid = parts["particle_id"].to_numpy(dtype=np.uint64)
    unknown = (hit_pid != 0) & ~np.isin(hit_pid, part_pid)
    repairs.add(source, "particles_without_row", int(len(np.unique(hit_pid[unknown]))), note=pname)
    ev = {
        "event_id": np.uint64(event_id),
        "pileup": np.int32(0),
        "hit_id": merged["hit_id"].to_numpy(dtype=np.uint64),
        "hit_x": merged["x"].to_numpy(dtype=np.float32),
        "hit_y": merged["y"].to_numpy(dtype=np.float32),
        "hit_z": merged["z"].to_numpy(dtype=np.float32),
        "hit_volume_id": merged["volume_id"].to_numpy(dtype=np.int32),
        "hit_layer_id": merged["layer_id"].to_numpy(dtype=np.int32),
        "hit_module_id": merged["module_id"].to_numpy(dtype=np.int32),
        "hit_particle_id": hit_pid,
        **{f"hit_{c}": f32(c) for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
        "part_particle_id": part_pid,
        "part_pdg_id": (
            parts["particle_type"].to_numpy(dtype=np.int32)
            if "particle_type" in parts
            else np.zeros(len(parts), np.int32)
        ),
        "part_vertex_id": (
            parts["vertex_id"].to_numpy(dtype=np.int32)
            if "vertex_id" in parts
            else vertex_ids(part_pid)
        ),
        **{
            f"part_{c}": parts[c].to_numpy(dtype=np.float32)
            for c in ("vx", "vy", "vz", "px", "py", "pz")
        },
        "part_q": parts["q"].to_numpy().astype(np.int32),
        "part_nhits": parts["nhits"].to_numpy(dtype=np.int32),
        **unknown_origin(len(parts)),
    }
    if "parent_id" in parts and "process" in parts:  # written by our TrackML export
        ev["part_parent_id"] = parts["parent_id"].to_numpy(dtype=np.uint64)
        ev["part_process"] = parts["process"].to_numpy(dtype=np.int32)
    if "weight" in truth.columns:
        ev["hit_weight"] = f32("weight")
    else:
        ev["hit_weight"] = trackml_weights(
            hit_pid, ev["hit_tz"], part_pid, ev["part_vz"], ev["part_px"], ev["part_py"]
        ).astype(np.float32)
    ev["pileup"] = np.int32(max(len(np.unique(ev["part_vertex_id"])) - 1, 0))
    assert len(ev["hit_x"]) == n
    cells = cells_path(prefix)
    if cells is not None:
        ev.update(read_cells(cells, ev["hit_id"], ev["hit_volume_id"], repairs, source))
    return ev


def vertex_ids(particle_id: np.ndarray) -> np.ndarray:
    """0-based primary-vertex index from ACTS/TrackML barcodes (top 12 bits, 1-based).

    Args:
        particle_id: TrackML particle ids.
    """
    v = (np.asarray(particle_id, dtype=np.uint64) >> np.uint64(VERTEX_SHIFT)).astype(np.int64)
    return np.maximum(v - 1, 0).astype(np.int32)


def iter_trackml(
    directory: str | Path, repairs: RepairLog, on_error: str = "raise"
) -> Iterator[dict]:
    """Native event dicts of every event in a TrackML directory (one event in memory at a time).

    Args:
        directory: a TrackML directory.
        repairs: log of counted repairs and skipped events.
        on_error: ``raise`` or ``skip`` a bad event.
    """
    src = str(directory)
    for event_id, prefix in find_events(directory):
        try:
            yield read_event(prefix, event_id, repairs, src)
        except (DataError, FileNotFoundError) as err:
            if on_error == "raise":
                raise
            log.error("skipping TrackML event %d: %s", event_id, err)
            repairs.add(src, "skipped_events", 1, note=str(err))
