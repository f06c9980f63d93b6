"""torch.compile for the plan builders on CUDA (fewer, fused launches), eager elsewhere.

Plan building is a few dozen small tensor ops; on a GPU their launch overhead, not their
work, dominates. ``on_device(fn)`` returns a callable that runs ``torch.compile(fn,
dynamic=True)`` (one compile for every event size) when its first tensor argument is on
CUDA and ``ENABLED`` is set, and ``fn`` itself otherwise. A compile failure is reported
once as a warning and the eager function is used from then on (same results, slower).
"""

from __future__ import annotations

import functools
import warnings

import torch

ENABLED = True
DEVICES = ("cuda",)  # device types that get the compiled version
_BROKEN: set[str] = set()


def on_device(fn):
    compiled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal compiled
        first = next(a for a in args if isinstance(a, torch.Tensor))
        if (
            not ENABLED
            or first.device.type not in DEVICES
            or fn.__qualname__ in _BROKEN
            or torch.compiler.is_compiling()  # inside an outer torch.compile: let it trace fn
        ):
            return fn(*args, **kwargs)
        if compiled is None:
            compiled = torch.compile(fn, dynamic=True)
        try:
            return compiled(*args, **kwargs)
        except Exception as err:  # compiler problem: keep working, loudly
            _BROKEN.add(fn.__qualname__)
            warnings.warn(
                f"torch.compile of {fn.__qualname__} failed ({type(err).__name__}: {err}); "
                "using the eager version",
                RuntimeWarning,
                stacklevel=2,
            )
            return fn(*args, **kwargs)

    call.eager = fn
    return call
