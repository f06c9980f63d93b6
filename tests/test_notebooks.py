"""Execute every notebook in notebooks/ (jupytext py:percent) on the committed sample data."""

import os
from pathlib import Path

import jupytext
import nbclient
import pytest
import torch
from hydra.utils import instantiate

from trackformers.evaluate import run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
SAMPLE = Path(os.environ.get("TRACKFORMERS_SAMPLE", REPO / "data" / "sample" / "ttbar_pu10_pixel"))
# the evaluated runs use the small gun sample: an untrained model's outputs collapse, and
# DBSCAN on collapsed points is quadratic in the event size
RUN_DATA = REPO / "data" / "sample" / "gun"

pytestmark = pytest.mark.notebook


def tiny_run(tmp: Path, head: dict, name: str) -> tuple[Path, Path]:
    """A checkpoint of a small model (untrained) and its evaluation on the sample data."""
    cfg = {
        "model": {
            "_target_": "trackformers.models.TrackFormer",
            "encoder": {
                "_target_": "trackformers.models.encoder.Encoder",
                "in_features": 3,
                "d_model": 32,
                "n_heads": 4,
                "n_layers": 1,
                "attention": {"_target_": "trackformers.attention.dense.DenseAttention"},
            },
            "head": {"d_model": 32, **head},
        },
        "data": {"path": str(RUN_DATA), "features": {"features": ["x", "y", "z"]}},
    }
    torch.manual_seed(0)
    model = instantiate(cfg["model"])
    ckpt = tmp / name / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "trackformers": {"config": cfg},
        },
        ckpt,
    )
    out = tmp / name / "eval"
    opts = {"wandb": {"enabled": False}, "cluster": {"method": "auto"}, "plots": False}
    run({"ckpt": str(ckpt), "data": str(RUN_DATA), "output_dir": str(out), **opts})
    return ckpt, out


def execute(nb, cwd: Path) -> None:
    meta = {"metadata": {"path": str(cwd)}}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources=meta).execute()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    for d in (SAMPLE, RUN_DATA):
        assert any(d.glob("*.root")), f"no sample data in {d} (committed by the sim helper)"
    tmp = tmp_path_factory.mktemp("nb")
    a = tiny_run(
        tmp,
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8},
        "contrastive",
    )
    b = tiny_run(
        tmp, {"_target_": "trackformers.models.heads.RegressorHead", "num_params": 4}, "regress"
    )
    return a, b


def test_all_notebooks_listed():
    names = {p.stem for p in NOTEBOOKS}
    assert {"evaluate_run", "compare_runs", "event_display", "attention_patterns"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, runs, monkeypatch):
    (_, eval_a), (_, eval_b) = runs
    monkeypatch.setenv("TRACKFORMERS_ROOT", str(REPO))
    monkeypatch.setenv("TRACKFORMERS_DATA", str(SAMPLE))
    monkeypatch.setenv("TRACKFORMERS_EVAL_DIR", str(eval_a))
    monkeypatch.setenv("TRACKFORMERS_EVAL_DIRS", f"{eval_a}:{eval_b}")
    monkeypatch.delenv("TRACKFORMERS_CKPT", raising=False)  # event_display: the truth-DBSCAN path
    nb = jupytext.read(path)
    execute(nb, path.parent)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "notebook drew no figure"
    if path.stem == "event_display":
        text = "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs
        )
        assert "DBSCAN on true parameters" in text and "dm_efficiency" in text
