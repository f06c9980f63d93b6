"""benchmarks/physics_run.py (trackformers.reproduce.physics_run) trains across calls:
--return-ckpt, then --resume goes on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trackformers.reproduce import physics_run, physics_table

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "physics_run.py"


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--tiny", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_a_second_call_resumes_training_from_the_returned_checkpoint(tmp_path):
    first = _run(tmp_path / "call1", "--return-ckpt")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ckpt = tmp_path / "call1" / "last.ckpt"
    assert ckpt.is_file() and not (tmp_path / "call1" / "model_bf16.pt").exists()
    step1 = json.loads((tmp_path / "call1" / "summary.json").read_text())["global_step"]
    assert step1 > 0

    second = _run(
        tmp_path / "call2",
        "--resume",
        str(ckpt),
        "--precision",
        "fp32",
        "--eval-seeds",
        "2",
        "3",
        "--tag",
        "t2",
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f'resuming {ckpt}: {{"step": {step1},' in second.stdout
    assert "precision=fp32" in second.stdout  # the evaluation's forward in float32
    step2 = json.loads((tmp_path / "call2" / "summary.json").read_text())["global_step"]
    assert step2 > step1  # went on from the checkpoint, not from step 0
    export = tmp_path / "call2" / "model_fp32.pt"  # the shared file, and the one evaluated
    assert export.is_file()
    weights_only = _run(tmp_path / "call3", "--resume", str(export))
    assert weights_only.returncode != 0 and "has no optimizer state" in weights_only.stderr
    rows = json.loads((tmp_path / "call2" / "rows.json").read_text())
    assert len(rows) == 2 and all(r["ckpt"].endswith("model_fp32.pt") for r in rows)
    assert rows[0]["n_events"] == rows[1]["n_events"] == 6
    assert rows[0]["latency_ms"] is not None and rows[1]["latency_ms"] is None
    assert "fresh events of seed 3 (6 events):" in (tmp_path / "call2" / "results.md").read_text()
    assert (REPO / "outputs" / "physics_t2" / "eval_seed3" / "metrics.json").is_file()


def test_resume_refuses_exports_and_paths_the_run_clears(tmp_path):
    bad = _run(tmp_path / "o", "--resume", str(REPO / "outputs" / "physics" / "last.ckpt"))
    assert bad.returncode != 0 and "which this run clears first" in bad.stderr
    missing = _run(tmp_path / "o2", "--resume", str(tmp_path / "nope.ckpt"))
    assert missing.returncode != 0 and "no checkpoint at" in missing.stderr


def _row(dm, dm_err, perfect=0.5, fake=0.1, err=0.01, n=10):
    return {
        "dm_efficiency": dm,
        "dm_efficiency_err": dm_err,
        "perfect_efficiency": perfect,
        "perfect_efficiency_err": err,
        "fake_rate": fake,
        "fake_rate_err": err,
        "n_events": n,
    }


def test_reproduction_pulls_use_both_binomial_errors():
    table = _row(0.50, 0.03)
    same = physics_run.reproduction(table, _row(0.55, 0.04), seed=3)
    assert same.startswith("fresh events of seed 3 (10 events): reproduces")
    assert "dm_efficiency 50.00 vs 55.00 % (+1.0 sigma)" in same  # 0.05 / hypot(0.03, 0.04)
    off = physics_run.reproduction(table, _row(0.70, 0.04), seed=3)
    assert "does NOT reproduce" in off and "(+4.0 sigma)" in off
    fake_off = physics_run.reproduction(table, _row(0.50, 0.03, fake=0.2), seed=4)
    assert "does NOT reproduce" in fake_off


def test_run_clustering_follows_the_head():
    cla = {"validation": {"cluster": {"method": "argmax", "output_key": "logits", "params": None}}}
    assert physics_run.run_clustering(cla) == {"method": "argmax", "input": "logits", "params": {}}
    reg = {
        "validation": {
            "cluster": {"method": "dbscan", "output_key": "params", "params": {"eps": 0.05}}
        }
    }
    assert physics_run.run_clustering(reg) == {
        "method": "dbscan",
        "input": "params",
        "params": {"min_samples": 2},
    }
    with pytest.raises(ValueError, match="hdbscan_cpu"):
        physics_run.run_clustering({"validation": {"cluster": {"method": "hdbscan_cpu"}}})


def test_bad_tag_and_eval_seeds_are_refused(tmp_path):
    bad = _run(tmp_path / "o", "--tag", "a/b")
    assert bad.returncode != 0 and "--tag must be" in bad.stderr
    seeds = _run(tmp_path / "o", "--eval-seeds", "1", "2")
    assert seeds.returncode != 0 and "not the training seed 1" in seeds.stderr
    events = _run(tmp_path / "o", "--check-events", "0")
    assert events.returncode != 0 and "--check-events must be >= 1, got 0" in events.stderr


def test_physics_table_reads_the_committed_runs(tmp_path):
    """benchmarks/physics_table.py on the runs kept in docs/results: the rows are the
    evaluations' own numbers, the errors come from the per-event counts."""
    from trackformers.metrics import ratio_err

    runs = REPO / "docs" / "results" / "issue9_h200x4_20261122"
    folders = [runs / name for name in ("fused", "dense", "enc_cla", "pu0")]
    rows = physics_table.main([*map(str, folders), "--out", str(tmp_path / "t.md")])
    for folder, row in zip(folders, rows, strict=True):
        m = json.loads((folder / "metrics.json").read_text())
        assert row["dm_efficiency"] == m["dm_efficiency"] and row["n_events"] == m["n_events"]
        assert row["dm_efficiency_err"] == ratio_err(m["per_event"], "n_dm", "n_reconstructable")
    assert [r["head"] for r in rows] == [
        "contrastive",
        "contrastive",
        "EncCla (argmax)",
        "contrastive",
    ]
    assert len(rows[0]["reproduction"]) == 1 and rows[1]["reproduction"] == []
    text = (tmp_path / "t.md").read_text()
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + len(folders)  # header + one line per run
    assert "| fused | 202 | contrastive | FusedAttention, d128 L6 | 24 | 18.1 ± 0.4 |" in text
    (tmp_path / "broken").mkdir()
    with pytest.raises(FileNotFoundError, match="rows.json"):
        physics_table.main([str(tmp_path / "broken")])


def test_training_steps_fill_the_training_time():
    # the ablation runs: 240 s of max_time at 0.135 s per step; before, 60 s start-up came off
    assert physics_run.training_steps(240.0, 0.135, 60.0, fixed=True) == int(240 / (1.3 * 0.135))
    assert physics_run.training_steps(240.0, 0.135, 60.0, fixed=False) == int(180 / (1.3 * 0.135))
    assert physics_run.training_steps(5.0, 1.0, 60.0, fixed=False) == 10  # at least 10 steps
