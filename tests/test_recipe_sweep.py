"""Recipe sweeps (trackformers.reproduce.recipe_sweep): variant files, the training command,
curves read back from the CSV log, and the collected tables and plots."""

import csv
import json
from argparse import Namespace
from pathlib import Path

import pytest

from trackformers.reproduce.recipe_sweep import load_variants, main, read_curve, train_command


def _args(**kw):
    return Namespace(**{"data": "data/x", "steps": 3000, "val_every": 250, **kw})


def test_a_variants_own_steps_win_over_the_sweeps():
    cmd = train_command("a", ["model.encoder.d_model=64"], _args(), Path("/tmp/r"))
    assert "trainer.max_steps=3000" in cmd
    cmd = train_command("b", ["trainer.max_steps=6200"], _args(), Path("/tmp/r"))
    assert [c for c in cmd if c.startswith("trainer.max_steps")] == ["trainer.max_steps=6200"]


def test_variant_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: []\n")
    with pytest.raises(SystemExit, match="variants"):
        load_variants(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("variants: {}\n")
    with pytest.raises(SystemExit, match="no variants"):
        load_variants(empty)


def _fake_run(run_dir: Path, points):
    (run_dir / "csv").mkdir(parents=True)
    cols = ["step", "val/dm_efficiency", "val/fake_rate", "val/trackml_score", "time/train_s"]
    with (run_dir / "csv" / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["train/loss", *cols])
        for step, dm, fake, secs in points:
            w.writerow([1.0, step, "", "", "", ""])  # a training row: no validation
            w.writerow(["", step, dm, fake, 0.5, secs])


def test_collect_reads_curves_and_writes_tables_and_plots(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: [a=1]\nvariants:\n  v1: []\n  v2: [b=2]\n")
    _fake_run(tmp_path / "out" / "v1", [(249, 0.8, 0.03, 120.0), (499, 0.9, 0.01, 240.0)])
    _fake_run(tmp_path / "out" / "v2", [(249, 0.7, 0.05, 100.0)])
    curve = read_curve(tmp_path / "out" / "v1")
    assert [(p["step"], p["dm"], p["train_s"]) for p in curve] == [
        (249, 0.8, 120.0),
        (499, 0.9, 240.0),
    ]
    assert main([str(spec), "--out", str(tmp_path / "out"), "--data", "x", "--collect"]) == 0
    out = tmp_path / "out"
    md = (out / "curves.md").read_text()
    assert "| v1 |" in md and "90.0" in md and "| v2 |" in md and "70.0" in md
    rows = json.loads((out / "curves.json").read_text())
    assert rows["v2"]["overrides"] == ["a=1", "b=2"]
    for png in ("curves.png", "curves_minutes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
