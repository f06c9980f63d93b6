"""Export native events as TrackML CSV files, readable by any tool written for TrackML.

    python -m trackformers.data.convert trackml-export <native file|dir|glob> <output dir>

Per event ``event<id:09d>-hits.csv``, ``-truth.csv``, ``-particles.csv`` and, when the native
file holds cells, ``-cells.csv``, with TrackML's columns and conventions:

    hits:      hit_id, x, y, z, volume_id, layer_id, module_id
    cells:     hit_id, ch0, ch1, value
    particles: particle_id, vx, vy, vz, px, py, pz, q, nhits, particle_type, vertex_id,
               parent_id, process
    truth:     hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz, weight

Hit ids run from 1 (native hit ids are kept when they are 1..n, else the hits are renumbered
1..n in id order and the cells follow). Particle ids are written as integers straight from
uint64 (never through float); ids of 2^63 or more, which TrackML readers (int64) cannot hold,
are refused. Noise hits have a truth row with particle id 0 and weight 0. Floats are float32
written with ``%.9g``, which reads back to the same float32 bit for bit, so
native -> CSV -> native (``convert trackml``) reproduces every hit, cell and particle branch;
``particle_type`` (PDG id), ``vertex_id``, ``parent_id`` and ``process`` (how a secondary was
made, ``trackformers.data.schema.PROCESS_*``) are extra particle columns that the importer
reads back (TrackML tools ignore them). Every file is written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from trackformers.data import schema
from trackformers.data.errors import DataError
from trackformers.data.reader import (
    DEFAULT_CHUNK_BYTES,
    PathSpec,
    check_complete,
    coerce_dtype,
    entry_ranges,
    list_files,
    open_tree,
)

FLOAT_FORMAT = "%.9g"  # 9 significant digits: every float32 reads back exactly
MAX_TRACKML_ID = np.uint64(2**63 - 1)  # TrackML readers hold particle ids as int64


def iter_native_events(paths: PathSpec, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[dict]:
    """Every event of native files with every branch they hold (optional ones included).

    Args:
        paths: native files, directories or globs.
        chunk_bytes: uncompressed bytes read per chunk.

    Yields:
        dict keyed by schema names: scalars for event branches, numpy arrays (schema dtypes)
        for hit, particle, cluster and cell branches.
    """
    for path in list_files(paths):
        source = str(path)
        tree = open_tree(path)
        try:
            have = set(tree.keys(recursive=False))
            missing = [k for k in schema.ALL_BRANCHES if k not in have]
            if missing:
                raise DataError(f"{source}: missing branch(es) {missing}")
            branches = [k for k in schema.KNOWN_BRANCHES if k in have]
            check_complete(tree, branches, source)
            for a, b in entry_ranges(tree, branches, chunk_bytes):
                arrays = tree.arrays(branches, entry_start=a, entry_stop=b, library="np")
                for i in range(b - a):
                    ev = {}
                    for k in branches:
                        v = arrays[k][i]
                        if k in schema.EVENT_BRANCHES:
                            ev[k] = schema.EVENT_BRANCHES[k].type(v)
                        else:
                            ev[k] = coerce_dtype(k, np.asarray(v), source, None)
                    yield ev
        finally:
            tree.file.close()


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        df.to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _hit_ids(ev: dict) -> tuple[np.ndarray, bool]:
    """TrackML hit ids (1..n) for the event's hits, and whether they differ from the native."""
    hid = ev["hit_id"]
    n = len(hid)
    if np.array_equal(hid, np.arange(1, n + 1, dtype=np.uint64)):
        return hid, False
    order = np.argsort(hid, kind="stable")
    new = np.empty(n, np.uint64)
    new[order] = np.arange(1, n + 1, dtype=np.uint64)
    return new, True


def event_frames(ev: dict, source: str = "<event>") -> dict[str, pd.DataFrame]:
    """The TrackML tables of one native event (``cells`` only when it holds cells).

    Args:
        ev: a native event dict.
        source: name in errors.

    Returns:
        ``hits``, ``particles``, ``truth`` (and ``cells``) DataFrames.
    """
    eid = ev["event_id"]
    for key in ("hit_particle_id", "part_particle_id"):
        big = ev[key] > MAX_TRACKML_ID
        if big.any():
            raise DataError(
                f"{source}: event {eid}: {key} {int(ev[key][big][0])} does not fit the int64 "
                "particle ids of TrackML readers"
            )
    hid, renumbered = _hit_ids(ev)
    f32 = {
        k: np.asarray(v, np.float32)
        for k, v in ev.items()
        if isinstance(v, np.ndarray) and v.dtype.kind == "f"
    }
    frames = {
        "hits": pd.DataFrame(
            {
                "hit_id": hid,
                "x": f32["hit_x"],
                "y": f32["hit_y"],
                "z": f32["hit_z"],
                "volume_id": ev["hit_volume_id"],
                "layer_id": ev["hit_layer_id"],
                "module_id": ev["hit_module_id"],
            }
        ),
        "truth": pd.DataFrame(
            {
                "hit_id": hid,
                "particle_id": ev["hit_particle_id"],
                **{c: f32[f"hit_{c}"] for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
                "weight": f32["hit_weight"],
            }
        ),
        "particles": pd.DataFrame(
            {
                "particle_id": ev["part_particle_id"],
                **{c: f32[f"part_{c}"] for c in ("vx", "vy", "vz", "px", "py", "pz")},
                "q": ev["part_q"],
                "nhits": ev["part_nhits"],
                "particle_type": ev["part_pdg_id"],
                "vertex_id": ev["part_vertex_id"],
                "parent_id": ev["part_parent_id"],
                "process": ev["part_process"],
            }
        ),
    }
    if "cell_hit_id" in ev:
        cell_hid = ev["cell_hit_id"]
        if renumbered:
            order = np.argsort(ev["hit_id"], kind="stable")
            cell_hid = hid[order][np.searchsorted(ev["hit_id"][order], cell_hid)]
        frames["cells"] = pd.DataFrame(
            {
                "hit_id": cell_hid,
                "ch0": ev["cell_ch0"],
                "ch1": ev["cell_ch1"],
                "value": f32["cell_value"],
            }
        )
    frames["renumbered"] = renumbered  # type: ignore[assignment]
    return frames


def export_trackml(native: PathSpec, output: str | os.PathLike) -> dict:
    """Write every event of ``native`` as TrackML CSV files into ``output``.

    Args:
        native: native files, directories or globs.
        output: output directory.

    Returns:
        {"events": n, "files": n_files, "renumbered_events": n, "output": dir}.

    Raises:
        DataError: two events share an event id, or a particle id does not fit int64.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[int, str] = {}
    n_events = n_files = n_renumbered = 0
    for path in list_files(native):
        for ev in iter_native_events(path):
            eid = int(ev["event_id"])
            if eid in seen:
                raise DataError(
                    f"{path}: event id {eid} also in {seen[eid]}; TrackML file names need "
                    "unique event ids"
                )
            seen[eid] = str(path)
            frames = event_frames(ev, str(path))
            n_renumbered += bool(frames.pop("renumbered"))
            for kind, df in frames.items():
                _write_csv(df, out / f"event{eid:09d}-{kind}.csv")
                n_files += 1
            n_events += 1
    return {
        "events": n_events,
        "files": n_files,
        "renumbered_events": n_renumbered,
        "output": str(out),
    }
