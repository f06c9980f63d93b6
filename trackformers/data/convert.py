"""Convert TrackML CSV or ACTS ROOT output into native ROOT files (trackformers.sim.writer).

    python -m trackformers.data.convert trackml <dir with event*-hits.csv> <output dir>
    python -m trackformers.data.convert acts <hits.root> <particles.root> <output dir>
    python -m trackformers.data.convert trackml-export <native file|dir|glob> <output dir>

``trackml-export`` goes the other way: native files to TrackML CSV (hits, cells, particles,
truth per event; trackformers.data.trackml_export), which ``trackml`` reads back bit for bit.

Options: ``--events-per-file N`` (default 100) shards the output as ``shard_00000.root`` ...;
``--on-error skip`` skips (and counts) bad events instead of stopping. Repairs are reported
once per input with their counts; the summary line gives events and files written.

The shards are written into a hidden temporary directory beside the output and published by
one rename when the whole input is converted: a failed or interrupted conversion leaves the
output as it was, never a partial dataset. An output directory that already holds files is
refused (the error lists them) unless ``--overwrite`` is given, which replaces a directory of
``shard_NNNNN.root`` files as a whole (a directory holding other files is still refused).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from trackformers.cli import HelpFormatter, argument_parser
from trackformers.data.acts import iter_acts
from trackformers.data.errors import DataError, RepairLog, check_on_error, log
from trackformers.data.trackml import iter_trackml
from trackformers.data.trackml_export import export_trackml
from trackformers.signals import sigterm_unwinds
from trackformers.sim.writer import check_writable, write_events

SHARD_RE = re.compile(r"shard_\d{5}\.root$")


def _shards(events: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while True:
        shard = list(itertools.islice(events, size))
        if not shard:
            return
        yield shard


def write_shards(
    events: Iterable[dict], output: str | Path, metadata: dict, events_per_file: int = 100
) -> tuple[int, list[Path]]:
    """Write events as output/shard_NNNNN.root; returns (events written, files).

    Args:
        events: native event dicts.
        output: output directory.
        metadata: provenance stored in each shard.
        events_per_file: events per shard.
    """
    if events_per_file < 1:
        raise ValueError(f"events_per_file must be >= 1, got {events_per_file}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    n, files = 0, []
    for i, shard in enumerate(_shards(iter(events), events_per_file)):
        path = out / f"shard_{i:05d}.root"
        n += write_events(path, shard, {**metadata, "shard": i})
        files.append(path)
    return n, files


def _listing(names: list[str], limit: int = 5) -> str:
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_output(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output directory, resolved; raise if it holds files that converting would mix with.

    An absent or empty directory is accepted. One holding anything is refused unless
    ``overwrite``, and with ``overwrite`` it may hold only ``shard_NNNNN.root`` files (a whole
    directory is replaced on publishing; other files are never deleted).

    Args:
        output: the output directory (need not exist).
        overwrite: accept a directory holding only shards, to be replaced.

    Returns:
        The resolved output path.
    """
    out = Path(output).resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} exists and is not a directory")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return out
    if not overwrite:
        raise FileExistsError(
            f"output directory {out} is not empty (holds {_listing(held)}); choose a new "
            "directory, or pass --overwrite (overwrite=True) to replace its shards"
        )
    others = [n for n in held if not SHARD_RE.match(n)]
    if others:
        raise FileExistsError(
            f"output directory {out} holds files that are not shards ({_listing(others)}); "
            "--overwrite replaces only a directory of shard_NNNNN.root files: move them away "
            "or choose another directory"
        )
    return out


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the complete temporary directory ``tmp`` to ``out`` (replacing old shards)."""
    check_output(out, overwrite)  # again: something may have written there meanwhile
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)  # put the previous dataset back
        raise
    shutil.rmtree(old)


def _write_reporting_repairs(
    events: Iterable[dict],
    output,
    metadata: dict,
    events_per_file: int,
    repairs: RepairLog,
    overwrite: bool = False,
) -> tuple[int, list[Path]]:
    """write_shards into a temporary directory published only when every event is written;
    the importer's repairs are reported even when a bad event stops it."""
    out = check_output(output, overwrite)
    tmp = check_writable(out.with_name(f".{out.name}.convert-{os.getpid()}") / "x").parent
    try:
        try:
            n, files = write_shards(events, tmp, metadata, events_per_file)
        finally:
            repairs.flush()
        if n == 0:
            raise DataError(f"no event could be converted; {out} left unchanged")
        _publish(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n, [out / f.name for f in files]


def convert_trackml(
    directory,
    output,
    events_per_file: int = 100,
    on_error: str = "raise",
    repairs: RepairLog | None = None,
    overwrite: bool = False,
) -> tuple[int, list[Path]]:
    """Convert a TrackML CSV directory into ``output``; returns (events, shard files).

    Args:
        directory: directory with ``event<N>-hits/truth/particles.csv[.gz]``.
        output: output directory, absent or empty (or holding only shards, with ``overwrite``).
        events_per_file: events per ``shard_NNNNN.root``.
        on_error: ``"raise"`` stops at a bad event, ``"skip"`` skips and counts it.
        repairs: repair log to count into (a new one when None).
        overwrite: replace an output directory of shards from an earlier conversion.

    Returns:
        Number of events written and the published shard paths.
    """
    repairs = repairs if repairs is not None else RepairLog()
    meta = {"source": "trackml-csv", "input": str(Path(directory).resolve())}
    events = iter_trackml(directory, repairs, check_on_error(on_error))
    return _write_reporting_repairs(events, output, meta, events_per_file, repairs, overwrite)


def convert_acts(
    hits,
    particles,
    output,
    events_per_file: int = 100,
    on_error: str = "raise",
    repairs: RepairLog | None = None,
    overwrite: bool = False,
) -> tuple[int, list[Path]]:
    """Convert ACTS ``hits.root`` + ``particles.root`` into ``output``; as :func:`convert_trackml`
    (every event of the particles file is kept, an event without hits too).

    Args:
        hits: ACTS ``hits.root``.
        particles: ACTS ``particles.root``.
        output: output directory of the shards.
        events_per_file: events per shard.
        on_error: ``raise`` or ``skip`` bad events.
        repairs: log of counted repairs (None: a new one).
        overwrite: replace an output directory of shards.

    Returns:
        Number of events written and the published shard paths.
    """
    repairs = repairs if repairs is not None else RepairLog()
    meta = {
        "source": "acts-root",
        "hits": str(Path(hits).resolve()),
        "particles": str(Path(particles).resolve()),
        "note": "hit positions are the true ACTS sim-hit positions",
    }
    events = iter_acts(hits, particles, repairs, check_on_error(on_error))
    return _write_reporting_repairs(events, output, meta, events_per_file, repairs, overwrite)


def _export_main(native: str, output: str) -> int:
    try:
        summary = export_trackml(native, output)
    except (OSError, ValueError) as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the input was refused.
    """
    parser = argument_parser("trackformers.data.convert", __doc__)
    sub = parser.add_subparsers(dest="kind", required=True, help="what to convert")
    t = sub.add_parser("trackml", help="TrackML CSV directory", formatter_class=HelpFormatter)
    t.add_argument("input", help="directory with event<N>-hits/truth/particles.csv")
    t.add_argument("output", help="output directory for shard_NNNNN.root")
    a = sub.add_parser(
        "acts", help="ACTS hits.root + particles.root", formatter_class=HelpFormatter
    )
    a.add_argument("hits", help="ACTS hits.root")
    a.add_argument("particles", help="ACTS particles.root")
    a.add_argument("output", help="output directory for shard_NNNNN.root")
    for p in (t, a):
        p.add_argument("--events-per-file", type=int, default=100, help="events per shard")
        p.add_argument(
            "--on-error",
            choices=("raise", "skip"),
            default="raise",
            help="a bad event stops the conversion (raise) or is skipped and counted (skip)",
        )
        p.add_argument(
            "--overwrite", action="store_true", help="replace an output directory of shards"
        )
    x = sub.add_parser(
        "trackml-export",
        help="native ROOT files -> TrackML CSV directory",
        formatter_class=HelpFormatter,
    )
    x.add_argument("input", help="native file, directory of *.root files or glob")
    x.add_argument("output", help="output directory for event<N>-hits/cells/particles/truth.csv")
    args = parser.parse_args(argv)
    if args.kind == "trackml-export":
        return _export_main(args.input, args.output)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    repairs = RepairLog()
    opts = dict(on_error=args.on_error, repairs=repairs, overwrite=args.overwrite)
    try:
        with sigterm_unwinds():  # kill removes the temporary directory as Ctrl-C does
            if args.kind == "trackml":
                n, files = convert_trackml(args.input, args.output, args.events_per_file, **opts)
            else:
                n, files = convert_acts(
                    args.hits, args.particles, args.output, args.events_per_file, **opts
                )
    except (OSError, ValueError) as err:  # DataError is a ValueError
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"events": n, "files": [str(f) for f in files], "repairs": dict(repairs.reported)}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
