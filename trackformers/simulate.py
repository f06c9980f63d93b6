"""Simulate a dataset: ``python -m trackformers.simulate process=gun n_events=200 output=data/x``.

Events are written as shards ``shard_00000.root`` ... of ``events_per_shard`` events each. A
shard is a pure function of (settings, seed, shard index): shards already present with the same
settings are skipped, so an interrupted run is completed by re-running the same command, and
the same seed gives byte-identical files. Shards run in ``workers`` parallel processes; on a
cluster, run disjoint ``shards=[i,j,...]`` subsets as array jobs.

On resume an existing shard counts as done only when every one of its events reads back; a
truncated or damaged shard is simulated again (logged with the reason). Ctrl-C and ``kill``
(SIGTERM) both remove the hidden temporary directory of the shard being written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from trackformers import __version__
from trackformers.config_checks import check_simulate_config
from trackformers.data.schema import TREE_NAME
from trackformers.paths import CONF_DIR
from trackformers.signals import sigterm_unwinds
from trackformers.sim.events import EventFactory
from trackformers.sim.writer import check_writable, read_metadata, write_events

log = logging.getLogger("trackformers.simulate")


GROUPS = ("process", "vertex")  # config groups under conf/simulate/


def _register_simulate_groups() -> None:
    """Expose conf/simulate/<group>/*.yaml as Hydra groups (``process=ttbar``, ``vertex=hllhc``)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for group in GROUPS:
        for f in sorted((CONF_DIR / "simulate" / group).glob("*.yaml")):
            cs.store(group=group, name=f.stem, node=OmegaConf.load(f))


def default_settings(**choices: str | None) -> dict:
    """conf/simulate.yaml with its groups composed, as Hydra would, but without Hydra's state.

    Usable inside a running Hydra app (e.g. the training DataModule), where a second Hydra
    initialisation is not allowed.

    Args:
        choices: group selections overriding the defaults list, e.g. ``process="ttbar"``,
            ``vertex="hllhc"``; None keeps the default.

    Returns:
        The plain settings dict (``hydra`` and ``defaults`` removed).
    """
    from omegaconf import OmegaConf

    base = OmegaConf.load(CONF_DIR / "simulate.yaml")
    picks = {}
    for entry in base.pop("defaults", []):
        if isinstance(entry, str):  # _self_
            continue
        ((group, name),) = dict(entry).items()
        picks[group] = name
    unknown = sorted(set(choices) - set(picks))
    if unknown:
        raise ValueError(f"unknown simulate config group(s) {unknown}; groups: {sorted(picks)}")
    picks.update({k: v for k, v in choices.items() if v is not None})
    base.pop("hydra", None)
    for group, name in picks.items():
        path = CONF_DIR / "simulate" / group / f"{name}.yaml"
        if not path.is_file():
            known = sorted(f.stem for f in path.parent.glob("*.yaml"))
            raise ValueError(f"unknown {group} {name!r}; choose one of {known}")
        base[group] = OmegaConf.merge(OmegaConf.load(path), base.get(group) or {})
    return OmegaConf.to_container(base, resolve=True)


def _plain(cfg) -> dict:
    if isinstance(cfg, Mapping) and not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(cfg))


_NOT_CONTENT = ("n_events", "output", "workers", "progress", "shards", "hydra", "compression")


def content_settings(settings: dict) -> dict:
    """The settings that determine shard content (not n_events, workers, output, ...).

    Args:
        settings: the resolved simulate config.
    """
    return {k: v for k, v in settings.items() if k not in _NOT_CONTENT}


def settings_hash(settings: dict) -> str:
    """Digest of :func:`content_settings`: shards with equal digests are interchangeable.

    Args:
        settings: the resolved simulate config.
    """
    blob = json.dumps(content_settings(settings), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Simulation:
    """Everything a shard needs, checked at construction (before any work starts)."""

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


_WORKER_SIM: Simulation | None = None
_WORKER_COUNTER = None  # shared event counter, for the progress bar of the parent


def _init_worker(settings: dict, counter) -> None:
    global _WORKER_SIM, _WORKER_COUNTER
    _WORKER_SIM, _WORKER_COUNTER = Simulation(settings), counter


def _count_event() -> None:
    with _WORKER_COUNTER.get_lock():
        _WORKER_COUNTER.value += 1


def _run_shard(shard: int) -> tuple[int, int]:
    assert _WORKER_SIM is not None
    return shard, _WORKER_SIM.write_shard(shard, on_event=_count_event)


def run(cfg) -> list[Path]:
    """Simulate the dataset described by ``cfg`` (a dict or DictConfig); return shard paths.

    Args:
        cfg: the simulate config.
    """
    with sigterm_unwinds():  # kill cleans up the temporary shard as Ctrl-C does
        return _run(cfg)


def _run(cfg) -> list[Path]:
    from tqdm import tqdm

    check_simulate_config(cfg)  # before any file is touched
    settings = _plain(cfg)
    sim = Simulation(settings)  # all checks happen here
    wanted = list(settings.get("shards") or range(sim.n_shards))
    bad = [s for s in wanted if not 0 <= int(s) < sim.n_shards]
    if bad:
        raise ValueError(
            f"shard {bad[0]} does not exist: n_events={settings['n_events']} "
            f"gives shards 0..{sim.n_shards - 1}"
        )
    sim.check_output()
    todo = [s for s in wanted if not sim.existing_ok(s)]
    workers = max(1, int(settings.get("workers", 1)))
    n_todo = sum(len(sim.shard_events(s)) for s in todo)
    bar = tqdm(
        total=n_todo,
        unit="event",
        desc=f"simulate -> {sim.output}",
        disable=not settings.get("progress", True),
        file=sys.stderr,
    )
    if workers == 1 or len(todo) <= 1:
        for s in todo:
            sim.write_shard(s, on_event=lambda: bar.update(1))
    else:
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(
            min(workers, len(todo)), initializer=_init_worker, initargs=(settings, counter)
        ) as pool:
            result = pool.map_async(_run_shard, todo)
            while not result.ready():
                result.wait(0.2)
                bar.update(counter.value - bar.n)
            result.get()  # re-raise a worker's error
            bar.update(counter.value - bar.n)
    bar.close()
    return [sim.shard_path(s) for s in wanted]


def main() -> None:
    """``python -m trackformers.simulate key=value ...`` (Hydra, conf/simulate.yaml)."""
    import hydra

    _register_simulate_groups()

    @hydra.main(config_path=str(CONF_DIR), config_name="simulate", version_base="1.3")
    def _main(cfg) -> None:
        paths = run(cfg)
        print(f"{len(paths)} shard(s) in {Path(cfg.output).resolve()}")

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _main()


if __name__ == "__main__":
    main()
