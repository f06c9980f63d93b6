"""benchmarks/physics_run.py trains across calls: --return-ckpt, then --resume goes on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

    second = _run(tmp_path / "call2", "--resume", str(ckpt), "--precision", "fp32")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f'resuming {ckpt}: {{"step": {step1},' in second.stdout
    assert "precision=fp32" in second.stdout  # the evaluation's forward in float32
    step2 = json.loads((tmp_path / "call2" / "summary.json").read_text())["global_step"]
    assert step2 > step1  # went on from the checkpoint, not from step 0
    export = tmp_path / "call2" / "model_bf16.pt"
    assert export.is_file()
    weights_only = _run(tmp_path / "call3", "--resume", str(export))
    assert weights_only.returncode != 0 and "has no optimizer state" in weights_only.stderr
    row = json.loads((tmp_path / "call2" / "rows.json").read_text())
    assert row and "dm_efficiency" in json.dumps(row)


def test_resume_refuses_exports_and_paths_the_run_clears(tmp_path):
    bad = _run(tmp_path / "o", "--resume", str(REPO / "outputs" / "physics" / "last.ckpt"))
    assert bad.returncode != 0 and "which this run clears first" in bad.stderr
    missing = _run(tmp_path / "o2", "--resume", str(tmp_path / "nope.ckpt"))
    assert missing.returncode != 0 and "no checkpoint at" in missing.stderr
