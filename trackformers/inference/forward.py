"""The eager forward of a TrackFormer at inference: a packed batch (and its attention plan)
-> float32 outputs, with autocast on CUDA in the precision asked for.

Precision names (``amp_precision``): "fp16" (float16 autocast, the default of inference),
"bf16" (bfloat16 autocast; also ``True``), "fp32" (no autocast; also ``False``). A CPU
forward is always float32.
"""

from __future__ import annotations

import contextlib

import torch

from trackformers.attention.base import AttentionPlan
from trackformers.data.batch import PackedBatch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def amp_precision(amp: bool | str) -> str:
    """The forward precision named by ``amp``: True = "bf16" (autocast), False = "fp32", or one
    of ``AMP_DTYPES`` ("fp16": float16 autocast, 3 more mantissa bits than bf16).

    Args:
        amp: True, False or a name of ``AMP_DTYPES``.

    Returns:
        ``bf16``, ``fp16`` or ``fp32``.

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(amp, bool):
        return "bf16" if amp else "fp32"
    if amp not in AMP_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AMP_DTYPES)} (or a bool), got {amp!r}")
    return amp


def autocast(device: torch.device, amp: bool | str, cache: bool = True):
    """The autocast context of precision ``amp`` on ``device`` (a no-op off CUDA or in fp32).

    Args:
        device: the model's device.
        amp: the precision (see :func:`amp_precision`).
        cache: autocast's weight cache (off inside CUDA-graph captures).

    Returns:
        A context manager.
    """
    dtype = AMP_DTYPES[amp_precision(amp)]
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype, cache_enabled=cache)


@torch.no_grad()
def forward_batch(
    model,
    batch: PackedBatch,
    plan: AttentionPlan | None = None,
    amp: bool | str = "fp16",
    cache: bool = True,
    forward=None,
):
    """(float32 outputs, plan) of the model on a packed batch; on CUDA with autocast in the
    precision ``amp`` names (``amp_precision``; fp16 by default), float32 on the CPU.

    ``forward(batch, plan)``: another forward of the same model (e.g. ``CompiledForward``).

    Args:
        model: the TrackFormer.
        batch: the packed batch, on the model's device.
        plan: the attention plan (None: the model builds it).
        amp: the precision (see :func:`amp_precision`).
        cache: autocast's weight cache.
        forward: the forward to call (None: the model's own).

    Returns:
        Output name -> float32 tensor, and the plan used.
    """
    if plan is None:
        plan = model.encoder.build_plan(batch)
    with autocast(batch.x.device, amp, cache):
        out = (forward or model)(batch, plan)
    return {k: v.float() for k, v in out.items()}, plan
