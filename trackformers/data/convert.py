"""Convert TrackML CSV or ACTS ROOT output into native ROOT files (trackformers.sim.writer).

    python -m trackformers.data.convert trackml <dir with event*-hits.csv> <output dir>
    python -m trackformers.data.convert acts <hits.root> <particles.root> <output dir>
    python -m trackformers.data.convert trackml-export <native file|dir|glob> <output dir>

``trackml-export`` goes the other way: native files to TrackML CSV (hits, cells, particles,
truth per event; trackformers.data.trackml_export), which ``trackml`` reads back bit for bit.

Options: ``--events-per-file N`` (default 100) shards the output as ``shard_00000.root`` ...;
``--on-error skip`` skips (and counts) bad events instead of stopping. Repairs are reported
once per input with their counts; the summary line gives events and files written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from trackformers.data.errors import RepairLog, check_on_error, log


def _shards(events: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while True:
        shard = list(itertools.islice(events, size))
        if not shard:
            return
        yield shard


def write_shards(
    events: Iterable[dict], output: str | Path, metadata: dict, events_per_file: int = 100
) -> tuple[int, list[Path]]:
    """Write events as output/shard_NNNNN.root; returns (events written, files)."""
    from trackformers.sim.writer import write_events

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


def _write_reporting_repairs(
    events: Iterable[dict], output, metadata: dict, events_per_file: int, repairs: RepairLog
) -> tuple[int, list[Path]]:
    """write_shards over a lazy importer, reporting its repairs even when a bad event stops it."""
    try:
        return write_shards(events, output, metadata, events_per_file)
    finally:
        repairs.flush()


def convert_trackml(
    directory,
    output,
    events_per_file: int = 100,
    on_error: str = "raise",
    repairs: RepairLog | None = None,
) -> tuple[int, list[Path]]:
    from trackformers.data.trackml import iter_trackml

    repairs = repairs if repairs is not None else RepairLog()
    meta = {"source": "trackml-csv", "input": str(Path(directory).resolve())}
    events = iter_trackml(directory, repairs, check_on_error(on_error))
    return _write_reporting_repairs(events, output, meta, events_per_file, repairs)


def convert_acts(
    hits,
    particles,
    output,
    events_per_file: int = 100,
    on_error: str = "raise",
    repairs: RepairLog | None = None,
) -> tuple[int, list[Path]]:
    from trackformers.data.acts import iter_acts

    repairs = repairs if repairs is not None else RepairLog()
    meta = {
        "source": "acts-root",
        "hits": str(Path(hits).resolve()),
        "particles": str(Path(particles).resolve()),
        "note": "hit positions are the true ACTS sim-hit positions",
    }
    events = iter_acts(hits, particles, repairs, check_on_error(on_error))
    return _write_reporting_repairs(events, output, meta, events_per_file, repairs)


def _export_main(native: str, output: str) -> int:
    from trackformers.data.trackml_export import export_trackml

    try:
        summary = export_trackml(native, output)
    except (OSError, ValueError) as err:  # DataError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trackformers.data.convert", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("trackml", help="TrackML CSV directory")
    t.add_argument("input", help="directory with event<N>-hits/truth/particles.csv")
    t.add_argument("output", help="output directory for shard_NNNNN.root")
    a = sub.add_parser("acts", help="ACTS hits.root + particles.root")
    a.add_argument("hits")
    a.add_argument("particles")
    a.add_argument("output")
    for p in (t, a):
        p.add_argument("--events-per-file", type=int, default=100)
        p.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    x = sub.add_parser("trackml-export", help="native ROOT files -> TrackML CSV directory")
    x.add_argument("input", help="native file, directory of *.root files or glob")
    x.add_argument("output", help="output directory for event<N>-hits/cells/particles/truth.csv")
    args = parser.parse_args(argv)
    if args.kind == "trackml-export":
        return _export_main(args.input, args.output)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    repairs = RepairLog()
    try:
        if args.kind == "trackml":
            n, files = convert_trackml(
                args.input, args.output, args.events_per_file, args.on_error, repairs
            )
        else:
            n, files = convert_acts(
                args.hits, args.particles, args.output, args.events_per_file, args.on_error, repairs
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
