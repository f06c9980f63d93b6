"""GPU clustering equals the CPU results (which equal sklearn, tests/test_cluster_dbscan.py)."""

import numpy as np
import pytest
import torch

from trackformers.attention.plans import cluster_plan
from trackformers.attention.synthetic import synthetic_batch
from trackformers.cluster import dbscan, dbscan_in_plan, track_list

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("d", [4, 32])
def test_cuda_dbscan_equals_cpu(d):
    rng = np.random.default_rng(d)
    batch = synthetic_batch([20_000, 7_000], seed=d)
    pid = batch.particle_id.numpy()
    centre = rng.normal(size=(pid.max() + 1, d))
    x = torch.from_numpy(centre[pid] + rng.normal(size=(len(pid), d)) * 0.01)  # float64
    eps = 0.05 if d == 4 else 0.15
    cpu = dbscan(x, batch.cu_seqlens, eps, 3)
    gpu = dbscan(x.cuda(), batch.cu_seqlens.cuda(), eps, 3, max_pairs=1 << 20)
    assert cpu.max() > 1000
    assert torch.equal(gpu.cpu(), cpu)
    plan_cpu = cluster_plan(batch, group_size=128, sector_size=4096)
    plan_gpu = cluster_plan(batch.to("cuda"), group_size=128, sector_size=4096)
    a = dbscan_in_plan(x, plan_cpu, eps, 3)
    b = dbscan_in_plan(x.cuda(), plan_gpu, eps, 3)
    assert torch.equal(a, b.cpu())
    hits, ptr, lab = track_list(b)
    assert ptr[-1].item() == int((b >= 0).sum()) and lab.numel() == int(b.max()) + 1


@pytest.mark.parametrize("window", [64, 512])
def test_cuda_window_dbscan_equals_cpu(window):
    """The tiled Triton kernel (phi window with wrap-around, two events) equals the torch
    path on the CPU, and the cluster plan's neighbourhood likewise."""
    from trackformers.cluster import cluster_hits

    rng = np.random.default_rng(window)
    batch = synthetic_batch([20_000, 7_000], seed=3)
    pid = batch.particle_id.numpy()
    centre = rng.normal(size=(pid.max() + 1, 32))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    x = torch.from_numpy(centre[pid] + rng.normal(size=(len(pid), 32)) * 0.005).float()
    p = {"eps": 0.1, "min_samples": 2, "neighbourhood": "window", "window": window}
    cpu = cluster_hits("dbscan_plan", x, batch.cu_seqlens, coords=batch.coords, **p)
    g = batch.to("cuda")
    gpu = cluster_hits("dbscan_plan", x.cuda(), g.cu_seqlens, coords=g.coords, **p)
    assert cpu.max() > 1000
    assert torch.equal(gpu.cpu(), cpu)
