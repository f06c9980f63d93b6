"""``last.ckpt`` at the end of ``fit``: the state a resume (``ckpt_path=last``) goes on from."""

from __future__ import annotations

from pathlib import Path

import torch

from trackformers.checkpoint import load_checkpoint_file
from trackformers.io_atomic import atomic_path
from trackformers.models.module import TrackFormerModule
from trackformers.resume import LastCheckpoint, TrainClock


def save_final_checkpoint(trainer, module: TrackFormerModule, path: Path) -> None:
    """``last.ckpt`` of the end of ``fit``, with what came after the last step.

    Where LastCheckpoint wrote it inside the last step (fit stopped there: max_steps,
    max_time), that file is kept, so a resume goes on with the next batch of the epoch; the
    training clock (which has counted the validation Lightning runs at a stop) and the
    clustering tuned in ``on_fit_end`` are put into it. Otherwise (the epoch ended) the
    trainer's state is saved.

    Args:
        trainer: the Lightning trainer after ``fit``.
        module: the trained module (its tuned clustering).
        path: the run's checkpoints/last.ckpt.
    """
    inside = [cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
    if not any(cb.path == path and cb.saved_step == trainer.global_step for cb in inside):
        trainer.save_checkpoint(path)
        return
    if trainer.is_global_zero:
        state = load_checkpoint_file(path)
        for cb in trainer.callbacks:
            if isinstance(cb, TrainClock):
                state.setdefault("callbacks", {})[cb.state_key] = cb.state_dict()
        if module.tuned_clustering is not None:
            state["clustering"] = dict(module.tuned_clustering)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    trainer.strategy.barrier("save_final_checkpoint")
