"""The committed sample in data/sample/ is readable and is what our generator makes."""

import hashlib
from pathlib import Path

import numpy as np
import uproot

from trackformers.data import schema
from trackformers.sim.settings import default_settings
from trackformers.sim.writer import read_metadata
from trackformers.simulate import run

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_sample_is_small_and_complete():
    files = sorted(SAMPLE.rglob("*.root"))
    assert {f.parent.name for f in files} == {"gun", "ttbar_pu0", "ttbar_pu10_pixel"}
    assert sum(f.stat().st_size for f in files) < 2_000_000
    for f in files:
        with uproot.open(f) as fh:
            tree = fh[schema.TREE_NAME]
            assert set(schema.ALL_BRANCHES) <= set(tree.keys())
            arr = tree.arrays(["nhit", "hit_volume_id", "pileup"])
        assert len(arr) >= 5 and np.all(arr["nhit"] > 0)
        meta = read_metadata(f)
        assert meta["settings"]["seed"] == 1
    pix = uproot.open(SAMPLE / "ttbar_pu10_pixel" / "shard_00000.root")["events"]
    vols = np.unique(np.concatenate(pix["hit_volume_id"].array(library="np")))
    assert set(vols.tolist()) <= {7, 8, 9}


def test_gun_sample_is_reproduced_byte_for_byte(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(default_settings(process="gun"))  # = the CLI's composed config
    cfg.merge_with(
        {
            "n_events": 20,
            "events_per_shard": 20,
            "seed": 1,
            "progress": False,
            "output": str(tmp_path / "gun"),
        }
    )
    (made,) = run(cfg)
    committed = SAMPLE / "gun" / "shard_00000.root"
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (made, committed)]
    assert digest[0] == digest[1], "data/sample/gun is stale: regenerate it (data/README.md)"


def test_compression_key_sets_the_codec_not_the_content(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(default_settings(process="gun"))
    assert cfg.compression == "lz4:1"
    made = {}
    for codec in ("lz4:1", "zstd:1"):
        cfg.merge_with(
            {"n_events": 3, "events_per_shard": 3, "progress": False, "compression": codec}
        )
        cfg.output = str(tmp_path / codec.replace(":", "_"))
        (made[codec],) = run(cfg)
    with uproot.open(made["zstd:1"]) as f:
        assert repr(f.file.compression) == "ZSTD(1)"
        b = f[schema.TREE_NAME].arrays(["hit_x", "part_px"])
    with uproot.open(made["lz4:1"]) as f:
        assert repr(f.file.compression) == "LZ4(1)"
        a = f[schema.TREE_NAME].arrays(["hit_x", "part_px"])
    assert a.to_list() == b.to_list()
    meta = [read_metadata(p) for p in made.values()]
    assert meta[0]["settings_hash"] == meta[1]["settings_hash"]
