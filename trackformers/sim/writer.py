"""Write events to the native ROOT format of DESIGN.md (one TTree ``events``, one entry per event).

An event is a ``dict[str, np.ndarray]`` keyed by the names of :mod:`trackformers.data.schema`:
``event_id``/``pileup`` scalars, ``hit_*`` arrays of length nhit, ``part_*`` arrays of length
npart, and optionally the cluster summary (``hit_ncells`` ...) and cells (``cell_*``, counter
``ncell``) of schema.OPTIONAL_BRANCHES, written when the first event carries them.
:func:`validate_event` checks that contract; :func:`write_events` writes a file atomically
(temporary name, renamed when complete) with the provenance JSON in a TObjString.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest import mock

import awkward as ak
import numpy as np
import uproot

from trackformers.data import schema

# Fixed timestamp written into reproducible files (ROOT stores creation/modification times).
REPRODUCIBLE_TIME = _dt.datetime(2026, 1, 1, 0, 0, 0)
# LZ4 reads 4-5x faster than ZLIB-1 and ~1.8x faster than ZSTD-1 for ~20 % more bytes
# (mu = 200 pixel events, BENCHMARKS.md "Data loading"); ROOT reads all of them.
DEFAULT_COMPRESSION = "lz4:1"
CODECS = {"zlib": uproot.ZLIB, "lz4": uproot.LZ4, "zstd": uproot.ZSTD, "lzma": uproot.LZMA}


class EventFormatError(ValueError):
    """An in-memory event does not follow the schema of trackformers.data.schema."""


def validate_event(event: dict, index: int | None = None) -> None:
    """Raise :class:`EventFormatError` naming the event and field if ``event`` breaks the schema.

    Args:
        event: the event dict.
        index: its position in the stream (named in the error).
    """
    where = f"event #{index}" if index is not None else "event"
    if not isinstance(event, dict):
        raise EventFormatError(f"{where}: expected a dict, got {type(event).__name__}")
    missing = [k for k in schema.ALL_BRANCHES if k not in event]
    if missing:
        raise EventFormatError(f"{where}: missing key(s) {missing}")
    for key in schema.EVENT_BRANCHES:
        if np.ndim(event[key]) != 0:
            raise EventFormatError(
                f"{where}: '{key}' must be a scalar, got shape {np.shape(event[key])}"
            )
    for group, counter in (
        (schema.HIT_BRANCHES, "hit_id"),
        (schema.PARTICLE_BRANCHES, "part_particle_id"),
    ):
        n = len(np.asarray(event[counter]))
        for key in group:
            arr = np.asarray(event[key])
            if arr.ndim != 1:
                raise EventFormatError(f"{where}: '{key}' must be 1-D, got shape {arr.shape}")
            if len(arr) != n:
                raise EventFormatError(
                    f"{where}: '{key}' has length {len(arr)} but '{counter}' has length {n}"
                )
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise EventFormatError(f"{where}: '{key}' has a non-finite value at row {bad}")
    _validate_optional(event, where)


def optional_groups(event: dict) -> tuple[str, ...]:
    """Names of the optional branches (schema.OPTIONAL_BRANCHES) an event carries.

    Args:
        event: the event dict.
    """
    return tuple(k for k in schema.OPTIONAL_BRANCHES if k in event)


def _validate_optional(event: dict, where: str) -> None:
    """Optional groups (cluster summary, cells) come whole, with consistent lengths."""
    nhit = len(np.asarray(event["hit_id"]))
    for group, n_ref, ref in (
        (schema.CLUSTER_BRANCHES, nhit, "hit_id"),
        (schema.CELL_BRANCHES, None, "cell_hit_id"),
    ):
        have = [k for k in group if k in event]
        if not have:
            continue
        if len(have) != len(group):
            missing = sorted(set(group) - set(have))
            raise EventFormatError(f"{where}: has {have[0]} but misses {missing}")
        if n_ref is None:
            n_ref = len(np.asarray(event[ref]))
        for key in group:
            arr = np.asarray(event[key])
            if arr.ndim != 1 or len(arr) != n_ref:
                raise EventFormatError(
                    f"{where}: '{key}' has shape {arr.shape} but '{ref}' has length {n_ref}"
                )
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise EventFormatError(f"{where}: '{key}' has a non-finite value at row {bad}")
    if "cell_hit_id" in event:
        unknown = ~np.isin(np.asarray(event["cell_hit_id"]), np.asarray(event["hit_id"]))
        if unknown.any():
            bad = int(np.asarray(event["cell_hit_id"])[unknown][0])
            raise EventFormatError(f"{where}: cell of hit id {bad}, which the event does not hold")


def _jagged_branches(optional: tuple[str, ...] = ()) -> dict[str, np.dtype]:
    jagged = {**schema.HIT_BRANCHES, **schema.PARTICLE_BRANCHES}
    jagged.update({k: schema.OPTIONAL_BRANCHES[k] for k in optional})
    return jagged


def _branch_types(optional: tuple[str, ...] = ()) -> dict:
    # awkward type objects, not "var * float32" strings: parsing those costs ~10 ms each
    types: dict = {k: v for k, v in schema.EVENT_BRANCHES.items()}
    for k, v in _jagged_branches(optional).items():
        prim = ak.types.numpytype.dtype_to_primitive(v)
        types[k] = ak.types.ListType(ak.types.NumpyType(prim))
    return types


def _counter_name(branch: str) -> str:
    if branch.startswith("cell_"):
        return schema.CELL_COUNTER
    return schema.HIT_COUNTER if branch.startswith("hit_") else schema.PARTICLE_COUNTER


def _chunk_arrays(events: list[dict], optional: tuple[str, ...] = ()) -> dict:
    out: dict = {}
    for k, dt in schema.EVENT_BRANCHES.items():
        out[k] = np.asarray([e[k] for e in events], dtype=dt)
    for k, dt in _jagged_branches(optional).items():
        parts = [np.asarray(e[k], dtype=dt) for e in events]
        counts = np.asarray([len(p) for p in parts], dtype=np.int64)
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dt)
        out[k] = ak.unflatten(flat, counts)
    return out


def _batches(
    events: Iterable[dict], size: int, max_hits: int, optional: tuple[str, ...] = ()
) -> Iterator[list[dict]]:
    """Validated events in chunks of ``size`` events or ``max_hits`` hits (bounded memory);
    every event must carry exactly the ``optional`` branches."""
    chunk: list[dict] = []
    hits = 0
    for i, ev in enumerate(events):
        validate_event(ev, i)
        if optional_groups(ev) != optional:
            raise EventFormatError(
                f"event #{i}: carries optional branches {list(optional_groups(ev))} but the "
                f"first event of the file carries {list(optional)}; a file holds one set"
            )
        chunk.append(ev)
        hits += len(ev["hit_id"])
        if len(chunk) == size or hits >= max_hits:
            yield chunk
            chunk, hits = [], 0
    if chunk:
        yield chunk


@contextlib.contextmanager
def _frozen_clock(when: _dt.datetime):
    """Make uproot stamp ``when`` instead of now(), so identical inputs give identical bytes."""

    class _Clock(_dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ARG003
            return when

    fake = mock.Mock(wraps=_dt)
    fake.datetime = _Clock
    targets = [
        "uproot.writing._cascade.datetime",
        "uproot.writing._cascadetree.datetime",
        "uproot.writing.writable.datetime",
    ]
    with contextlib.ExitStack() as stack:
        for t in targets:
            stack.enter_context(mock.patch(t, fake))
        yield


def compression_codec(spec=DEFAULT_COMPRESSION):
    """uproot compression from ``"codec"`` or ``"codec:level"`` (zlib, lz4, zstd, lzma), ``"none"``
    or an uproot compression object (returned as is); ``None`` means the default.

    Args:
        spec: the codec description.

    Returns:
        An uproot compression object, or None for no compression.
    """
    if spec is None:
        spec = DEFAULT_COMPRESSION
    if isinstance(spec, uproot.compression.Compression):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"compression must be a string like 'lz4:1' or 'none', got {spec!r}")
    name, _, level = spec.strip().lower().partition(":")
    if name == "none":
        return None
    if name not in CODECS:
        raise ValueError(f"unknown compression {spec!r}; use one of {sorted(CODECS)} or 'none'")
    try:
        level = int(level) if level else 1
    except ValueError:
        raise ValueError(f"compression {spec!r}: level must be an integer") from None
    if not 1 <= level <= 9:
        raise ValueError(f"compression {spec!r}: level must be 1..9")
    return CODECS[name](level)


def check_writable(path: str | os.PathLike) -> Path:
    """Create the parent directory of ``path`` and fail early with a clear error if unwritable.

    Args:
        path: the file to be written.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create output directory {path.parent}: {err}") from err
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"output directory {path.parent} is not writable")
    return path


