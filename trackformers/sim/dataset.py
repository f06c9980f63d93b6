"""A simulated dataset: the shards of a settings dict, written in parallel processes.

Shards already present with the same settings are skipped, so an interrupted run is
completed by running it again; ``shards=[i, j, ...]`` writes a subset (array jobs on a
cluster). With ``workers > 1`` each process builds its own :class:`Simulation` and writes
whole shards; the parent shows one progress bar over the events of all of them.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

from trackformers.sim.shards import Simulation

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


def write_dataset(settings: dict) -> list[Path]:
    """Write the shards of ``settings`` that are missing; return the paths of the wanted ones.

    Every check (settings, output directory, shard numbers, shards of other settings) runs
    before the first event is simulated.

    Args:
        settings: the resolved simulate config as a plain dict (``n_events``,
            ``events_per_shard``, ``output``, ``workers``, ``shards``, ``progress``, ...).

    Returns:
        The paths of the wanted shards (all, or those of ``shards``), in that order.
    """
    from tqdm import tqdm

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
