"""Torch DBSCAN equals sklearn DBSCAN label for label; sklearn references and argmax."""

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from trackformers.cluster import (
    argmax_assign,
    cluster_hits,
    connected_components,
    dbscan,
    dbscan_cpu,
    hdbscan_cpu,
    radius_graph,
    split_events,
)


def blobs(rng, sizes, d, n_centres=25, spread=0.3):
    xs = []
    for s in sizes:
        c = rng.normal(size=(n_centres, d)) * 3
        xs.append(c[rng.integers(0, n_centres, s)] + rng.normal(size=(s, d)) * spread)
    return np.concatenate(xs), np.r_[0, np.cumsum(sizes)].astype(np.int32)


@pytest.mark.parametrize(
    ("d", "eps", "min_samples"), [(2, 0.3, 4), (3, 0.4, 3), (8, 1.0, 5), (24, 2.2, 2)]
)
def test_torch_dbscan_equals_sklearn(d, eps, min_samples):
    rng = np.random.default_rng(d)
    x, cu = blobs(rng, [400, 0, 700, 1, 250], d)
    ref = dbscan_cpu(x, cu, eps=eps, min_samples=min_samples)
    assert len(np.unique(ref)) > 10 and (ref == -1).any()  # non-trivial: clusters and noise
    for max_pairs in (1 << 24, 3000):  # chunked and unchunked pair search
        got = dbscan(
            torch.from_numpy(x), torch.from_numpy(cu), eps, min_samples, max_pairs=max_pairs
        )
        np.testing.assert_array_equal(got.numpy(), ref)
    # border points reachable from two clusters: sklearn gives them to the earlier cluster
    got32 = dbscan(torch.from_numpy(x).float(), torch.from_numpy(cu), eps, min_samples)
    assert (got32.numpy() == ref).mean() > 0.99


def test_shared_border_point_goes_to_first_cluster():
    # two clusters and one border point (0.8, not core) within eps of a core of each
    x = np.array([[0.0], [0.1], [0.2], [0.3], [0.8], [1.3], [1.4], [1.5], [1.6]])
    cu = np.array([0, len(x)], np.int32)
    for pts in (x, x[::-1].copy()):  # either cluster found first
        ref = DBSCAN(eps=0.51, min_samples=4).fit_predict(pts)
        got = dbscan(torch.from_numpy(pts), torch.from_numpy(cu), 0.51, 4).numpy()
        np.testing.assert_array_equal(got, ref)
        assert got.tolist().count(0) == 5 and got.tolist().count(1) == 4  # border joined cluster 0


def test_radius_graph_is_exact_and_within_events(rng):
    x, cu = blobs(rng, [150, 200], 5, spread=0.5)
    src, dst = radius_graph(torch.from_numpy(x), torch.from_numpy(cu), 1.2)
    got = set(zip(src.tolist(), dst.tolist(), strict=True))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    ev = np.repeat([0, 1], np.diff(cu))
    want = np.argwhere((d <= 1.2) & (ev[:, None] == ev[None]) & ~np.eye(len(x), dtype=bool))
    assert got == set(map(tuple, want.tolist()))


def test_connected_components_min_label():
    src = torch.tensor([5, 1, 3, 6])
    dst = torch.tensor([4, 2, 2, 7])
    lab = connected_components(src, dst, 9)
    assert lab.tolist() == [0, 1, 1, 1, 4, 4, 6, 6, 8]


