"""targets["signal"]: hits of reconstructable particles, the metrics' definition, and its
config errors."""

import numpy as np
import pytest

from trackformers.data.chunk import EventChunk
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import featurize, pack_events
from trackformers.data.signal import SignalConfig, signal_hits
from trackformers.data.synthetic import helix_events
from trackformers.metrics import Reconstructable, evaluate_event


def test_signal_matches_metrics_reconstructable_after_volume_selection():
    events = helix_events(3, seed=5, noise_fraction=0.2, pt_range=(0.3, 3.0), eta_max=2.5)
    cuts = dict(pt_min=0.9, abs_eta_max=2.0, min_hits=3)
    cfg = FeatureConfig(volumes="pixel", signal=cuts)
    feat = featurize(EventChunk.from_events(events), cfg)
    sig = feat.targets["signal"]
    assert sig.dtype == np.bool_ and sig.shape == (len(feat.x),)
    rules = Reconstructable(**cuts)
    n_checked = 0
    for i, ev in enumerate(events):
        keep = np.isin(ev["hit_volume_id"], [7, 8, 9])
        sel = {k: (v[keep] if k.startswith("hit_") else v) for k, v in ev.items()}
        _, parts = evaluate_event(sel, np.full(keep.sum(), -1), rules)
        reco_ids = parts.particle_id[parts.reconstructable].to_numpy()
        expect = np.isin(sel["hit_particle_id"].astype(np.int64), reco_ids)  # (n,)
        s, e = feat.hit_offsets[i], feat.hit_offsets[i + 1]
        np.testing.assert_array_equal(sig[s:e], expect)
        n_checked += int(expect.sum())
    assert 0 < n_checked < len(sig)  # both classes present: the check can fail
    # the hit count is over the selected volumes: 4 pixel layers never reach 5 hits
    five = {**cuts, "min_hits": 5}
    full = featurize(EventChunk.from_events(events), FeatureConfig(signal=five))
    pix = featurize(EventChunk.from_events(events), FeatureConfig(volumes="pixel", signal=five))
    assert full.targets["signal"].sum() > 0 and pix.targets["signal"].sum() == 0
    batch = pack_events(events, cfg)
    assert batch.targets["signal"].dtype.is_floating_point is False
    assert batch.targets["signal"].shape == (batch.x.shape[0],)


def test_signal_hits_cuts_are_strict_and_noise_is_never_signal():
    row = np.array([-1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])  # (N,)
    pt = np.array([0.9, 1.0, 1.0, 5.0])  # particle 0 at the threshold: not signal (strict)
    eta = np.array([0.0, 0.0, 4.0, -1.0])  # particle 2 at |eta| = 4: not signal
    out = signal_hits(row, pt, eta, SignalConfig(pt_min=0.9, abs_eta_max=4.0, min_hits=3))
    expect = [False, False, False, False, True, True, True, False, False, False, False, False]
    np.testing.assert_array_equal(out, expect)  # particle 3 has 2 hits < 3


def test_no_signal_target_unless_configured():
    events = helix_events(1, seed=1)
    plain = featurize(EventChunk.from_events(events), FeatureConfig(targets=("eta",)))
    assert "signal" not in plain.targets
    assert FeatureConfig(signal={"pt_min": 1.0}).needs_particles


@pytest.mark.parametrize(
    "value, match",
    [
        ({"pt_min": -0.1}, r"data.features.signal.pt_min must be finite and >= 0 GeV, got -0.1"),
        ({"pt_min": float("nan")}, r"signal.pt_min must be finite"),
        ({"pt_min": "high"}, r"signal.pt_min must be a number"),
        ({"abs_eta_max": 0.0}, r"data.features.signal.abs_eta_max must be > 0, got 0.0"),
        ({"abs_eta_max": -1}, r"signal.abs_eta_max must be > 0, got -1"),
        ({"min_hits": 0}, r"data.features.signal.min_hits must be >= 1, got 0"),
        ({"min_hits": 2.5}, r"signal.min_hits must be an integer, got 2.5"),
        ({"pt": 1.0}, r"data.features.signal has unknown key\(s\) \['pt'\]"),
        (0.9, r"data.features.signal must be null or a mapping"),
    ],
)
def test_signal_config_errors_name_option_and_value(value, match):
    with pytest.raises(ValueError, match=match):
        FeatureConfig.from_dict({"signal": value})


def test_signal_survives_the_feature_cache(tmp_path):
    from trackformers.data.cache import CachedEvents, build_cache
    from trackformers.sim.writer import write_events

    events = helix_events(4, seed=7, pt_range=(0.3, 3.0))
    write_events(tmp_path / "shard.root", events, {})
    cfg = FeatureConfig(signal={"pt_min": 0.9})
    path = build_cache([tmp_path / "shard.root"], cfg, tmp_path / "cache")
    cached = CachedEvents(path).featurized(0, 4).targets["signal"]
    direct = featurize(EventChunk.from_events(events), cfg).targets["signal"]
    assert cached.dtype == np.bool_
    np.testing.assert_array_equal(cached, direct)
