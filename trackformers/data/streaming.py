"""Packed batches from freshly generated events (no files): trackformers.sim.stream underneath.

``GeneratedBatchStream`` wraps :class:`trackformers.sim.stream.SimulatedEventStream` (which
splits event indices over DataLoader workers) and packs consecutive events into PackedBatches
by token budget. Train, validation and test draw disjoint event indices: train uses
``[e * n_train, (e + 1) * n_train)`` in epoch e (fresh events every epoch, after
``set_epoch``), validation and test fixed ranges starting at ``EVAL_OFFSET``.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import IterableDataset

from trackformers.data.batch import PackedBatch
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import pack_events
from trackformers.sim.settings import default_settings as simulate_defaults
from trackformers.sim.stream import SimulatedEventStream

EVAL_OFFSET = 1 << 40  # validation/test event indices start here, far beyond training epochs


def default_settings(process: str = "gun") -> dict:
    """conf/simulate.yaml with conf/simulate/process/<process>.yaml (and the default vertex
    group), as a plain dict: what ``python -m trackformers.simulate process=<process>`` uses.

    Args:
        process: process config name.
    """
    return simulate_defaults(process=process)


class GeneratedBatchStream(IterableDataset):
    """PackedBatches of ``n_events`` simulated events per pass (see the module docstring)."""

    def __init__(
        self,
        settings: dict,
        n_events: int,
        features: FeatureConfig,
        max_tokens: int,
        offset: int = 0,
        fresh_each_epoch: bool = True,
        max_events_per_batch: int | None = None,
    ):
        self.events = SimulatedEventStream(settings, n_events, offset=offset)
        self.features = features
        self.max_tokens = int(max_tokens)
        self.fresh_each_epoch = fresh_each_epoch
        self.max_events_per_batch = max_events_per_batch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: fresh events every epoch when ``fresh_each_epoch``.

        Args:
            epoch: the epoch.
        """
        if self.fresh_each_epoch:
            self.events.set_epoch(epoch)

    def __iter__(self) -> Iterator[PackedBatch]:
        buffer: list[dict] = []
        tokens = 0
        for event in self.events:
            n = len(event["hit_x"])
            full = (
                self.max_events_per_batch is not None and len(buffer) >= self.max_events_per_batch
            )
            if buffer and (tokens + n > self.max_tokens or full):
                yield pack_events(buffer, self.features)
                buffer, tokens = [], 0
            buffer.append(event)
            tokens += n
        if buffer:
            yield pack_events(buffer, self.features)


def generated_datasets(
    settings: dict | None,
    features: FeatureConfig,
    max_tokens: int,
    n_train: int,
    n_val: int,
    n_test: int,
    max_events_per_batch: int | None = None,
) -> dict:
    """{"train", "val", "test"} GeneratedBatchStreams over disjoint event indices.

    Args:
        settings: simulate settings (None: :func:`default_settings`).
        features: the feature configuration.
        max_tokens: hits per batch.
        n_train: training events per epoch.
        n_val: validation events.
        n_test: test events.
        max_events_per_batch: events per batch at most.
    """
    settings = settings if settings is not None else default_settings()
    kw = dict(features=features, max_tokens=max_tokens, max_events_per_batch=max_events_per_batch)
    return {
        "train": GeneratedBatchStream(settings, n_train, offset=0, **kw),
        "val": GeneratedBatchStream(
            settings, n_val, offset=EVAL_OFFSET, fresh_each_epoch=False, **kw
        ),
        "test": GeneratedBatchStream(
            settings, n_test, offset=EVAL_OFFSET + n_val, fresh_each_epoch=False, **kw
        ),
    }