def test_hdbscan_and_cluster_hits(rng):
    x, cu = blobs(rng, [300, 200], 3, n_centres=6, spread=0.1)
    lab = hdbscan_cpu(x, cu, min_cluster_size=5)
    per = split_events(lab, cu)
    # labels are unique across events and each event's blobs are recovered
    assert not set(per[0][per[0] >= 0]) & set(per[1][per[1] >= 0])
    assert 4 <= len(np.unique(per[0][per[0] >= 0])) <= 6
    t = torch.from_numpy(x)
    for method, params in [
        ("dbscan", {"eps": 0.3, "min_samples": 3}),
        ("dbscan_cpu", {"eps": 0.3, "min_samples": 3}),
    ]:
        out = cluster_hits(method, t, torch.from_numpy(cu), **params)
        np.testing.assert_array_equal(out.numpy(), dbscan_cpu(x, cu, eps=0.3, min_samples=3))
    with pytest.raises(ValueError, match="unknown clustering method"):
        cluster_hits("kmeans", t, torch.from_numpy(cu))
    with pytest.raises(ValueError, match="does not partition"):
        dbscan_cpu(x, np.array([0, 5]), eps=0.3)
    with pytest.raises(ValueError, match="covers"):
        dbscan(t, torch.tensor([0, 5], dtype=torch.int32), 0.3)


def test_argmax_assign():
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [0.1, 0, 0], [5, 0, 0]])
    cu = torch.tensor([0, 3, 5], dtype=torch.int32)
    assert argmax_assign(logits, cu).tolist() == [0, 1, 2, 3, 3]
    assert argmax_assign(logits, cu, noise_class=2, min_prob=0.5).tolist() == [0, 1, -1, -1, 3]


def test_dbscan_in_plan_equals_sklearn_on_plan_pairs(rng):
    from scipy.sparse import csr_matrix

    from trackformers.attention.plans import cluster_plan, dense_mask_reference
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.cluster import dbscan_in_plan

    batch = synthetic_batch([600, 450], seed=1)
    plan = cluster_plan(batch, group_size=32, sector_size=128, adjacency=1)
    pid = batch.particle_id.numpy()
    centre = rng.normal(size=(pid.max() + 1, 6)) * 0.5
    x = centre[pid] + rng.normal(size=(len(pid), 6)) * 0.05  # (N, 6) track-like embedding
    perm = plan.perm.numpy()
    allowed = np.zeros((len(pid), len(pid)), dtype=bool)
    allowed[np.ix_(perm, perm)] = dense_mask_reference(plan).numpy()  # input order
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    keep = allowed & (d <= 0.15) & ~np.eye(len(pid), dtype=bool)
    i, j = np.nonzero(keep)
    graph = csr_matrix((d[i, j], (i, j)), shape=d.shape)
    ref = DBSCAN(eps=0.15, min_samples=3, metric="precomputed").fit_predict(graph)
    assert len(np.unique(ref)) > 50 and (ref == -1).any()
    for max_elems in (1 << 24, 5000):  # one chunk and many chunks of groups
        got = dbscan_in_plan(
            torch.from_numpy(x), plan, eps=0.15, min_samples=3, max_elems=max_elems
        )
        np.testing.assert_array_equal(got.numpy(), ref)
    # through the generic entry point, and a clear error without a plan
    out = cluster_hits(
        "dbscan_plan", torch.from_numpy(x), batch.cu_seqlens, plan=plan, eps=0.15, min_samples=3
    )
    np.testing.assert_array_equal(out.numpy(), ref)
    with pytest.raises(ValueError, match="needs the batch's attention plan"):
        cluster_hits("dbscan_plan", torch.from_numpy(x), batch.cu_seqlens, eps=0.15)


def test_track_list_groups_hits():
    from trackformers.cluster import track_list

    labels = torch.tensor([3, -1, 0, 3, 0, 7])
    hits, ptr, lab = track_list(labels)
    assert lab.tolist() == [0, 3, 7] and ptr.tolist() == [0, 2, 4, 5]
    assert [sorted(hits[a:b].tolist()) for a, b in zip(ptr[:-1], ptr[1:], strict=True)] == [
        [2, 4],
        [0, 3],
        [5],
    ]


def test_collapsed_points_warn(caplog):
    x = torch.zeros(3000, 4) + torch.randn(3000, 4) * 1e-3  # every pair within eps
    cu = torch.tensor([0, 3000], dtype=torch.int32)
    with caplog.at_level("WARNING", logger="trackformers.cluster.gpu_dbscan"):
        lab = dbscan(x, cu, eps=0.1, min_samples=3)
    assert (lab == 0).all() and "crowded" in caplog.text
