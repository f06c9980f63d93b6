"""Checkpoints load with weights_only=True (a pickled object is refused, its code never runs);
an empty, truncated or non-checkpoint file is refused naming the path (trackformers.checkpoint,
used by evaluate, inference, latency, export, results and the resume of train)."""

import pathlib

import pytest
import torch
from omegaconf import OmegaConf

from trackformers.checkpoint import (
    CheckpointError,
    check_resume_path,
    load_checkpoint,
    load_checkpoint_file,
)

CFG = {"model": {"_target_": "x"}, "name": "t"}


class Payload:
    """Unpickling this "touches" a marker file: stands for any code a checkpoint could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _good(path):
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "trackformers": {"config": CFG}}, path)
    return path


def _bad_files(tmp_path):
    good = _good(tmp_path / "good.ckpt")
    data = good.read_bytes()
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.ckpt").write_text("model: not a checkpoint\n")
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    return {
        "empty.ckpt": "is empty",
        "truncated.ckpt": "cannot be read",
        "text.ckpt": "is not a torch checkpoint",
        "list.ckpt": "holds a list, not a checkpoint dict",
    }


def test_bad_files_are_refused_naming_the_path(tmp_path):
    for name, why in _bad_files(tmp_path).items():
        path = tmp_path / name
        for load in (load_checkpoint_file, load_checkpoint):
            with pytest.raises(CheckpointError, match=rf"checkpoint {path} .*({why})"):
                load(path)
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_checkpoint(tmp_path / "nothing.ckpt")
    torch.save({"trackformers": {"config": CFG}}, tmp_path / "nostate.ckpt")
    with pytest.raises(CheckpointError, match=r"nostate.ckpt has no 'state_dict'"):
        load_checkpoint(tmp_path / "nostate.ckpt")


def test_a_pickled_object_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "trackformers": {"config": CFG}, "x": Payload(marker)}, evil)
    assert not marker.exists()
    for load in (load_checkpoint_file, load_checkpoint):
        with pytest.raises(
            CheckpointError,
            match=rf"checkpoint {evil} holds a pickled object "
            "that is not on the allow-list",
        ):
            load(evil)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        check_resume_path(str(evil), tmp_path)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # what an unsafe load does: the code runs
    assert marker.exists()


def test_omegaconf_hyper_parameters_are_allowed(tmp_path):
    path = tmp_path / "omega.ckpt"
    cfg = OmegaConf.create({"model": {"_target_": "x", "n": [1, 2]}, "lr": 1e-3})
    torch.save(
        {"state_dict": {"model.w": torch.zeros(1)}, "hyper_parameters": {"config": cfg}}, path
    )
    run_cfg, state = load_checkpoint(path)
    assert run_cfg == {"model": {"_target_": "x", "n": [1, 2]}, "lr": 1e-3}
    assert list(state) == ["model.w"]


def test_resume_path_is_checked_before_training(tmp_path):
    """ckpt_path= of train: a bad file fails first naming the path; 'last' without a
    last.ckpt starts fresh, with one it is checked."""
    _bad_files(tmp_path)
    for name in ("empty.ckpt", "truncated.ckpt", "text.ckpt"):
        with pytest.raises(CheckpointError, match=str(tmp_path / name)):
            check_resume_path(str(tmp_path / name), tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="gone.ckpt"):
        check_resume_path(str(tmp_path / "gone.ckpt"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="list.ckpt holds a list"):
        check_resume_path(str(tmp_path / "list.ckpt"), tmp_path / "run")
    torch.save({"epoch": 1}, tmp_path / "nostate.ckpt")
    with pytest.raises(CheckpointError, match="nostate.ckpt has no 'state_dict'"):
        check_resume_path(str(tmp_path / "nostate.ckpt"), tmp_path / "run")
    check_resume_path(None, tmp_path / "run")
    check_resume_path("last", tmp_path / "run")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"run/checkpoints/last.ckpt is empty"):
        check_resume_path("last", tmp_path / "run")
    check_resume_path(str(_good(tmp_path / "ok.ckpt")), tmp_path / "run")


def test_train_refuses_a_bad_ckpt_path_before_any_work(tmp_path):
    from hydra import compose, initialize_config_dir

    from trackformers.train import train

    repo = pathlib.Path(__file__).resolve().parents[1]
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"ckpt_path={bad}",
                f"data.path={tmp_path / 'none'}",
                f"paths.output_dir={tmp_path / 'run'}",
            ],
        )
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} \(\d+ bytes\) cannot be read"):
        train(cfg)
