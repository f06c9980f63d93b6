"""A training process killed (SIGKILL) mid-epoch resumes from last.ckpt with ckpt_path=last and
continues with the same global steps, the same data order and the same final weights as an
uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 20


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume_data")
    write_events(d / "events.root", helix_events(60, seed=5, n_particles=10), {"test": True})
    return d


def overrides(data_dir, run_dir, log_path, *extra):
    return [
        "experiment=demo_tiny",
        f"data.path={data_dir}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.1",
        "data.class_bins=null",
        "data.num_classes=null",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        f"trainer.max_steps={MAX_STEPS}",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        "+callbacks.batch_log._target_=trackformers.callbacks.batch_order.BatchOrderLog",
        f"+callbacks.batch_log.path={log_path}",
        *extra,
    ]


def command(args):
    return [sys.executable, "-m", "trackformers.train", *args]


def read_log(path):
    """[(global_step, epoch, batch_idx, event_ids)] per training batch."""
    return [tuple(line.split()) for line in Path(path).read_text().splitlines()]


def weights(ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return state["global_step"], state["state_dict"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.run(
        command(overrides(tiny_data, ref_dir, tmp_path / "ref.log")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr[-4000:]
    ref_log = read_log(tmp_path / "ref.log")
    assert len(ref_log) == MAX_STEPS

    # the same run, killed with SIGKILL right after the step-4 checkpoint is on disk
    killed_log = tmp_path / "killed.log"
    proc = subprocess.Popen(
        command(overrides(tiny_data, run_dir, killed_log)),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if killed_log.exists() and len(read_log(killed_log)) >= 6:  # step 5 has started
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ckpt_step, _ = weights(run_dir / "checkpoints" / "last.ckpt")
    assert 4 <= ckpt_step < MAX_STEPS and ckpt_step % 4 == 0
    step_line = next(line for line in ref_log if int(line[0]) == ckpt_step)
    assert int(step_line[2]) > 0, "checkpoint must be mid-epoch for this test"

    resumed = subprocess.run(
        command(overrides(tiny_data, run_dir, tmp_path / "resumed.log", "ckpt_path=last")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    resumed_log = read_log(tmp_path / "resumed.log")
    assert int(resumed_log[0][0]) == ckpt_step  # continues at the next step, not from 0
    assert read_log(killed_log)[:ckpt_step] + resumed_log == ref_log  # same steps, same batches

    ref_step, ref_w = weights(ref_dir / "checkpoints" / "last.ckpt")
    run_step, run_w = weights(run_dir / "checkpoints" / "last.ckpt")
    assert ref_step == run_step == MAX_STEPS
    for k in ref_w:
        torch.testing.assert_close(run_w[k], ref_w[k], rtol=1e-5, atol=1e-6)
