"""The results table (trackformers.results) from a real tiny run: train (demo_tiny) ->
evaluate -> latency -> bf16 export -> collector; plus its refusals and the goal logic."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from trackformers.checkpoint import load_checkpoint
from trackformers.data.synthetic import helix_events
from trackformers.evaluate import run as evaluate
from trackformers.inference.events import iter_eval_events
from trackformers.inference.latency import (
    STAGES,
    _same_partition,
    measure_latency,
    measure_predictor_latency,
)
from trackformers.inference.loader import build_model
from trackformers.metrics import ratio_err
from trackformers.results.export import export_checkpoint
from trackformers.results.table import (
    goal_status,
    load_row,
    loss_reasons,
    main,
    markdown_breakdowns,
    markdown_table,
)
from trackformers.sim.writer import write_events
from trackformers.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
TABLE_RECO = {"pt_min": 0.9, "abs_eta_max": 4.0}
NO_WANDB = {"wandb": {"enabled": False}, "cluster": {"method": "auto"}, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A demo_tiny training run on helix events and its evaluation on events of another seed."""
    root = tmp_path_factory.mktemp("results")
    data, fresh = root / "data", root / "fresh"
    data.mkdir()
    fresh.mkdir()
    write_events(data / "e.root", helix_events(40, seed=5, n_particles=10), {"test": True})
    write_events(fresh / "e.root", helix_events(6, seed=9, first_id=1000, n_particles=10), {})
    run_dir = root / "run"
    overrides = [
        "experiment=demo_tiny",
        f"data.path={data}",
        "data.val_fraction=0.2",
        "data.class_bins=null",
        "data.num_classes=null",
        "logger=csv",
        "trainer.max_steps=6",
        "+trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(root)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    train(cfg)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    eval_dir = root / "eval"
    metrics = evaluate(
        {
            "ckpt": str(ckpt),
            "output_dir": str(eval_dir),
            "data_path": str(fresh),
            "reconstructable": TABLE_RECO,
            **NO_WANDB,
        }
    )
    return {"root": root, "ckpt": ckpt, "eval": eval_dir, "metrics": metrics, "fresh": fresh}


def test_row_holds_the_evaluation_the_model_and_the_training(tiny_run):
    row = load_row(tiny_run["eval"])
    m = json.loads((tiny_run["eval"] / "metrics.json").read_text())
    for key in (
        "dm_efficiency",
        "perfect_efficiency",
        "fake_rate",
        "duplicate_rate",
        "trackml_score",
        "n_events",
    ):
        assert row[key] == m[key] or (math.isnan(row[key]) and math.isnan(m[key])), key
    n = m["n_reconstructable"]
    assert n > 0 and row["n_reconstructable"] == n
    p = m["dm_efficiency"]
    assert row["dm_efficiency_err"] >= math.sqrt(p * (1 - p) / n) - 1e-12  # at least binomial
    assert row["dm_efficiency_err"] == pytest.approx(
        ratio_err(m["per_event"], "n_dm", "n_reconstructable")
    )
    _, state = load_checkpoint(tiny_run["ckpt"])
    model = build_model(*load_checkpoint(tiny_run["ckpt"]))
    assert row["params"] == sum(q.numel() for q in model.parameters())
    assert row["ckpt_mb"] == pytest.approx(tiny_run["ckpt"].stat().st_size / 2**20)
    summary = json.loads((tiny_run["ckpt"].parents[1] / "summary.json").read_text())
    assert row["train_steps"] == summary["global_step"] == 6
    assert row["train_seconds"] == summary["train_seconds"] > 0
    assert row["train_device"].startswith("CPU")  # write_summary records the device
    assert row["experiment"] == "demo_tiny" and row["detector"] == "full"
    assert row["latency_ms"] is None  # no latency.json yet
    for key in ("efficiency_vs_pt", "efficiency_vs_eta"):
        assert (tiny_run["eval"] / "plots" / f"{key}.png").samefile(row["plots"][key])
    reasons = row["loss_reasons"]
    assert reasons["missed"] == pytest.approx(1 - p)
    assert reasons["unassigned"] + reasons["split"] + reasons["merged"] == pytest.approx(1 - p)
    table = markdown_table([row], rel_to=tiny_run["root"])
    assert f"{100 * p:.2f} ±" in table and "(eval/plots/efficiency_vs_pt.png)" in table
    text = markdown_breakdowns(row)
    assert "pT [GeV]" in text and "η" in text and "split" in text


def test_ratio_err_takes_the_event_to_event_spread():
    ev = lambda k, n: {"k": k, "n": n}  # noqa: E731
    # two events of equal size, efficiencies 0.2 and 0.8: the pooled 0.5 hides the spread
    spread = [ev(20, 100), ev(80, 100)]
    binom = math.sqrt(0.25 / 200)
    robust = math.sqrt(2 / 1 * (30**2 + 30**2)) / 200  # = 0.3
    assert robust > binom and ratio_err(spread, "k", "n") == pytest.approx(robust)
    # identical events: the event spread is nil, the binomial error stays
    same = [ev(50, 100), ev(50, 100)]
    assert ratio_err(same, "k", "n") == pytest.approx(binom)
    assert ratio_err([ev(5, 10)], "k", "n") == pytest.approx(math.sqrt(0.25 / 10))  # one event
    assert math.isnan(ratio_err([ev(0, 0), ev(0, 0)], "k", "n"))


def test_same_partition_is_relabelling_invariant():
    a = np.array([0, 0, 1, -1, 2, 2])
    assert _same_partition(a, np.array([5, 5, 3, -1, 0, 0]))
    assert not _same_partition(a, np.array([5, 5, 5, -1, 0, 0]))  # merged
    assert not _same_partition(a, np.array([5, 4, 3, -1, 0, 0]))  # split
    assert not _same_partition(a, np.array([5, 5, 3, 7, 0, 0]))  # noise assigned


def test_latency_and_export_enter_the_row(tiny_run, tmp_path):
    cfg, _ = load_checkpoint(tiny_run["ckpt"])
    events = list(iter_eval_events(cfg, str(tiny_run["fresh"]), "all", 2))
    lat = measure_latency(tiny_run["ckpt"], events, "cpu", repeat=2)
    assert lat["n_events"] == 2 and lat["repeat"] == 2 and lat["peak_gib"] is None
    assert lat["median_ms"] > 0 and set(lat["stages_median_ms"]) == set(STAGES)
    assert sum(lat["stages_median_ms"].values()) <= lat["p90_ms"] * len(STAGES)
    with pytest.raises(ValueError, match="at least one event"):
        measure_latency(tiny_run["ckpt"], [], "cpu")
    fast = measure_predictor_latency(tiny_run["ckpt"], events, "cpu", repeat=1)
    assert fast["mode"] == "predictor" and fast["cuda_graphs"] is False
    assert fast["n_events"] == 2 and fast["median_ms"] > 0
    assert fast["same_partition_as_staged"] == 1.0  # same eager path on CPU: same tracks
    assert fast["cluster"] == lat["cluster"]
    eval_dir = tmp_path / "eval"
    shutil.copytree(tiny_run["eval"], eval_dir)
    (eval_dir / "latency.json").write_text(json.dumps(lat))

    export = export_checkpoint(tiny_run["ckpt"])
    assert export == tiny_run["ckpt"].parent / "model_bf16.pt"
    assert export.stat().st_size < tiny_run["ckpt"].stat().st_size / 2
    row = load_row(eval_dir)
    assert row["latency_ms"] == lat["median_ms"] and row["latency_device"] == "CPU"
    assert row["export_mb"] == pytest.approx(export.stat().st_size / 2**20)

    # the export alone (no run directory beside it) is evaluable and carries the training summary
    alone = tmp_path / "shared" / "model_bf16.pt"
    alone.parent.mkdir()
    shutil.copy(export, alone)
    saved = torch.load(alone, map_location="cpu", weights_only=False)
    assert all(
        v.dtype == torch.bfloat16 for v in saved["state_dict"].values() if v.is_floating_point()
    )
    full = build_model(*load_checkpoint(tiny_run["ckpt"]))
    half = build_model(*load_checkpoint(alone))
    for (k, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a.to(torch.bfloat16).float(), msg=k)
    out = tmp_path / "eval_export"
    evaluate(
        {
            "ckpt": str(alone),
            "output_dir": str(out),
            "data_path": str(tiny_run["fresh"]),
            "reconstructable": TABLE_RECO,
            "plots": False,
            **NO_WANDB,
        }
    )
    row = load_row(out)
    assert row["train_steps"] == 6 and row["train_device"].startswith("CPU")


def test_cli_writes_markdown_and_json(tiny_run, tmp_path, capsys):
    md, js = tmp_path / "t.md", tmp_path / "rows.json"
    rows = main(
        [str(tiny_run["eval"]), "--markdown", "--breakdowns", "--out", str(md), "--json", str(js)]
    )
    printed = capsys.readouterr().out
    assert md.read_text().strip() == printed.strip()
    assert printed.startswith("| experiment | µ |")
    assert json.loads(js.read_text())[0]["dm_efficiency"] == rows[0]["dm_efficiency"]


def test_other_reconstructable_definitions_and_missing_files_are_refused(tiny_run, tmp_path):
    out = tmp_path / "eval"
    evaluate(
        {
            "ckpt": str(tiny_run["ckpt"]),
            "output_dir": str(out),
            "plots": False,
            "data_path": str(tiny_run["fresh"]),
            "reconstructable": {"pt_min": 0.5},
            **NO_WANDB,
        }
    )
    with pytest.raises(ValueError, match=r"metrics.json: reconstructable pt_min=0.5"):
        load_row(out)
    m = json.loads((tiny_run["eval"] / "metrics.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text(json.dumps({**m, "ckpt": str(tmp_path / "gone.ckpt")}))
    with pytest.raises(FileNotFoundError, match=r"field 'ckpt' = .*gone.ckpt"):
        load_row(bad)
    del m["n_fake"]
    (bad / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(KeyError, match="lacks field 'n_fake'"):
        load_row(bad)
    with pytest.raises(FileNotFoundError, match="nowhere/metrics.json does not exist"):
        load_row(tmp_path / "nowhere")


def test_goal_status_by_pileup():
    row = {"pileup": 200.0, "dm_efficiency": 0.987, "fake_rate": 0.007}
    assert goal_status(row) == "met"
    assert goal_status({**row, "fake_rate": 0.01}) == "NOT met (fake 1.00 % > 0.8 %)"
    assert goal_status({**row, "dm_efficiency": 0.9}).startswith("NOT met (DM 90.0 % < 98.6 %")
    low = {"pileup": 20.0, "dm_efficiency": 0.987, "fake_rate": 0.5}
    assert goal_status(low) == "NOT met (DM 98.7 % < 99.0 %)"  # no fake-rate goal at low mu
    assert goal_status({**low, "dm_efficiency": 0.995}) == "met"
    assert goal_status({**low, "dm_efficiency": float("nan")}).startswith("NOT met")


def test_loss_reasons_split_merged_unassigned():
    p = pd.DataFrame(
        {
            "reconstructable": [True, True, True, True, False],
            "dm": [True, False, False, False, False],
            "best_track": [1, -1, 2, 3, -1],
            "best_completeness": [1.0, 0.0, 0.4, 0.8, 0.0],
        }
    )
    r = loss_reasons(p)
    assert r == {
        "n_reconstructable": 4,
        "missed": 0.75,
        "unassigned": 0.25,
        "split": 0.25,
        "merged": 0.25,
    }


def test_training_summary_names_the_device(monkeypatch):
    from types import SimpleNamespace

    from trackformers.training.summary import device_name

    cpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1)
    assert device_name(cpu) == f"CPU ({torch.get_num_threads()} threads) x 1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: f"FakeGPU {d}")
    gpu = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), world_size=2
    )
    assert device_name(gpu) == "2x FakeGPU cuda:0"


def test_evaluate_cli_swaps_the_attention_backend(tiny_run, tmp_path):
    """``attention=X`` on the evaluate command line (a conf group name in training) reaches
    run() as the backend to rebuild the model with; the row names that backend."""
    import os
    import subprocess
    import sys

    out = tmp_path / "eval_flex"
    args = [
        f"ckpt={tiny_run['ckpt']}",
        f"data={tiny_run['fresh']}",
        "attention=flex",
        "+reconstructable.pt_min=0.9",
        "wandb.enabled=false",
        "plots=false",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "trackformers.evaluate", *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_events"] == 6 and m["attention"] == "FlexAttention"  # trained with dense
    assert json.loads((tiny_run["eval"] / "metrics.json").read_text())["attention"] == (
        "DenseAttention"
    )