def write_events(
    path: str | os.PathLike,
    events: Iterable[dict],
    metadata: dict,
    *,
    basket_events: int = 100,
    basket_hits: int = 1_000_000,
    reproducible: bool = True,
    compression=DEFAULT_COMPRESSION,
) -> int:
    """Write ``events`` to ``path`` in the native format; return the number of events written.

    The file is written inside ``.<name>.tmp-<pid>/`` next to ``path`` and renamed to ``path``
    only when complete, so an interrupted run never leaves a half file under the final name.
    ``metadata`` (JSON serialisable) is stored as a TObjString ``metadata``. With
    ``reproducible`` the ROOT timestamps and UUID are fixed, so the same events and metadata
    give byte-identical files. Events are buffered into baskets of at most ``basket_events``
    events or ``basket_hits`` hits, so memory stays bounded for large shards. ``compression``
    is ``"lz4:1"`` (default), ``"zstd:1"``, ``"zlib:1"``, ... or ``"none"``
    (see :func:`compression_codec`). A failed write (disk full, file too large) raises the
    ``OSError`` with ``path`` as its file name (the temporary file is removed).

    Args:
        path: the output file.
        events: event dicts (schema).
        metadata: provenance stored in the file.
        basket_events: events per basket.
        basket_hits: hits per basket.
        reproducible: fixed timestamps and UUID.
        compression: codec (see :func:`compression_codec`).
    """
    codec = compression_codec(compression)
    path = check_writable(path)
    meta_json = json.dumps(metadata, sort_keys=True, default=str)
    # the file stores its own basename, so the temporary file keeps it inside a temporary dir
    tmp_dir = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / path.name
    opts = {"compression": codec}
    if reproducible:
        fixed = uuid.uuid5(uuid.NAMESPACE_URL, "trackformers:" + meta_json)
        opts["uuid_function"] = lambda: fixed
    clock = _frozen_clock(REPRODUCIBLE_TIME) if reproducible else contextlib.nullcontext()
    n = 0
    try:
        with clock, uproot.recreate(tmp, **opts) as f:
            f[schema.METADATA_KEY] = meta_json
            events = iter(events)
            first = next(events, None)
            optional = optional_groups(first) if first is not None else ()
            events = itertools.chain([first], events) if first is not None else iter(())
            tree = f.mktree(schema.TREE_NAME, _branch_types(optional), counter_name=_counter_name)
            for chunk in _batches(events, basket_events, basket_hits, optional):
                tree.extend(_chunk_arrays(chunk, optional))
                n += len(chunk)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is None or err.filename == str(path):
            raise
        # uproot's writes raise e.g. EFBIG / ENOSPC without a file name: name the output
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            tmp_dir.rmdir()
    return n


def read_metadata(path: str | os.PathLike) -> dict:
    """Return the provenance dictionary stored in a native file.

    Args:
        path: a native file.
    """
    with uproot.open(path) as f:
        return json.loads(str(f[schema.METADATA_KEY]))
