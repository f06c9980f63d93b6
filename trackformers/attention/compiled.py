"""torch.compile and CUDA graphs for the plan builders on CUDA, eager elsewhere.

Plan building is a few dozen small tensor ops; on a GPU their launch overhead, not their
work, dominates. ``on_device(fn)`` returns a callable that runs ``torch.compile(fn,
dynamic=True)`` (one compile for every event size) when its first tensor argument is on
CUDA and ``ENABLED`` is set, and ``fn`` itself otherwise. A compile failure is reported
once as a warning and the eager function is used from then on (same results, slower).

``captured(key, make_inputs, fn)`` goes further for static-shaped, sync-free programs: it
captures ``fn(*inputs) -> dict[str, Tensor]`` once per key as a CUDA graph on static input
buffers (warm-up, which also compiles, on a side stream first); ``CapturedGraph.run()``
replays it and returns fresh clones of the outputs (packed into one buffer of int32 words
inside the graph, so the clone is one copy), so results never alias the next replay.
A capture failure is warned about once per key and variant; if no variant captures,
``captured`` returns None (the caller then runs the program eagerly).
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
GRAPH_VARIANTS = (True, False)  # capture with compiled steps, and without; keep the faster
MAX_GRAPHS = 32  # captured graphs kept, least recently used dropped first (~10-20 MB each)
_GRAPHS: OrderedDict = OrderedDict()


def stream_capturing() -> bool:
    """True while the current CUDA stream records a graph (False without CUDA).

    Returns:
        Whether a CUDA graph capture is in progress on the current stream.
    """
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _first_tensor(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, list | tuple) and (t := _first_tensor(a)) is not None:
            return t
    return None


def on_device(fn):
    """Wrap a plan builder: compiled on CUDA, eager elsewhere (see the module docstring).

    Args:
        fn: the function; its first tensor argument decides the device.

    Returns:
        A callable with ``fn``'s signature; ``.eager`` is ``fn`` itself.
    """
    compiled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal compiled
        first = _first_tensor(args)
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


ALIGN = 16  # elements: every packed output starts 16-element aligned (kernels assume it)


def _word(dtype: torch.dtype) -> torch.dtype:
    """Buffer dtype of an output: int32 words for 4- and 8-byte dtypes (one buffer, viewed
    back), the dtype itself otherwise."""
    return torch.int32 if dtype.itemsize in (4, 8) else dtype


def _pack(out: dict) -> tuple[list, list]:
    """Flatten a dict of tensors into as few buffers as possible (one for the int32/int64
    outputs of the plan programs: one clone per replay), each part ALIGN elements of its own
    dtype aligned; returns (layout, buffers) with layout[i] = [(name, shape, dtype, words,
    padding words)] of buffer i."""
    words = sorted({_word(t.dtype) for t in out.values()}, key=str)
    layout, buffers = [], []
    for w in words:
        entries, parts = [], []
        for name, t in out.items():
            if _word(t.dtype) != w:
                continue
            raw = t.contiguous().view(-1).view(w)  # (words,)
            pad = -raw.numel() % (ALIGN * 8 // w.itemsize)  # aligned for 8-byte views too
            entries.append((name, tuple(t.shape), t.dtype, raw.numel(), pad))
            parts += [raw, raw.new_empty(pad)]  # padding is never read
        layout.append(entries)
        buffers.append(torch.cat(parts))
    return layout, buffers


def _unpack(layout: list, buffers: list, n: int = 0, cut: tuple = ()) -> dict:
    """Views of the packed outputs; 1-D outputs named in ``cut`` are cut to their first n
    entries (one split per buffer does it all: views are what costs host time here)."""
    out = {}
    for entries, buf in zip(layout, buffers, strict=True):
        split = []
        for name, _, dtype, size, pad in entries:
            keep = n * (dtype.itemsize // buf.dtype.itemsize) if name in cut else size
            split += [keep, size - keep + pad]
        parts = buf.split_with_sizes(split)
        for i, (name, shape, dtype, _, _) in enumerate(entries):
            part = parts[2 * i] if dtype == buf.dtype else parts[2 * i].view(dtype)
            out[name] = part if len(shape) == 1 or name in cut else part.view(shape)
    return out


class CapturedGraph:
    """One CUDA graph of fn on static input buffers (``inputs``); ``run()`` -> fresh outputs."""

    def __init__(self, fn, inputs: tuple):
        self.inputs = inputs
        self.graph = None
        self.replay_ms = float("nan")
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
        # thread_local: CUDA calls of other threads (the DataLoader's pin-memory thread
        # allocating pinned host memory) may go on during the capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self._layout, self._buffers = _pack(fn(*inputs))
        times = []
        for _ in range(4):  # GPU time of one replay (first one warms up)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        self.replay_ms = min(times[1:])

    def run(self, n: int = 0, cut: tuple = ()) -> dict:
        """Replay; fresh copies of the outputs, those named in cut cut to n entries.

        Args:
            n: entries kept of the outputs named in ``cut``.
            cut: names of the outputs to cut to ``n`` entries (the rest are pads).

        Returns:
            Output name -> tensor (clones, never aliasing the graph's buffers).
        """
        if self.graph is None:
            self._layout, self._buffers = _pack(self._fn(*self.inputs))
        else:
            self.graph.replay()
        return _unpack(self._layout, [b.clone() for b in self._buffers], n, cut)


def captured(key, make_inputs, fn) -> CapturedGraph | None:
    """The CapturedGraph of key, or None if capturing failed (warned once per key).

    Built on first use from make_inputs() and fn, once per entry of GRAPH_VARIANTS (compiled
    steps on / off, i.e. ENABLED); the variant whose replay is fastest is kept (both give
    identical results; which wins depends on the GPU and the program).

    Args:
        key: hashable key of the program (function, kind, device, shapes, statics).
        make_inputs: () -> input tensors, called once to make the static buffers.
        fn: the program, (*inputs) -> dict[str, Tensor].

    Returns:
        The captured graph, or None.
    """
    global ENABLED
    if key in _GRAPHS:
        _GRAPHS.move_to_end(key)
        return _GRAPHS[key]
    best, saved, timings = None, ENABLED, {}
    for variant in GRAPH_VARIANTS:
        ENABLED = saved and variant
        try:
            graph = CapturedGraph(fn, make_inputs())
            graph.variant = "compiled" if ENABLED else "eager"
        except Exception as err:  # capture problem: keep working, loudly
            warnings.warn(
                f"CUDA-graph capture of {key[0]} ({'compiled' if ENABLED else 'eager'}) failed "
                f"({type(err).__name__}: {err})",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        finally:
            ENABLED = saved
        timings[graph.variant] = graph.replay_ms
        if best is None or graph.replay_ms < best.replay_ms:
            best = graph
    if best is not None:
        best.variant_ms = timings  # replay GPU ms of every variant captured (benchmarks)
    _GRAPHS[key] = best
    while len(_GRAPHS) > MAX_GRAPHS:
        _GRAPHS.popitem(last=False)
    return best
