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
Repairs (counted, warned once per directory): rows with NaN/inf dropped, hits without a truth
row kept as noise, truth rows without a hit dropped. Errors: missing files or
columns (named), duplicate hit ids.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from trackformers.data.errors import DataError, RepairLog
from trackformers.data.trackml_cells import cells_path, read_cells

HIT_COLUMNS = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")
TRUTH_COLUMNS = ("hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz")
PARTICLE_COLUMNS = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits")
EVENT_RE = re.compile(r"event(\d+)-hits\.csv(\.gz)?$")
VERTEX_SHIFT = 52  # ACTS barcode: primary vertex in the top 12 bits


def find_events(directory: str | Path) -> list[tuple[int, str]]:
    """(event id, file prefix) of every ``event<N>-hits.csv[.gz]`` in ``directory``, sorted."""
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
        df = pd.read_csv(path)
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
    for c in required:
        if df[c].dtype.kind not in "iuf":
            raise DataError(f"{path}: column '{c}' is {df[c].dtype}, expected numbers")
    return df, path


def _drop_nonfinite(df: pd.DataFrame, cols, path: str, repairs: RepairLog, src: str):
    vals = df[list(cols)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals).all(axis=1)
    if bad.any():
        repairs.add(src, "nonfinite_hits", int(bad.sum()))
        repairs.note(src, "nonfinite_hits", Path(path).name)
        df = df[~bad]
    return df


def read_event(prefix: str, event_id: int, repairs: RepairLog, source: str) -> dict:
    """One TrackML event as a native event dict (schema names and dtypes)."""
    hits, hpath = _read(prefix, "hits", HIT_COLUMNS)
    truth, tpath = _read(prefix, "truth", TRUTH_COLUMNS)
    parts, ppath = _read(prefix, "particles", PARTICLE_COLUMNS)
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
    merged = hits.merge(truth, on="hit_id", how="left", indicator=True)
    no_truth = (merged["_merge"] == "left_only").to_numpy()
    repairs.add(source, "noise_hits_without_truth_row", int(no_truth.sum()))
    n_orphan = int((~truth["hit_id"].isin(hits["hit_id"])).sum())
    repairs.add(source, "truth_rows_without_hit", n_orphan)
    merged = merged.sort_values("hit_id", kind="stable")
    n = len(merged)
    f32 = lambda c: np.nan_to_num(merged[c].to_numpy(dtype=np.float64)).astype(np.float32)
    pid = np.where(merged["_merge"] == "left_only", 0, merged["particle_id"].fillna(0))
    hit_pid = pid.astype(np.uint64)
    part_pid = parts["particle_id"].to_numpy().astype(np.uint64)
    unknown = (hit_pid != 0) & ~np.isin(hit_pid, part_pid)
    repairs.add(source, "particles_without_row", int(len(np.unique(hit_pid[unknown]))))
    ev = {
        "event_id": np.uint64(event_id),
        "pileup": np.int32(0),
        "hit_id": merged["hit_id"].to_numpy().astype(np.uint64),
        "hit_x": merged["x"].to_numpy(dtype=np.float32),
        "hit_y": merged["y"].to_numpy(dtype=np.float32),
        "hit_z": merged["z"].to_numpy(dtype=np.float32),
        "hit_volume_id": merged["volume_id"].to_numpy().astype(np.int32),
        "hit_layer_id": merged["layer_id"].to_numpy().astype(np.int32),
        "hit_module_id": merged["module_id"].to_numpy().astype(np.int32),
        "hit_particle_id": hit_pid,
        **{f"hit_{c}": f32(c) for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
        "part_particle_id": part_pid,
        "part_pdg_id": (
            parts["particle_type"].to_numpy().astype(np.int32)
            if "particle_type" in parts
            else np.zeros(len(parts), np.int32)
        ),
        "part_vertex_id": (
            parts["vertex_id"].to_numpy().astype(np.int32)
            if "vertex_id" in parts
            else vertex_ids(part_pid)
        ),
        **{
            f"part_{c}": parts[c].to_numpy(dtype=np.float32)
            for c in ("vx", "vy", "vz", "px", "py", "pz")
        },
        "part_q": parts["q"].to_numpy().astype(np.int32),
        "part_nhits": parts["nhits"].to_numpy().astype(np.int32),
    }
    if "weight" in truth.columns:
        ev["hit_weight"] = f32("weight")
    else:
        from trackformers.sim.weights import trackml_weights

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
    """0-based primary-vertex index from ACTS/TrackML barcodes (top 12 bits, 1-based)."""
    v = (np.asarray(particle_id, dtype=np.uint64) >> np.uint64(VERTEX_SHIFT)).astype(np.int64)
    return np.maximum(v - 1, 0).astype(np.int32)


def iter_trackml(
    directory: str | Path, repairs: RepairLog, on_error: str = "raise"
) -> Iterator[dict]:
    """Native event dicts of every event in a TrackML directory (one event in memory at a time)."""
    from trackformers.data.errors import log

    src = str(directory)
    for event_id, prefix in find_events(directory):
        try:
            yield read_event(prefix, event_id, repairs, src)
        except (DataError, FileNotFoundError) as err:
            if on_error == "raise":
                raise
            log.error("skipping TrackML event %d: %s", event_id, err)
            repairs.add(src, "skipped_events", 1, note=str(err))
