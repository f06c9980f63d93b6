"""Benchmark harness: the environment a number was measured in, timers, JSON result rows.

Every speed or memory number (``benchmarks/``, ``trackformers.latency``) records where it
was measured with ``environment(device)`` and times with one of:

- ``stamp`` / ``elapsed_ms``: time stamps on the device's stream (CUDA events) or the wall
  clock, for splitting one run into stages without a sync between them;
- ``cuda_ms``: median CUDA-event milliseconds of a call (GPU time of its kernels);
- ``wall_ms``: median wall milliseconds of a call from an idle device to its end.

``append_rows`` appends result rows as JSON lines to a results file, so that runs of several
commands (or machines) collect in one place.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from trackformers.paths import REPO_ROOT


def device_name(device: str | torch.device | None = None) -> str:
    """The CUDA device's name (``torch.cuda.get_device_name``) or "CPU"; None: the device a
    run would take (CUDA when available).

    Args:
        device: the device (None: CUDA when available).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def _triton_version() -> str | None:
    try:
        import triton  # optional: not installed off Linux
    except ImportError:
        return None
    return triton.__version__


def _commit() -> str | None:
    """``git describe --always --dirty`` of the repository (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def environment(device: str | torch.device | None = None) -> dict:
    """Where and with what a number is measured: device name, library versions, CPU count,
    date and the code's commit (``-dirty``: uncommitted changes).

    Args:
        device: the measured device (None: CUDA when available).

    Returns:
        ``device``, ``torch``, ``cuda``, ``triton``, ``python``, ``cpus``, ``date``, ``commit``.
    """
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _triton_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
    }


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA).

    Args:
        device: the device.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def stamp(cuda: bool):
    """A time stamp: a CUDA event recorded on the current stream (``cuda``), else the wall
    clock; ``elapsed_ms`` of two stamps of one kind.

    Args:
        cuda: a CUDA event (True) or the wall clock.

    Returns:
        The event, or ``time.perf_counter()``.
    """
    if cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


def elapsed_ms(a, b) -> float:
    """Milliseconds between two ``stamp`` s (CUDA events: after a sync that reached ``b``).

    Args:
        a: the first stamp.
        b: the second stamp.
    """
    if isinstance(a, torch.cuda.Event):
        return a.elapsed_time(b)
    return 1e3 * (b - a)


def cuda_ms(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median milliseconds between CUDA events around ``fn()`` (after ``warmup`` calls).

    Args:
        fn: the timed call.
        repeat: timed calls.
        warmup: untimed calls first.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        a = stamp(True)
        fn()
        b = stamp(True)
        torch.cuda.synchronize()
        times.append(elapsed_ms(a, b))
    return statistics.median(times)


def wall_ms(fn: Callable[[], object], device: str | torch.device, reps: int = 50) -> float:
    """Median wall milliseconds of ``fn()`` from an idle device to its end (synced both
    sides), after one warm-up call.

    Args:
        fn: the timed call.
        device: the device synchronised around it.
        reps: timed calls.
    """
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping]) -> Path:
    """Append ``rows`` to the results file ``path`` as JSON lines (one object per line, made
    with ``default=str`` for paths, dtypes and devices); returns the path.

    Args:
        path: the results file (created with its folder).
        rows: result rows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(dict(row), default=str) + "\n")
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a results file written by ``append_rows``; a line that is not a JSON
    object is refused naming the file and the line number.

    Args:
        path: the results file.

    Raises:
        ValueError: a line that is not a JSON object.
    """
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{i}: not a JSON row ({err})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: a row must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
