"""Training on fresh events without files: an iterable torch Dataset that simulates on the fly.

Each DataLoader worker builds its own :class:`~trackformers.sim.events.EventFactory` (Pythia is
initialised inside the worker) and makes the events whose index falls to it (under DDP each
rank first takes its own run of the epoch's indices, data/sharding.py), so workers and ranks
never duplicate events and the stream is reproducible: event ``i`` of epoch ``e`` is the dataset
event ``offset + e * n_events + i`` of the same settings, identical to what
``python -m trackformers.simulate`` would write for that index.

    ds = SimulatedEventStream(settings, n_events=10_000)   # settings as in conf/simulate.yaml
    loader = DataLoader(ds, batch_size=None, num_workers=4)   # yields event dicts
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from trackformers.data.sharding import check_enough, rank_world, run_bounds, worker_slot
from trackformers.sim.events import EventFactory


def _plain(settings) -> dict:
    if hasattr(settings, "_metadata"):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        return OmegaConf.to_container(settings, resolve=True)
    return dict(settings)


class SimulatedEventStream(torch.utils.data.IterableDataset):
    """Yield ``n_events`` simulated event dicts per epoch (``transform(event)`` if given)."""

    def __init__(
        self,
        settings,
        n_events: int,
        *,
        offset: int = 0,
        transform: Callable[[dict], object] | None = None,
    ):
        super().__init__()
        if n_events < 1:
            raise ValueError(f"n_events must be >= 1, got {n_events}")
        self.settings = _plain(settings)
        EventFactory(self.settings)  # check the settings now, in the main process
        self.n_events, self.offset, self.transform = int(n_events), int(offset), transform
        self.epoch = 0
        self._factory: EventFactory | None = None

    def __getstate__(self) -> dict:
        # a worker builds its own factory (Pythia objects cannot be pickled)
        return {**self.__dict__, "_factory": None}

    def set_epoch(self, epoch: int) -> None:
        """Use fresh events in every epoch (call before iterating, e.g. from a callback).

        Args:
            epoch: the epoch; it enters the events' seed.
        """
        self.epoch = int(epoch)

    def _run(self) -> tuple[int, int]:
        """[lo, hi): this DDP rank's event indices of an epoch (all of them outside DDP)."""
        rank, world = rank_world()
        check_enough(self.n_events, world, None)
        return run_bounds(self.n_events, rank, world)

    def __len__(self) -> int:
        lo, hi = self._run()
        return hi - lo

    def __iter__(self) -> Iterator:
        worker, n_workers = worker_slot()
        lo, hi = self._run()
        if self._factory is None:
            self._factory = EventFactory(self.settings)
        base = self.offset + self.epoch * self.n_events
        for i in range(lo + worker, hi, n_workers):
            event = self._factory.event(base + i)
            yield self.transform(event) if self.transform is not None else event
