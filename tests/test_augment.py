"""Training augmentation: phi rotation and z reflection of whole events (data/augment.py)."""

import numpy as np
import pytest
import torch

from trackformers.data.augment import (
    AugmentConfig,
    augment_chunk,
    event_transforms,
    transform_chunk,
)
from trackformers.data.chunk import EventChunk
from trackformers.data.datamodule import TrackDataModule
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import featurize
from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events

FEATS = ("x", "y", "z", "r", "phi", "sin_phi", "cos_phi", "eta", "volume_id", "layer_id")
TARGETS = ("eta", "sin_phi", "cos_phi", "q_over_pt", "pt", "z0", "d0")


def _chunk(n=3, seed=1):
    events = helix_events(n, seed=seed, n_particles=8)
    for ev in events:  # put some hits in the pixel endcaps: -z -> volume 7, +z -> volume 9
        z = ev["hit_z"]
        end = np.abs(z) > 400
        ev["hit_volume_id"] = np.where(end, np.where(z < 0, 7, 9), 8).astype(np.int32)
        ev["hit_layer_id"] = np.where(end, np.where(z < 0, 4, 12), 2).astype(np.int32)
    return EventChunk.from_events(events)


def _featurize(chunk):
    cfg = FeatureConfig(features=FEATS, targets=TARGETS, scales={})
    return featurize(chunk, cfg)


def test_rotated_event_has_rotated_features_and_the_same_truth_grouping():
    chunk = _chunk()
    angle = np.array([0.7, -2.9, 3.1])
    ref, rot = _featurize(chunk), _featurize(transform_chunk(chunk, angle, np.zeros(3, bool)))
    col = {f: j for j, f in enumerate(FEATS)}
    a = np.repeat(angle, np.diff(chunk.hit_offsets))  # (N,)
    c, s = np.cos(a), np.sin(a)
    x, y = ref.coords[:, 0], ref.coords[:, 1]
    np.testing.assert_allclose(rot.coords[:, 0], c * x - s * y, atol=2e-3)
    np.testing.assert_allclose(rot.coords[:, 1], s * x + c * y, atol=2e-3)
    sp, cp = ref.x[:, col["sin_phi"]], ref.x[:, col["cos_phi"]]
    np.testing.assert_allclose(rot.x[:, col["sin_phi"]], s * cp + c * sp, atol=1e-5)
    np.testing.assert_allclose(rot.x[:, col["cos_phi"]], c * cp - s * sp, atol=1e-5)
    for f in ("z", "r", "eta", "volume_id", "layer_id"):  # invariant under rotation
        np.testing.assert_allclose(rot.x[:, col[f]], ref.x[:, col[f]], atol=1e-5)
    assert np.array_equal(rot.particle_id, ref.particle_id)  # the same hits make the tracks
    t = {
        k: (ref.targets["params"][:, j], rot.targets["params"][:, j]) for j, k in enumerate(TARGETS)
    }
    ok = ref.targets["valid"]
    for k in ("eta", "q_over_pt", "pt", "z0", "d0"):  # helix shape: invariant
        np.testing.assert_allclose(t[k][1][ok], t[k][0][ok], rtol=1e-4, atol=1e-4)
    sp, cp = t["sin_phi"][0][ok], t["cos_phi"][0][ok]  # momentum direction turns with the event
    np.testing.assert_allclose(t["sin_phi"][1][ok], s[ok] * cp + c[ok] * sp, atol=1e-5)


