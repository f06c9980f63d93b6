"""Common interface of the training losses: ``loss(outputs, batch) -> scalar``.

``outputs`` is the dict a model head returns (``"params"``, ``"logits"``, ``"embedding"``...),
``batch`` the :class:`~trackformers.data.batch.PackedBatch` it was computed from. Every loss
names the output key it reads, so heads and losses are combined in config, not in code.
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_MODES = ("ignore", "negative", "class")


def get_output(outputs: dict[str, Tensor], key: str, loss_name: str) -> Tensor:
    """The model output a loss reads; a KeyError naming the loss and the keys present.

    Args:
        outputs: the model's output dict.
        key: the output key the loss reads.
        loss_name: the loss, for the error message.
    """
    if key not in outputs:
        raise KeyError(
            f"loss {loss_name!r} reads model output {key!r}, but the model returned "
            f"{sorted(outputs)}; set the loss's output_key or pick a matching model head"
        )
    return outputs[key]


def get_target(batch, name: str, loss_name: str) -> Tensor:
    """Per-hit target ``name`` from ``batch.targets`` (first dim total_hits).

    Args:
        batch: the packed batch.
        name: the target's key in ``batch.targets``.
        loss_name: the loss, for the error message.
    """
    if name not in batch.targets:
        raise KeyError(
            f"loss {loss_name!r} needs target {name!r}, but batch.targets holds "
            f"{sorted(batch.targets)}; enable it in the data config or change the loss config"
        )
    return batch.targets[name]


def particle_labels(batch, loss_name: str) -> Tensor:
    """(total_hits,) int64 particle ids, 0 = noise; error if the batch carries no truth.

    Args:
        batch: the packed batch.
        loss_name: the loss, for the error message.
    """
    if batch.particle_id is None:
        raise ValueError(
            f"loss {loss_name!r} needs batch.particle_id (truth particle of each hit), "
            "but the batch has none; load the dataset with truth"
        )
    return batch.particle_id.long()


def check_noise_mode(mode: str, allowed: tuple[str, ...], loss_name: str) -> str:
    """``mode`` when the loss supports it, else a ValueError naming the loss and the modes.

    Args:
        mode: the configured noise handling (one of ``NOISE_MODES``).
        allowed: the modes this loss supports.
        loss_name: the loss, for the error message.
    """
    if mode not in allowed:
        raise ValueError(f"loss {loss_name!r}: noise={mode!r} is not one of {allowed}")
    return mode


def zero_loss(*tensors: Tensor) -> Tensor:
    """A zero that keeps the graph connected (so DDP sees every parameter used).

    Args:
        *tensors: the outputs the loss would have read (at least one).
    """
    return sum((t.sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))
