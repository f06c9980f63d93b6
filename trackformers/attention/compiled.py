"""torch.compile and CUDA graphs for the plan builders on CUDA, eager elsewhere.

Plan building is a few dozen small tensor ops; on a GPU their launch overhead, not their
work, dominates. ``on_device(fn)`` returns a callable that runs ``torch.compile(fn,
dynamic=True)`` (one compile for every event size) when its first tensor argument is on
CUDA and ``ENABLED`` is set, and ``fn`` itself otherwise. A compile failure is reported
once as a warning and the eager function is used from then on (same results, slower).

``captured(key, make_inputs, fn)`` goes further for static-shaped, sync-free programs: it
captures ``fn(*inputs) -> dict[str, Tensor]`` once per key as a CUDA graph on static input
buffers (warm-up, which also compiles, on a side stream first); ``CapturedGraph.run()``
replays it and returns fresh clones of the outputs (packed into one buffer per dtype inside
the graph, so the clone is one copy per dtype), so results never alias the next replay.
A capture failure is warned about once per key and ``captured`` returns None (the caller
then runs the program eagerly).
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict

import torch

ENABLED = True
DEVICES = ("cuda",)  # device types that get the compiled version
_BROKEN: set[str] = set()
GRAPH_DEVICES = ("cuda",)  # device types whose static plan programs are captured as graphs
MAX_GRAPHS = 64  # captured graphs kept (least recently used dropped first)
_GRAPHS: OrderedDict = OrderedDict()


def stream_capturing() -> bool:
    """True while the current CUDA stream records a graph (False without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


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
            or (compiled is None and stream_capturing())  # never compile inside a capture
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


def _pack(out: dict) -> tuple[list, list]:
    """Flatten a dict of tensors into one buffer per dtype; returns (layout, buffers) with
    layout[i] = (sizes, [(name, shape)]) of buffer i."""
    dtypes = sorted({t.dtype for t in out.values()}, key=str)
    groups = [[(k, t) for k, t in out.items() if t.dtype == d] for d in dtypes]
    layout = [([t.numel() for _, t in g], [(k, tuple(t.shape)) for k, t in g]) for g in groups]
    return layout, [torch.cat([t.reshape(-1) for _, t in g]) for g in groups]


def _unpack(layout: list, buffers: list) -> dict:
    out = {}
    for (sizes, names), buf in zip(layout, buffers, strict=True):
        for part, (name, shape) in zip(buf.split(sizes), names, strict=True):
            out[name] = part if len(shape) == 1 else part.view(shape)
    return out


class CapturedGraph:
    """One CUDA graph of fn on static input buffers (``inputs``); ``run()`` -> fresh outputs."""

    def __init__(self, fn, inputs: tuple):
        self.inputs = inputs
        self.graph = None
        if inputs[0].device.type != "cuda":  # no graphs: same buffers and clones (tests)
            self._fn = fn
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compile, autotune, allocator
            for _ in range(2):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._layout, self._buffers = _pack(fn(*inputs))

    def run(self) -> dict:
        if self.graph is None:
            self._layout, self._buffers = _pack(self._fn(*self.inputs))
        else:
            self.graph.replay()
        return _unpack(self._layout, [b.clone() for b in self._buffers])


def captured(key, make_inputs, fn) -> CapturedGraph | None:
    """The CapturedGraph of key (built on first use from make_inputs() and fn), or None if
    capturing failed (warned once per key)."""
    if key in _GRAPHS:
        _GRAPHS.move_to_end(key)
        return _GRAPHS[key]
    try:
        graph = CapturedGraph(fn, make_inputs())
    except Exception as err:  # capture problem: keep working, loudly
        warnings.warn(
            f"CUDA-graph capture of {key[0]} failed ({type(err).__name__}: {err}); "
            "running it eagerly",
            RuntimeWarning,
            stacklevel=3,
        )
        graph = None
    _GRAPHS[key] = graph
    while len(_GRAPHS) > MAX_GRAPHS:
        _GRAPHS.popitem(last=False)
    return graph
