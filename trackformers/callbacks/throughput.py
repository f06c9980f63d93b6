"""``ThroughputLog``: training throughput of a run (conf/callbacks/default.yaml ``throughput``).

The result lands in summary.json (``throughput/*``, trackformers.training.summary).
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import Callback


class ThroughputLog(Callback):
    """Training throughput after ``skip_steps`` warm-up steps: events/s and hits/s summed over
    all ranks, and the peak GPU memory of a step. Kept in ``result`` (and summary.json).

    Args:
        skip_steps: warm-up steps (compilation, autotuning) left out of the measurement.
    """

    def __init__(self, skip_steps: int = 5):
        self.skip_steps = int(skip_steps)
        self.result: dict[str, float] = {}
        self._t0: float | None = None
        self._events = self._hits = self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.skip_steps and self._t0 is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self._events += batch.num_events
            self._hits += batch.num_hits
            self._steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self._t0 is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        local = torch.tensor(
            [self._events, self._hits], dtype=torch.float64, device=pl_module.device
        )
        events, hits = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        self.result = {
            "steps": self._steps,
            "seconds": seconds,
            "events_per_s": events / seconds,
            "hits_per_s": hits / seconds,
            "peak_gib_rank0": peak,
            "world_size": trainer.world_size,
        }
