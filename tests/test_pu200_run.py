"""trackformers.reproduce.pu200_run pieces: which checkpoint a call resumes from, the training
command, the reuse of simulated sets, and the learning curve in GPU-minutes. (The whole path
runs with DRY=1 bash benchmarks/pu200_run.sh: minutes of CPU, not a unit test.)"""

import csv
import json
from argparse import Namespace
from pathlib import Path

import pytest

from trackformers.reproduce import pu200_run


def test_resume_prefers_the_run_directory_then_the_carried_state(tmp_path):
    run, state = tmp_path / "run", tmp_path / "state"
    assert pu200_run.find_resume(run, state) is None  # a fresh run
    state.mkdir()
    (state / "last.ckpt").write_bytes(b"carried")
    (state / "metrics.csv").write_text("step,val/dm_efficiency\n3,0.5\n")
    got = pu200_run.find_resume(run, state)  # a fresh machine: the carried files go in place
    assert got == run / "checkpoints" / "last.ckpt" and got.read_bytes() == b"carried"
    assert (run / "csv" / "metrics.csv").read_text() == (state / "metrics.csv").read_text()
    got.write_bytes(b"newer")  # a warm machine: the run directory's own checkpoint
    assert pu200_run.find_resume(run, state).read_bytes() == b"newer"


def _args(**kw):
    base = dict(
        devices=1,
        accelerator="gpu",
        max_steps=10000,
        val_every=500,
        n_train=1000,
        val_events=32,
        override=["model.encoder.n_layers=4"],
    )
    return Namespace(**{**base, **kw})


def test_training_command():
    one = pu200_run.train_overrides(_args(), Path("/d"), Path("/r"), 300.0, resume=False)
    assert one[: len(pu200_run.RECIPE)] == pu200_run.RECIPE
    assert "loss.terms.contrastive.negatives=topk" in one and "trainer=ddp" not in one
    assert "ckpt_path=last" not in one and one[-1] == "model.encoder.n_layers=4"  # last wins
    assert '+trainer.max_time="00:00:05:00"' in one and "data.val_fraction=0.032" in one
    four = pu200_run.train_overrides(_args(devices=4), Path("/d"), Path("/r"), 3725.0, True)
    assert {"trainer=ddp", "trainer.devices=4", "ckpt_path=last"} <= set(four)
    assert '+trainer.max_time="00:01:02:05"' in four


def test_complete_sets_are_not_simulated_again(tmp_path, monkeypatch):
    sets = {}
    for name, seed in (("train", 1), ("eval", 2)):
        d = tmp_path / name
        d.mkdir()
        (d / ".complete").write_text("4\n")
        sets[name] = (d, 4, seed)

    def no_simulation(*args, **kwargs):
        raise AssertionError("a complete set was simulated again")

    monkeypatch.setattr(pu200_run, "start_sim", no_simulation)
    pu200_run.simulate(Namespace(workers=4), sets, tmp_path / "log")
    (sets["eval"][0] / ".complete").unlink()  # an interrupted set is made anew
    with pytest.raises(AssertionError, match="simulated again"):
        pu200_run.simulate(Namespace(workers=4), sets, tmp_path / "log")


def test_curve_in_gpu_minutes(tmp_path):
    (tmp_path / "run" / "csv").mkdir(parents=True)
    cols = [
        "step",
        "time/train_s",
        "time/device_s",
        "time/val_s",
        "val/dm_efficiency",
        "val/fake_rate",
        "val/trackml_score",
        "train/loss",
    ]
    rows = [
        {"step": 9, "train/loss": 3.0},
        {
            "step": 9,
            "time/train_s": 60,
            "time/device_s": 240,
            "time/val_s": 5,
            "val/dm_efficiency": 0.4,
            "val/fake_rate": 0.1,
            "val/trackml_score": 0.3,
        },
        {
            "step": 19,
            "time/train_s": 120,
            "time/device_s": 480,
            "time/val_s": 10,
            "val/dm_efficiency": 0.5,
            "val/fake_rate": 0.08,
            "val/trackml_score": 0.4,
        },
        {
            "step": 19,
            "time/train_s": 125,
            "time/device_s": 500,
            "time/val_s": 12,  # redone
            "val/dm_efficiency": 0.6,
            "val/fake_rate": 0.07,
            "val/trackml_score": 0.45,
        },
    ]
    with (tmp_path / "run" / "csv" / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    out.mkdir()
    curve = pu200_run.write_curve(tmp_path / "run", out)
    assert [(p["step"], p["device_s"], p["dm"]) for p in curve] == [(9, 240, 0.4), (19, 500, 0.6)]
    assert json.loads((out / "curve.json").read_text()) == curve
    with (out / "curve.csv").open() as f:
        assert [r["train_s"] for r in csv.DictReader(f)] == ["60.0", "125.0"]
    assert (out / "curve.png").stat().st_size > 0
