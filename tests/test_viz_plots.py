"""Plots render to files; mask density and same-track coverage equal dense-mask references."""

import numpy as np
import pytest
import torch

from trackformers.attention.plans import cluster_plan, dense_mask_reference, full_plan, window_plan
from trackformers.data.batch import PackedBatch
from trackformers.metrics import evaluate_event, track_table
from trackformers.viz import (
    event_display,
    label_colours,
    mask_density,
    plot_attention,
    plot_breakdown_bars,
    plot_efficiency,
    plot_fake_rate,
    same_track_coverage,
    save,
)


def toy_event(rng, n_part=30, hits_per=8, noise=20):
    phi = rng.uniform(-np.pi, np.pi, n_part)
    eta = rng.uniform(-2, 2, n_part)
    r = np.tile(np.linspace(30, 180, hits_per), n_part)
    pid = np.repeat(np.arange(1, n_part + 1), hits_per)
    ph, et = phi[pid - 1], eta[pid - 1]
    z = r * np.sinh(et)
    x, y = r * np.cos(ph), r * np.sin(ph)
    x, y, z = (np.r_[a, rng.normal(0, 100, noise)] for a in (x, y, z))
    pid = np.r_[pid, np.zeros(noise, int)]
    pt = rng.uniform(0.5, 5, n_part)
    w = (pid > 0).astype(float)
    return {
        "event_id": 1,
        "pileup": 0,
        "hit_x": x,
        "hit_y": y,
        "hit_z": z,
        "hit_particle_id": pid.astype(np.uint64),
        "hit_weight": w / w.sum(),
        "hit_volume_id": np.full(len(pid), 8),
        "part_particle_id": np.arange(1, n_part + 1, dtype=np.uint64),
        "part_px": pt * np.cos(phi),
        "part_py": pt * np.sin(phi),
        "part_pz": pt * np.sinh(eta),
    }


def batch_of(events):
    xyz = [np.stack([e["hit_x"], e["hit_y"], e["hit_z"]], 1) for e in events]
    coords = torch.tensor(np.concatenate(xyz), dtype=torch.float32)
    lens = [len(e["hit_x"]) for e in events]
    cu = torch.tensor(np.r_[0, np.cumsum(lens)], dtype=torch.int32)
    return PackedBatch(x=coords, cu_seqlens=cu, max_seqlen=max(lens), coords=coords)


def test_plots_write_files(rng, tmp_path):
    ev = toy_event(rng)
    tid = np.where(rng.random(len(ev["hit_x"])) < 0.8, ev["hit_particle_id"].astype(int), -1)
    _, parts = evaluate_event(ev, tid)
    tracks = track_table(ev, tid)
    paths = [
        save(plot_efficiency(parts, "pt"), tmp_path / "eff_pt.png"),
        save(plot_efficiency({"a": parts, "b": parts}, "eta"), tmp_path / "eff_eta.png"),
        save(plot_fake_rate(tracks), tmp_path / "fake.png"),
        save(plot_breakdown_bars(parts, "region"), tmp_path / "region.png"),
        save(event_display(ev, tid, max_hits=100), tmp_path / "sub" / "display.png"),
    ]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="track_id has shape"):
        event_display(ev, tid[:-1])


@pytest.mark.parametrize("which", ["full", "cluster", "window"])
def test_mask_views_match_dense_reference(rng, which, tmp_path):
    events = [toy_event(rng, n_part=12), toy_event(rng, n_part=20)]
    batch = batch_of(events)
    plan = {
        "full": lambda: full_plan(batch),
        "cluster": lambda: cluster_plan(batch, group_size=16, sector_size=64),
        "window": lambda: window_plan(batch, 10),
    }[which]()
    dense = dense_mask_reference(plan).numpy()  # (N, N) sorted order
    pid = np.concatenate([e["hit_particle_id"].astype(np.int64) for e in events])
    n = len(pid)
    perm = np.arange(n) if plan.perm is None else plan.perm.numpy()
    ps = pid[perm]
    seq = np.repeat([0, 1], np.diff(plan.cu_seqlens.numpy()))
    same = (ps[:, None] == ps[None]) & (seq[:, None] == seq[None]) & ~np.eye(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        want = np.where(ps != 0, (dense & same).sum(1) / same.sum(1), np.nan)
    got = same_track_coverage(plan, pid)[perm]
    np.testing.assert_allclose(got, want, equal_nan=True)
    a, b = plan.cu_seqlens[:2].tolist()
    dens = mask_density(plan, 0, bins=b - a)  # one row/key per bin: exactly the dense mask
    np.testing.assert_allclose(dens, dense[a:b, a:b].astype(float))
    save(plot_attention(batch.coords, plan, pid, event=1), tmp_path / "att.png")


def test_label_colours_stable_and_noise_grey():
    c = label_colours(np.array([3, 3, -1, 7]), noise=-1)
    assert np.allclose(c[0], c[1]) and not np.allclose(c[0], c[3]) and c[2][0] == pytest.approx(0.7)
