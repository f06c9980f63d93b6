"""Entry point: Hydra CLI, sharding, skip/resume, reproducibility, errors before work starts."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from trackformers.sim.writer import read_metadata
from trackformers.simulate import CONF_DIR, run

ROOT = Path(__file__).resolve().parents[1]


def _cfg(output, **over):
    cfg = OmegaConf.load(CONF_DIR / "simulate.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.process = OmegaConf.load(CONF_DIR / "simulate" / "process" / "gun.yaml")
    cfg.output = str(output)
    cfg.progress = False
    cfg.n_events, cfg.events_per_shard = 6, 2
    return OmegaConf.merge(cfg, OmegaConf.create(over))


def _digest(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_cli_gun_writes_shards_and_skips_existing(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "trackformers.simulate",
        "process=gun",
        "n_events=30",
        "events_per_shard=20",
        f"output={out}",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    shards = sorted(out.glob("*.root"))
    assert [p.name for p in shards] == ["shard_00000.root", "shard_00001.root"]
    meta = read_metadata(shards[1])
    assert meta["events"] == [20, 30] and meta["settings"]["process"]["name"] == "gun"
    assert "output" not in meta["settings"]  # provenance holds what determines content
    mtimes = [p.stat().st_mtime_ns for p in shards]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    assert [p.stat().st_mtime_ns for p in shards] == mtimes


def test_resume_and_reproducibility(tmp_path):
    a = run(_cfg(tmp_path / "a", workers=2))
    b = run(_cfg(tmp_path / "b"))
    assert [_digest(p) for p in a] == [_digest(p) for p in b]
    os.remove(b[1])
    os.remove(b[2])
    run(_cfg(tmp_path / "b"))
    assert [_digest(p) for p in a] == [_digest(p) for p in b]
    c = run(_cfg(tmp_path / "c", seed=2))
    assert _digest(c[0]) != _digest(a[0])


def test_other_settings_in_existing_output_is_an_error(tmp_path):
    run(_cfg(tmp_path / "a"))
    with pytest.raises(FileExistsError, match="shard_00000.root was made with other settings"):
        run(_cfg(tmp_path / "a", seed=3))


@pytest.mark.parametrize(
    "over, exc, message",
    [
        ({"process": {"name": "zz"}}, ValueError, "unknown process 'zz'"),
        ({"pileup": -1}, ValueError, "pileup must be >= 0"),
        ({"detector": {"efficiency": 1.5}}, ValueError, "efficiency"),
        ({"detector": {"geometry": "/nonexistent/geo.yaml"}}, FileNotFoundError, "geo.yaml"),
        ({"process": {"pt": [-1.0, 2.0]}}, ValueError, "gun.pt"),
    ],
)
def test_bad_settings_fail_before_any_output(tmp_path, over, exc, message):
    with pytest.raises(exc, match=message):
        run(_cfg(tmp_path / "o", **over))
    assert not any((tmp_path / "o").glob("*.root"))


def test_unwritable_output_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create output directory"):
        run(_cfg(blocker / "sub"))
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="not writable"):
            run(_cfg(ro))


def test_unknown_process_on_cli_is_reported(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackformers.simulate",
            "process=nope",
            f"output={tmp_path}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "nope" in r.stderr
