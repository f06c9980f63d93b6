"""Two-process DDP through the real CLI, on CPU (gloo, Lightning-launched processes) and on two
GPUs (NCCL, gpu-marked): one run directory and one wandb run; each rank trains on its own
equal share of the events every epoch; validation counts every validation event once (the same
metrics as one process validating the same checkpoint); a resume with ckpt_path=last goes on
mid-epoch with the same shares and the training clock going on."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from trackformers.data.dataset import split_of
from trackformers.data.synthetic import helix_event
from trackformers.sim.writer import write_events

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = (0.2, 0.1)


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    """Two files, one chunk each: all validation events in the first. Dealing whole chunks to
    ranks round-robin would leave rank 1 without validation events, and the run would die
    in a mismatched collective."""
    d = tmp_path_factory.mktemp("ddp_data")
    ids = np.arange(400)
    split = split_of(ids, *FRACTIONS)
    val, train = ids[split == 1][:6], ids[split == 0][:34]
    rng = np.random.default_rng(0)
    make = lambda sel: [helix_event(rng, int(i), n_particles=10) for i in sel]  # noqa: E731
    write_events(d / "a.root", make([*val, *train[:14]]), {"test": True})
    write_events(d / "b.root", make(train[14:]), {"test": True})
    return d, {int(i) for i in val}, {int(i) for i in train}


CPU = ["trainer.accelerator=cpu", "trainer.strategy.process_group_backend=gloo"]
GPU = ["trainer.accelerator=gpu", "trainer.precision=32-true"]  # NCCL; fp32: compared with CPU


def overrides(data, run_dir, log, *extra):
    return [
        "experiment=demo_tiny",
        f"data.path={data}",
        f"data.val_fraction={FRACTIONS[0]}",
        f"data.test_fraction={FRACTIONS[1]}",
        "data.class_bins=null",
        "data.num_classes=null",
        "data.max_events_per_batch=1",
        f"hydra.run.dir={run_dir}",
        "trainer=ddp",
        "trainer.devices=2",
        "+callbacks.batch_log._target_=trackformers.callbacks.batch_order.BatchOrderLog",
        f"+callbacks.batch_log.path='{log}'",
        *extra,
    ]


def launch(args, env):
    return subprocess.run(
        [sys.executable, "-m", "trackformers.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def batches(path):
    """[(global_step, epoch, event_ids)] of one rank's batch log."""
    rows = [line.split() for line in Path(path).read_text().splitlines()]
    return [(int(r[0]), int(r[1]), [int(i) for i in r[3].split(",")]) for r in rows]


def val_rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("val/n_events")]


def single_process_validation(data, ckpt, *extra):
    """The validation metrics of ``ckpt`` (the module's, and the logged val/loss) computed by
    one process."""
    from trackformers.checkpoint import register_safe_globals
    from trackformers.training.build import build

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=demo_tiny",
                f"data.path={data}",
                f"data.val_fraction={FRACTIONS[0]}",
                f"data.test_fraction={FRACTIONS[1]}",
                "data.class_bins=null",
                "data.num_classes=null",
                "data.max_events_per_batch=1",
                f"paths.root_dir={REPO}",
                f"paths.output_dir={ckpt.parent}",
                "~logger",
                "callbacks.rich_progress_bar=null",
                "trainer.accelerator=cpu",
                "trainer.devices=1",
                "+trainer.enable_progress_bar=false",
                *extra,
            ],
        )
    register_safe_globals()
    datamodule, module, trainer = build(cfg)
    logged = trainer.validate(
        module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False, weights_only=True
    )
    return {**module.last_val_metrics, "loss": logged[0]["val/loss"]}


@pytest.mark.slow
def test_ddp_two_cpu_processes_shard_validate_and_resume(ddp_data, tmp_path):
    check_ddp_run(ddp_data, tmp_path, CPU, "gloo", loss_rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_two_gpus_shard_validate_and_resume(ddp_data, tmp_path):
    check_ddp_run(ddp_data, tmp_path, GPU, "nccl", loss_rtol=1e-4)


def check_ddp_run(ddp_data, tmp_path, device, backend, loss_rtol):
    data, val_ids, train_ids = ddp_data
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # 17 training events per rank and epoch (one per batch): stop mid-epoch 0 at step 10
    first = launch(
        overrides(data, run, tmp_path / "a{rank}.log", "trainer.max_steps=10", *device), env
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert f"distributed_backend={backend}" in first.stdout + first.stderr
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one wandb run, not one per rank
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 10
    clock = state["callbacks"]["TrainClock"]
    assert clock["device_s"] == pytest.approx(2 * clock["train_s"])  # two processes

    second = launch(
        overrides(
            data, run, tmp_path / "b{rank}.log", "trainer.max_steps=24", "ckpt_path=last", *device
        ),
        env,
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 24

    logs = [batches(tmp_path / f"a{r}.log") + batches(tmp_path / f"b{r}.log") for r in (0, 1)]
    assert [b[0] for b in logs[0]] == [b[0] for b in logs[1]] == list(range(24))  # lockstep
    assert batches(tmp_path / "b0.log")[0][0] == 10  # the resume goes on at step 10
    for epoch in (0, 1):
        shares = [[i for s, e, ids in log if e == epoch for i in ids] for log in logs]
        for share in shares:
            assert len(share) == len(set(share))  # no event twice on a rank in an epoch
            assert set(share) <= train_ids
        assert not set(shares[0]) & set(shares[1])  # disjoint shares
        if epoch == 0:  # a full epoch, across the resume: every training event exactly once
            assert len(shares[0]) == len(shares[1]) == 17
            assert set(shares[0]) | set(shares[1]) == train_ids

    rows = val_rows(run)
    assert len(rows) >= 3  # after step 10 (end of the first call), 17 (epoch end), 24 (end)
    assert all(float(r["val/n_events"]) == len(val_ids) for r in rows)  # all, once
    times = [float(r["time/train_s"]) for r in rows]
    assert times == sorted(times) and times[1] > clock["train_s"]  # the clock went on
    val_s = [float(r["time/val_s"]) for r in rows]
    assert val_s == sorted(val_s) and val_s[-1] > 0
    assert all(
        float(r["time/device_s"]) == pytest.approx(2 * float(r["time/train_s"])) for r in rows
    )

    # the last DDP validation (final weights) against one process validating last.ckpt: the
    # loss is a mean over all 6 events, so a partial or doubled shard would change it
    single = single_process_validation(data, ckpt)
    last = rows[-1]
    assert single["n_events"] == len(val_ids)
    assert float(last["val/loss"]) == pytest.approx(single["loss"], rel=loss_rtol)
    for key in ("dm_efficiency", "fake_rate", "lhc_efficiency", "trackml_score"):
        assert float(last[f"val/{key}"]) == pytest.approx(single[key], abs=1e-6), key
