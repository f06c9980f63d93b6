"""Let ``kill`` (SIGTERM) unwind like Ctrl-C, so ``finally`` blocks remove temporary files.

Python turns SIGINT into ``KeyboardInterrupt``, which runs every ``finally`` on its way out;
SIGTERM, by default, ends the process at once and leaves temporary files behind. Inside
:func:`sigterm_unwinds`, SIGTERM raises ``SystemExit(143)`` (128 + 15, the shell's code for a
process ended by SIGTERM) instead, so the same cleanup runs and the exit status is unchanged.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def _raise_exit(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)``; the old handler is restored after.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    Processes forked inside the block inherit the handler, so pool workers clean up too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        if old is not None:  # None: the old handler was not installed from Python
            signal.signal(signal.SIGTERM, old)
