"""Entry point: Hydra CLI, sharding, skip/resume, reproducibility, errors before work starts."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from trackformers.paths import CONF_DIR
from trackformers.sim.settings import default_settings
from trackformers.sim.writer import read_metadata
from trackformers.simulate import run

ROOT = Path(__file__).resolve().parents[1]


def _cfg(output, vertex_group=None, **over):
    cfg = OmegaConf.create(default_settings(process="gun", vertex=vertex_group))
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
    # the Hydra-composed settings equal conf/simulate.yaml + process/gun.yaml: a re-run skips
    again = run(_cfg(out, n_events=30, events_per_shard=20))
    assert again == shards and [p.stat().st_mtime_ns for p in shards] == mtimes


def test_resume_and_reproducibility(tmp_path, capsys):
    a = run(_cfg(tmp_path / "a", workers=2, progress=True))
    assert "6/6" in capsys.readouterr().err  # per-event progress from the worker processes
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


def test_gun_with_pileup_and_broken_geometry_fail_early(tmp_path):
    import yaml

    from trackformers.sim.geometry import DEFAULT_GEOMETRY, GeometryError

    with pytest.raises(ValueError, match="particle gun has no pile-up"):
        run(_cfg(tmp_path / "o", pileup=5))
    spec = yaml.safe_load(DEFAULT_GEOMETRY.read_text())
    spec["endcaps"][0]["z"] = [300.0, 700.0]  # a pixel disk through the pixel barrel
    geo = tmp_path / "geo.yaml"
    geo.write_text(yaml.safe_dump(spec))
    with pytest.raises(GeometryError, match="intersects barrel volume 8"):
        run(_cfg(tmp_path / "o", detector={"geometry": str(geo)}))
    assert not (tmp_path / "o").exists()


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


def test_interrupted_run_leaves_no_half_shard_and_rerun_completes(tmp_path, monkeypatch):
    from trackformers.sim.events import EventFactory

    real = EventFactory.event

    def crash_at_4(self, index):
        if index == 4:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(EventFactory, "event", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path / "o"))
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "shard_00000.root",
        "shard_00001.root",
    ]  # shard 2 (events 4, 5) never half-written
    done = [(tmp_path / "o" / f"shard_0000{i}.root").stat().st_mtime_ns for i in (0, 1)]
    monkeypatch.setattr(EventFactory, "event", real)
    paths = run(_cfg(tmp_path / "o"))
    assert [p.stat().st_mtime_ns for p in paths[:2]] == done
    assert [_digest(p) for p in paths] == [_digest(p) for p in run(_cfg(tmp_path / "ref"))]


def test_shard_subset_for_array_jobs(tmp_path):
    part = run(_cfg(tmp_path / "o", shards=[2, 0]))
    assert sorted(p.name for p in (tmp_path / "o").glob("*.root")) == [
        "shard_00000.root",
        "shard_00002.root",
    ]
    full = run(_cfg(tmp_path / "ref"))
    assert _digest(part[0]) == _digest(full[2]) and _digest(part[1]) == _digest(full[0])
    with pytest.raises(ValueError, match="shard 3 does not exist"):
        run(_cfg(tmp_path / "o", shards=[3]))


def test_default_vertex_is_trackml_and_hllhc_is_a_named_option(tmp_path):
    """The gun (as every process) takes the vertex group: TrackML's 5.5 mm by default, the
    HL-LHC 50 mm with ``vertex=hllhc`` on the command line."""
    from trackformers.sim.events import EventFactory

    assert default_settings()["vertex"] == {"sigma_xy": 0.015, "sigma_z": 5.5}
    vz = {}
    for vertex in ("trackml", "hllhc"):
        f = EventFactory(default_settings(process="gun", vertex=vertex))
        vz[vertex] = np.std([f.event(i)["part_vz"][0] for i in range(200)])
    assert 5.5 * 0.85 < vz["trackml"] < 5.5 * 1.15  # 200 vertices: 5 % statistical error
    assert 50.0 * 0.85 < vz["hllhc"] < 50.0 * 1.15
    out = tmp_path / "hl"
    cmd = [sys.executable, "-m", "trackformers.simulate", "vertex=hllhc", "n_events=2"]
    cmd += [f"output={out}", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    meta = read_metadata(out / "shard_00000.root")
    assert meta["settings"]["vertex"]["sigma_z"] == 50.0 and meta["gun"]["sigma_z"] == 50.0


def test_gun_vertex_in_process_section_is_refused(tmp_path):
    with pytest.raises(ValueError, match="process.sigma_z: the gun takes its vertex spread"):
        run(_cfg(tmp_path / "a", process={"sigma_z": 50.0}))
    with pytest.raises(ValueError, match="vertex.sigma_z must be a finite width"):
        run(_cfg(tmp_path / "a", **{"vertex": {"sigma_z": -1.0}}))


def test_old_default_shards_are_refused_not_mixed(tmp_path):
    """A dataset simulated with the old defaults (sigma_z 50 mm, no noise) is never completed or
    extended with shards of the new defaults, not even by a run of other shards only."""
    old = tmp_path / "old"
    run(_cfg(old, vertex_group="hllhc", detector={"noise_fraction": 0.0}, n_events=2))
    with pytest.raises(FileExistsError, match="shard_00000.root was made with other settings"):
        run(_cfg(old))  # same shard, new defaults
    with pytest.raises(FileExistsError, match="shard_00000.root was made with other settings"):
        run(_cfg(old, shards=[2]))  # another shard only: still refused, not mixed in
    assert sorted(p.name for p in old.glob("*.root")) == ["shard_00000.root"]


def test_no_config_overrides_the_default_vertex_or_noise():
    """Every experiment, data and process config uses the simulate defaults: the vertex spread
    is set only in conf/simulate/vertex/ and the noise rate only in conf/simulate.yaml."""
    conf = CONF_DIR
    for path in sorted(conf.rglob("*.yaml")):
        text = path.read_text()
        if path.parent != conf / "simulate" / "vertex":
            assert "sigma_z" not in text and "sigma_xy" not in text, path
        if path != conf / "simulate.yaml":
            assert "noise_fraction" not in text, path
