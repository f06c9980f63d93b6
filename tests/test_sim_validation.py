"""Validation plot: numbers it reports and the PNG it writes."""

import numpy as np
import pytest

from trackformers.sim.events import EventFactory
from trackformers.sim.validation import validation_plot, validation_summary


def test_validation_plot_on_gun_events(tmp_path):
    f = EventFactory(
        {
            "process": {"name": "gun", "n_particles": [30, 30], "eta": [-2.5, 2.5]},
            "seed": 2,
            "pileup": 0,
        }
    )
    events = [f.event(i) for i in range(3)]
    out = tmp_path / "plots" / "validation.png"
    summary = validation_plot(events, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert summary["n_events"] == 3 and summary["particles"] == 30
    assert summary["hits"] == pytest.approx(np.mean([len(e["hit_id"]) for e in events]))
    assert summary["pull std u"] == pytest.approx(1.0, abs=0.1)
    assert summary["pull std v"] == pytest.approx(1.0, abs=0.1)
    # strip disks: second hits in phi overlaps are measured in their own (rotated) module frame
    full = validation_summary(events)
    disks = np.isin(full["_pull_volume"], [12, 14, 16, 18])
    assert disks.sum() > 200
    assert np.std(full["_pulls_u"][disks]) == pytest.approx(1.0, abs=0.1)
    # ~10 layers for abs(eta) < 2.5, each crossing 1.2 hits with the phi and z overlaps
    assert 9 <= summary["hits per particle (pT > 0.9)"] <= 13
    lo, hi = summary["expected (TrackML, scaled)"]["hits"]
    assert lo == pytest.approx(100_000 / 201) and hi == pytest.approx(120_000 / 201)
