"""``BatchOrderLog``: the order in which training batches are seen, written to a file.

Enable with ``+callbacks.batch_log._target_=trackformers.callbacks.batch_order.BatchOrderLog
+callbacks.batch_log.path=...``; the resume and DDP tests compare these files.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback


class BatchOrderLog(Callback):
    """Appends ``global_step epoch batch_idx event_ids`` of every training batch to a file
    (one per rank: ``{rank}`` in the path is replaced), an audit of the data order, e.g.
    across a resume.

    Args:
        path: the file to append to; ``{rank}`` is replaced by the global rank.
    """

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        path = Path(self.path.replace("{rank}", str(trainer.global_rank)))
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = ",".join(str(i) for i in batch.event_id.tolist())
        with path.open("a") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch} {batch_idx} {ids}\n")