def test_reflected_event_mirrors_z_truth_and_endcap_ids():
    chunk = _chunk()
    flip = np.array([True, False, True])
    ref, ref_chunk = _featurize(chunk), chunk
    out = transform_chunk(chunk, np.zeros(3), flip)
    refl = _featurize(out)
    col = {f: j for j, f in enumerate(FEATS)}
    hf = np.repeat(flip, np.diff(chunk.hit_offsets))
    np.testing.assert_array_equal(
        refl.coords[:, 2], np.where(hf, -ref.coords[:, 2], ref.coords[:, 2])
    )
    np.testing.assert_allclose(
        refl.x[:, col["eta"]], np.where(hf, -1, 1) * ref.x[:, col["eta"]], atol=1e-6
    )
    vol, new_vol = ref_chunk.hits["hit_volume_id"], out.hits["hit_volume_id"]
    assert ((vol == 7) & hf).any() and ((vol == 9) & hf).any()
    assert (new_vol[(vol == 7) & hf] == 9).all() and (new_vol[(vol == 9) & hf] == 7).all()
    assert (new_vol[~hf] == vol[~hf]).all() and (new_vol[vol == 8] == 8).all()
    new_lay = out.hits["hit_layer_id"]
    assert (new_lay[(vol == 7) & hf] == 16 - 4).all() and (new_lay[(vol == 9) & hf] == 4).all()
    assert np.array_equal(refl.particle_id, ref.particle_id)
    j = TARGETS.index("eta")
    ok = ref.targets["valid"]
    np.testing.assert_allclose(
        refl.targets["params"][ok, j],
        np.where(hf, -1, 1)[ok] * ref.targets["params"][ok, j],
        atol=1e-5,
    )
    j = TARGETS.index("z0")
    np.testing.assert_allclose(
        refl.targets["params"][ok, j],
        np.where(hf, -1, 1)[ok] * ref.targets["params"][ok, j],
        atol=1e-3,
    )
    # truth positions follow the hits
    np.testing.assert_array_equal(out.hits["hit_tz"], np.where(hf, -1, 1) * chunk.hits["hit_tz"])


def test_augmentation_is_deterministic_per_seed_epoch_and_event():
    chunk = _chunk(4)
    cfg = AugmentConfig(rotate_phi=True, reflect_z=True)
    a = augment_chunk(chunk, cfg, seed=3, epoch=0).hits["hit_x"]
    assert np.array_equal(a, augment_chunk(chunk, cfg, seed=3, epoch=0).hits["hit_x"])
    assert not np.allclose(a, augment_chunk(chunk, cfg, seed=3, epoch=1).hits["hit_x"])
    assert not np.allclose(a, augment_chunk(chunk, cfg, seed=4, epoch=0).hits["hit_x"])
    # an event's transform does not depend on the other events of its chunk
    one = augment_chunk(chunk.select_events(np.array([False, True, False, False])), cfg, 3, 0)
    s, e = chunk.hit_offsets[1], chunk.hit_offsets[2]
    assert np.array_equal(one.hits["hit_x"], a[s:e])
    assert augment_chunk(chunk, AugmentConfig(), 3, 0) is chunk


def test_crop_keeps_one_wedge_per_event_with_its_particles():
    chunk = _chunk(4)
    width = np.pi / 2
    out = augment_chunk(chunk, AugmentConfig(crop_phi=width), seed=3, epoch=0)
    assert out.num_events == chunk.num_events and out.num_hits < chunk.num_hits
    _, _, start = event_transforms(chunk.event_ids, AugmentConfig(crop_phi=width), 3, 0)
    for i in range(chunk.num_events):
        a, b = chunk.hit_offsets[i], chunk.hit_offsets[i + 1]
        x, y = chunk.hits["hit_x"][a:b], chunk.hits["hit_y"][a:b]
        inside = np.mod(np.arctan2(y, x) - start[i], 2 * np.pi) < width
        c, d = out.hit_offsets[i], out.hit_offsets[i + 1]
        assert d - c == inside.sum()  # exactly the wedge's hits, in their order
        np.testing.assert_array_equal(out.hits["hit_x"][c:d], x[inside])
        np.testing.assert_array_equal(
            out.hits["hit_particle_id"][c:d], chunk.hits["hit_particle_id"][a:b][inside]
        )
    assert out.parts is chunk.parts
    again = augment_chunk(chunk, AugmentConfig(crop_phi=width), seed=3, epoch=0)
    np.testing.assert_array_equal(again.hits["hit_x"], out.hits["hit_x"])
    other = augment_chunk(chunk, AugmentConfig(crop_phi=width), seed=3, epoch=1)
    assert not np.array_equal(other.hit_offsets, out.hit_offsets)


