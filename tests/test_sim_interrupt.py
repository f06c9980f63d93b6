"""simulate under damage and interruption: a truncated shard is redone on resume, ``kill``
(SIGTERM) leaves no temporary directory, a write failing with EFBIG names the shard."""

import hashlib
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sim_simulate import _cfg

from trackformers.sim.shards import unreadable_events
from trackformers.simulate import run

ROOT = Path(__file__).resolve().parents[1]


def _digest(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _cli(out, tmp_path, *over):
    return [
        sys.executable,
        "-m",
        "trackformers.simulate",
        "process=gun",
        f"output={out}",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *over,
    ]


@pytest.mark.parametrize("keep", [0.3, 0.9])  # tree header lost / only the last baskets lost
def test_resume_redoes_a_truncated_shard(tmp_path, caplog, keep):
    ref = run(_cfg(tmp_path / "ref"))
    paths = run(_cfg(tmp_path / "o"))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: int(len(data) * keep)])
    assert unreadable_events(paths[1], 2) is not None
    assert unreadable_events(paths[0], 2) is None
    assert unreadable_events(paths[0], 3) == "2 of 3 events"
    untouched = [paths[i].stat().st_mtime_ns for i in (0, 2)]
    with caplog.at_level(logging.WARNING, logger="trackformers.simulate"):
        again = run(_cfg(tmp_path / "o"))
    assert "shard_00001.root is incomplete" in caplog.text
    assert "simulating shard 1 again" in caplog.text
    assert [again[i].stat().st_mtime_ns for i in (0, 2)] == untouched
    assert [_digest(p) for p in again] == [_digest(p) for p in ref]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_removes_the_temporary_shard_directory(tmp_path, workers):
    out = tmp_path / "o"
    cmd = _cli(out, tmp_path, "n_events=400000", "events_per_shard=200000", f"workers={workers}")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (out.is_dir() and len(list(out.glob(".shard_*.tmp-*"))) == workers):
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no temporary shard directory appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert sorted(p.name for p in out.iterdir()) == []  # no hidden directory, no half shard


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_file_too_large_names_the_shard(tmp_path):
    out = tmp_path / "o"
    r = subprocess.run(
        _cli(out, tmp_path, "n_events=40", "events_per_shard=40"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert r.returncode != 0
    assert f"File too large: '{out / 'shard_00000.root'}'" in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == []


def test_sigterm_unwinds_raises_systemexit_and_restores_the_handler():
    from trackformers.signals import sigterm_unwinds

    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(SystemExit) as exc, sigterm_unwinds():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this returns
        finally:
            cleaned.append(True)
    assert exc.value.code == 143 and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == before
