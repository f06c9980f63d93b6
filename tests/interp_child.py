"""Interpreter tests in a child process.

Triton runs its kernels on the CPU only when ``TRITON_INTERPRET=1`` is set before triton is
imported, so a test file with such kernels runs its checks in a child (``python <file>``)
whose ``__main__`` prints one JSON report; the module-scoped ``report`` fixture reads it once.
Each check's result, or its traceback, is stored under its name with its time in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback


class Checks:
    """In the child: ``checks(name, fn)`` stores fn()'s result (or the traceback) in
    ``checks.report[name]`` and its wall seconds in ``checks.report["seconds"][name]``."""

    def __init__(self):
        self.report: dict = {}

    def __call__(self, name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            self.report[name] = fn()
        except Exception:
            self.report[name] = traceback.format_exc()
        self.report.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 2)


def run_child(path: str, timeout: float = 300) -> dict:
    """The report printed (last stdout line, JSON) by ``python path`` under the interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "WANDB_MODE": "disabled"}
    res = subprocess.run(
        [sys.executable, path], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def ok(value):
    """A check's result, failing with its traceback when the check raised."""
    assert not isinstance(value, str) or "Traceback" not in value, value
    return value
