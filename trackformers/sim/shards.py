"""One shard of a simulated dataset: its events, path, metadata, and whether it is done.

A shard is a pure function of (settings, seed, shard index). :class:`Simulation` checks the
settings once and writes or checks shards; an existing shard counts as done only when it was
made with the same settings (:func:`trackformers.sim.settings.settings_hash`) and every one of
its events reads back (:func:`unreadable_events`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from trackformers import __version__
from trackformers.data.schema import TREE_NAME
from trackformers.sim.events import EventFactory
from trackformers.sim.settings import content_settings, settings_hash
from trackformers.sim.writer import check_writable, read_metadata, write_events

log = logging.getLogger("trackformers.simulate")  # the step's log, whichever module writes it


class Simulation:
    """Everything a shard needs, checked at construction (before any work starts).

    Args:
        settings: the resolved simulate config as a plain dict (conf/simulate.yaml).
    """

    def __init__(self, settings: dict):
        self.settings = settings
        n_events, per = int(settings["n_events"]), int(settings["events_per_shard"])
        if n_events < 0 or per < 1:
            raise ValueError(f"need n_events >= 0 and events_per_shard >= 1, got {n_events}, {per}")
        self.factory = EventFactory(settings)  # checks process, pileup, detector, geometry
        self.generator = self.factory.generator
        self.output = Path(settings["output"])
        check_writable(self.output / "shard_00000.root")
        self.hash = settings_hash(settings)
        self.n_shards = -(-n_events // per)
        available = getattr(self.generator, "n_available", None)
        if available is not None and n_events > available:
            raise ValueError(f"n_events={n_events} but the particle tables hold {available} events")

    def shard_path(self, shard: int) -> Path:
        """Path of shard number ``shard``.

        Args:
            shard: shard number.
        """
        return self.output / f"shard_{shard:05d}.root"

    def shard_events(self, shard: int) -> range:
        """Event indices of shard number ``shard``.

        Args:
            shard: shard number.
        """
        per = int(self.settings["events_per_shard"])
        return range(shard * per, min((shard + 1) * per, int(self.settings["n_events"])))

    def metadata(self, shard: int) -> dict:
        """Metadata stored in a shard: version, settings and their hash, event range, seed.

        Args:
            shard: shard number.
        """
        return {
            "trackformers_version": __version__,
            "settings": content_settings(self.settings),
            "settings_hash": self.hash,
            "shard": shard,
            "events": [self.shard_events(shard).start, self.shard_events(shard).stop],
            "seed": [int(self.settings["seed"]), shard],
            **self.factory.provenance(),
        }

    def check_output(self) -> None:
        """Refuse an output directory holding any shard made with other settings.

        Every ``shard_*.root`` present is checked, not only the shards this run writes, so a
        run of ``shards=[...]`` never adds shards of new settings (for instance new default
        vertex spread or noise) beside old ones: a dataset is one setting, never a mix.
        """
        for path in sorted(self.output.glob("shard_*.root")):
            found = read_metadata(path).get("settings_hash")
            if found != self.hash:
                raise FileExistsError(
                    f"{path} was made with other settings (hash {found} != {self.hash}); "
                    "choose another output directory or delete the old shards"
                )

    def existing_ok(self, shard: int) -> bool:
        """True if the shard exists with these settings and all its events read back.

        A shard that cannot be read (truncated, damaged) is logged and reported as missing,
        so it is simulated again; one made with other settings is an error.

        Args:
            shard: shard number.
        """
        path = self.shard_path(shard)
        if not path.exists():
            return False
        try:
            meta = read_metadata(path)
        except Exception as err:  # uproot raises many types for damaged files
            log.warning("%s is unreadable (%s): simulating shard %d again", path, err, shard)
            return False
        if meta.get("settings_hash") != self.hash or meta.get("events") != [
            self.shard_events(shard).start,
            self.shard_events(shard).stop,
        ]:
            raise FileExistsError(
                f"{path} was made with other settings (hash "
                f"{meta.get('settings_hash')} != {self.hash}); choose another "
                "output directory or delete the old shards"
            )
        problem = unreadable_events(path, len(self.shard_events(shard)))
        if problem:
            log.warning("%s is incomplete (%s): simulating shard %d again", path, problem, shard)
            return False
        return True

    def write_shard(self, shard: int, on_event=None) -> int:
        """Write one shard; ``on_event()`` is called after each event (progress).

        Args:
            shard: shard number.
            on_event: progress callback, called after each event.

        Returns:
            The number of events written.
        """

        def events():
            for i in self.shard_events(shard):
                yield self.factory.event(i)
                if on_event is not None:
                    on_event()

        comp = self.settings.get("compression")  # None: the writer's default codec
        path = self.shard_path(shard)
        return write_events(path, events(), self.metadata(shard), compression=comp)


def unreadable_events(path: str | os.PathLike, n_events: int) -> str | None:
    """Why the shard ``path`` does not hold ``n_events`` readable events, or None if it does.

    Every basket of every branch is read (and decompressed), so a truncated file is caught
    even when its metadata and tree header survived.

    Args:
        path: a native shard file.
        n_events: the number of events the shard should hold.

    Returns:
        None if all events read back, else the reason (entry count or the read error).
    """
    import uproot

    try:
        with uproot.open(path) as f:
            tree = f[TREE_NAME]
            if tree.num_entries != n_events:
                return f"{tree.num_entries} of {n_events} events"
            for _ in tree.iterate(step_size="64 MB"):
                pass
    except Exception as err:
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None