def test_crop_draws_leave_rotation_and_reflection_unchanged():
    """Adding the crop keeps each event's angle and flip (the same random stream order)."""
    ids = np.arange(20)
    a0, f0, _ = event_transforms(ids, AugmentConfig(rotate_phi=True, reflect_z=True), 5, 2)
    cfg = AugmentConfig(rotate_phi=True, reflect_z=True, crop_phi=1.0)
    a1, f1, _ = event_transforms(ids, cfg, 5, 2)
    np.testing.assert_array_equal(a0, a1)
    np.testing.assert_array_equal(f0, f1)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"rotate": True}, "unknown key"),
        ({"rotate_phi": "yes"}, "true or false"),
        ({"crop_phi": 0.0}, "crop_phi must be a wedge width"),
        ({"crop_phi": 7.0}, "crop_phi must be a wedge width"),
        ({"crop_phi": True}, "crop_phi must be a wedge width"),
        ({"crop_phi": "pi"}, "crop_phi must be a wedge width"),
    ],
)
def test_augment_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig.from_dict(bad)


def test_datamodule_augments_training_batches_only(tmp_path):
    write_events(tmp_path / "e.root", helix_events(30, seed=2, n_particles=6), {"test": True})
    kw = dict(
        path=str(tmp_path),
        max_tokens=400,
        val_fraction=0.3,
        test_fraction=0.0,
        features={"features": ["x", "y", "z"], "targets": ["eta", "sin_phi", "cos_phi"]},
    )
    plain = TrackDataModule(**kw)
    aug = TrackDataModule(**kw, augment={"rotate_phi": True, "reflect_z": True})
    plain.setup(), aug.setup()
    for split in ("val",):
        b0, b1 = next(iter(plain._loader(split))), next(iter(aug._loader(split)))
        assert torch.equal(b0.x, b1.x)
    b0, b1 = next(iter(plain.train_dataloader())), next(iter(aug.train_dataloader()))
    assert torch.equal(b0.event_id, b1.event_id) and not torch.allclose(b0.x, b1.x)
    assert torch.equal(b0.particle_id, b1.particle_id)
    # rotation and reflection keep the distance of a hit from the beam line
    torch.testing.assert_close(b0.x[:, :2].norm(dim=1), b1.x[:, :2].norm(dim=1))
    with pytest.raises(ValueError, match="cache_dir"):
        TrackDataModule(**kw, cache_dir=str(tmp_path / "c"), augment={"rotate_phi": True})


def test_rotated_event_gives_the_same_tracks_from_a_rotation_invariant_model():
    """Model inputs r, z, eta (invariant under phi rotation): the rotated event's tracks
    are the original's, hit for hit."""
    from trackformers.attention import build
    from trackformers.inference import Predictor
    from trackformers.models import ContrastiveHead, Encoder, TrackFormer

    chunk = _chunk(2)
    rotated = transform_chunk(chunk, np.array([1.3, -0.4]), np.zeros(2, bool))
    cfg = FeatureConfig(features=("r", "z", "eta"))
    torch.manual_seed(0)
    model = TrackFormer(Encoder(3, 16, 2, 1, attention=build("dense")), ContrastiveHead(16, 4))
    pred = Predictor(
        model, {"method": "dbscan", "params": {"eps": 0.3, "min_samples": 2}}, cuda_graphs=False
    )
    a = pred.predict_batch(featurize(chunk, cfg).pack())
    b = pred.predict_batch(featurize(rotated, cfg).pack())
    assert (a >= 0).any() and torch.equal(a, b)
