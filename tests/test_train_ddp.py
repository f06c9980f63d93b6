"""Two-process DDP on CPU (gloo) through the real CLI: both ranks train on disjoint events,
one Hydra run directory, one wandb run, one set of checkpoints."""

import os
import subprocess
import sys

import pytest
import torch

from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events


@pytest.mark.slow
def test_ddp_two_cpu_processes_share_one_run_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_events(data / "a.root", helix_events(30, seed=1, n_particles=10), {"test": True})
    write_events(data / "b.root", helix_events(30, seed=2, first_id=100, n_particles=10),
                 {"test": True})  # fmt: skip
    work = tmp_path / "work"  # the run dir comes from the default pattern under this cwd
    work.mkdir()
    args = [
        "experiment=demo_tiny", f"data.path={data}", "data.val_fraction=0.2",
        "data.test_fraction=0.1", "data.class_bins=null", "data.num_classes=null",
        "data.chunk_bytes=20000", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.strategy=ddp", "+trainer.use_distributed_sampler=false",
        "trainer.max_steps=6", "+callbacks.batch_log._target_=trackformers.train.BatchOrderLog",
        f"+callbacks.batch_log.path='{tmp_path}/rank{{rank}}.log'",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = list((work / "outputs" / "demo_tiny").iterdir())
    assert len(runs) == 1, runs  # no second run dir from rank 1
    run = runs[0]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 6
    logs = [(tmp_path / f"rank{r}.log").read_text().splitlines() for r in (0, 1)]
    assert len(logs[0]) == len(logs[1]) == 6  # equal batch counts, in lockstep
    ids = [{i for line in log for i in line.split()[3].split(",")} for log in logs]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # each rank saw its own events
    assert "val/trackml_score" in proc.stdout
