"""Sync-free range DBSCAN (trackformers.cluster.range_dbscan) against sklearn and torch.

The Triton kernel runs on CPU only under TRITON_INTERPRET=1, which Triton reads when a kernel
is decorated, so those checks run in ONE child process (this file run as a script) and each
test asserts one entry of its JSON report. The torch-only parts (projection, ranges) are
tested directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interp_child import Checks, ok, run_child


def blobs(rng, sizes, d, n_centres=12, spread=0.3):
    xs = []
    for s in sizes:
        c = rng.normal(size=(n_centres, d)) * 3
        xs.append(c[rng.integers(0, n_centres, s)] + rng.normal(size=(s, d)) * spread)
    return np.concatenate(xs), np.r_[0, np.cumsum(sizes)].astype(np.int32)


def same_partition(a, b) -> bool:
    """Whether labels a and b group the rows alike (-1 = no cluster in both)."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a >= 0], b[b >= 0], strict=True)}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


# ---- child process (TRITON_INTERPRET=1) ------------------------------------------------------
def padded_step_model():
    """(model, batch, eps): an untrained 1-layer regressor, one 90-hit event and a DBSCAN radius
    from the spacing of its outputs (the Predictor padded-step cases)."""
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.models import Encoder, RegressorHead, TrackFormer

    torch.manual_seed(0)
    model = TrackFormer(Encoder(3, 16, 2, 1, attention="dense"), RegressorHead(16, 3))
    batch = synthetic_batch([90], seed=2)
    with torch.no_grad():
        out = model(batch)["params"]  # (90, 3)
    return model, batch, float(torch.cdist(out, out).kthvalue(2, dim=1).values.median())


def padded_step_vs_eager(model, batch, cfg) -> list:
    """The Predictor's CUDA-graph step (a 128-row bucket: padding event, static buffers) run
    eagerly against the eager Predictor: [real rows' labels equal, padding rows all -1,
    clusters, names of the step's outputs]."""
    from trackformers.cluster import range_dbscan as rd
    from trackformers.inference.predictor import Predictor, _EventGraph

    n = batch.num_hits
    pred = Predictor(model, cfg, cuda_graphs=False)
    ref = pred.predict(batch.x, batch.coords).labels
    g = _EventGraph(pred, 128, batch.x.shape[1])
    g.fill(batch.x, batch.coords)
    pred.plan_in_graph = True
    st, lab, out = pred._step(g)
    lab = rd.complete(st, lab)
    return [
        lab[:n].tolist() == ref.tolist(),
        bool((lab[n:] == -1).all()),
        int(ref.max()) + 1,
        sorted(out),
    ]


def _child() -> dict:
    from sklearn.cluster import DBSCAN

    from trackformers.attention.plans import cluster_plan
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.cluster import dbscan, dbscan_cpu, dbscan_in_plan
    from trackformers.cluster import range_dbscan as rd

    rng = np.random.default_rng(0)
    check = Checks()

    def grid_equals_sklearn():
        out = []
        cases = [
            (2, 0.3, 4, 6, torch.float64),
            (3, 0.4, 3, 0, torch.float32),
            (8, 1.0, 5, 1, torch.float64),
            (5, 0.8, 2, 6, torch.float32),
        ]
        for d, eps, ms, rounds, dtype in cases:
            x, cu = blobs(rng, [60, 0, 50, 1, 40], d, spread=0.25)
            ref = dbscan_cpu(x, cu, eps=eps, min_samples=ms)
            t = torch.from_numpy(x).to(dtype)
            got = dbscan(t, torch.from_numpy(cu), eps, ms, impl="triton", rounds=rounds)
            out.append([int(len(np.unique(ref))), float((got.numpy() == ref).mean())])
        return out

    def border_point():
        x = np.array([[0.0], [0.1], [0.2], [0.3], [0.8], [1.3], [1.4], [1.5], [1.6]])
        cu = torch.tensor([0, len(x)], dtype=torch.int32)
        res = []
        for pts in (x, x[::-1].copy()):
            ref = DBSCAN(eps=0.51, min_samples=4).fit_predict(pts)
            got = dbscan(torch.from_numpy(pts), cu, 0.51, 4, impl="triton").numpy()
            res.append(got.tolist() == ref.tolist())
        return res

    def plan_equals_torch():
        batch = synthetic_batch([120, 80], seed=1)
        plan = cluster_plan(batch, group_size=16, sector_size=64, adjacency=1)
        pid = batch.particle_id.numpy()
        centre = rng.normal(size=(pid.max() + 1, 6)) * 0.5
        x = torch.from_numpy(centre[pid] + rng.normal(size=(len(pid), 6)) * 0.05)
        res = []
        for adj in (None, 2):
            a = dbscan_in_plan(x, plan, 0.15, 3, adjacency=adj, impl="torch")
            b = dbscan_in_plan(x, plan, 0.15, 3, adjacency=adj, impl="triton", rounds=1)
            res.append([bool(torch.equal(a, b)), int(a.max()) + 1, int((a < 0).sum())])
        return res

    def padding_is_inert():
        # the real event followed by a padding event (rows invalid, all at one point)
        x, cu = blobs(rng, [80], 3, spread=0.25)
        ref = dbscan_cpu(x, cu, eps=0.4, min_samples=3)
        pad = np.concatenate([x, np.zeros((40, 3))])
        cu_pad = torch.tensor([0, 80, 120], dtype=torch.int32)
        valid = torch.arange(120) < 80
        st = rd.start_grid(torch.from_numpy(pad), cu_pad, 0.4, 3, valid=valid)
        lab = rd.complete(st, rd.number_labels(st)).numpy()
        return [lab[:80].tolist() == ref.tolist(), bool((lab[80:] == -1).all())]

    def filtered_rows_are_absent():
        # rows a hit filter drops (valid False inside an event) neither count towards a
        # neighbour's core size nor join a cluster: the labels of DBSCAN over the kept rows
        # alone (what eager clustering of a filtered event computes), for both kernels
        x, cu = blobs(rng, [150, 110], 3, spread=0.25)
        keep = rng.random(len(x)) < 0.5
        ref = np.full(len(x), -1)
        cu_k = np.r_[0, np.cumsum([keep[a:b].sum() for a, b in zip(cu[:-1], cu[1:], strict=True)])]
        ref[keep] = dbscan_cpu(x[keep], cu_k.astype(np.int32), eps=0.4, min_samples=4)
        valid = torch.from_numpy(keep)
        st = rd.start_grid(torch.from_numpy(x), torch.from_numpy(cu), 0.4, 4, valid=valid)
        grid = rd.complete(st, rd.number_labels(st)).numpy()
        batch = synthetic_batch([150, 110], seed=3)  # a plan over the same row count
        plan = cluster_plan(batch, group_size=1024, sector_size=4096, adjacency=1)
        st = rd.start_plan(torch.from_numpy(x), plan, 0.4, 4, valid=valid)
        tiled = rd.complete(st, rd.number_labels(st)).numpy()
        return [
            grid.tolist() == ref.tolist(),
            same_partition(tiled, ref),
            int(ref.max()) + 1,
            int((ref[keep] == -1).sum()),
        ]

    def pending_is_finished():
        # one long chain: one round cannot label it, complete() finishes the rounds
        x = np.arange(200, dtype=np.float64)[:, None] * 0.1
        x = x[np.random.default_rng(1).permutation(200)]
        cu = torch.tensor([0, 200], dtype=torch.int32)
        st = rd.start_grid(torch.from_numpy(x), cu, 0.15, 2, rounds=1)
        early = rd.number_labels(st)
        pending = bool(st.pending)
        lab = rd.complete(st, early).numpy()
        ref = DBSCAN(eps=0.15, min_samples=2).fit_predict(x)
        return [pending, int(early.max()) + 1, lab.tolist() == ref.tolist()]

    def nonfinite_raises():
        x = torch.zeros(10, 2)
        x[3, 1] = float("nan")
        try:
            dbscan(x, torch.tensor([0, 10], dtype=torch.int32), 0.1, 2, impl="triton")
        except ValueError as err:
            return str(err)
        return "no error"

    def predictor_padded_step():
        # the CUDA-graph step (padding event, static buffers) run eagerly on CPU
        model, batch, eps = padded_step_model()
        cfg = {"method": "dbscan", "input": "params", "params": {"eps": eps, "min_samples": 3}}
        return padded_step_vs_eager(model, batch, cfg)[:3]

    for fn in (
        grid_equals_sklearn,
        border_point,
        plan_equals_torch,
        padding_is_inert,
        filtered_rows_are_absent,
        pending_is_finished,
        nonfinite_raises,
        predictor_padded_step,
    ):
        check(fn.__name__, fn)
    return check.report


@pytest.fixture(scope="module")
def report():
    return run_child(__file__)


def test_grid_dbscan_equals_sklearn(report):
    rows = ok(report["grid_equals_sklearn"])
    assert len(rows) == 4 and all(n > 5 for n, _ in rows)  # non-trivial clusterings
    assert all(frac == 1.0 for _, frac in rows)


def test_border_point_goes_to_first_cluster(report):
    assert ok(report["border_point"]) == [True, True]


def test_plan_dbscan_equals_torch(report):
    rows = ok(report["plan_equals_torch"])
    assert all(same for same, _, _ in rows) and all(n > 20 and noise > 0 for _, n, noise in rows)


def test_padding_is_inert(report):
    assert ok(report["padding_is_inert"]) == [True, True]


def test_filtered_rows_are_absent(report):
    grid_same, tiled_same, n_clusters, noise = ok(report["filtered_rows_are_absent"])
    assert grid_same and tiled_same and n_clusters > 5 and noise > 0


def test_unfinished_rounds_are_completed(report):
    pending, early_clusters, exact = ok(report["pending_is_finished"])
    assert pending and early_clusters > 1 and exact  # one round split the chain; complete fixed it


def test_nonfinite_input_raises(report):
    assert "non-finite" in ok(report["nonfinite_raises"])


def test_predictor_padded_step_equals_eager(report):
    same, pad_noise, n_clusters = ok(report["predictor_padded_step"])
    assert same and pad_noise and n_clusters >= 2


# ---- torch-only parts, in this process ------------------------------------------------------
def test_device_projection_is_orthonormal_and_shrinks_distances():
    from trackformers.cluster.range_dbscan import device_projection

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(500, 7)) * np.array([5, 3, 2, 1, 0.1, 0.1, 0.1]))
    p = device_projection(x, 3)  # (500, 3)
    basis = torch.linalg.lstsq(x - x.mean(0), p - p.mean(0)).solution  # (7, 3)
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=x.dtype), atol=1e-8)
    top = torch.linalg.eigh((x - x.mean(0)).T @ (x - x.mean(0))).eigenvectors[:, -3:]
    assert torch.linalg.matrix_norm(top.T @ basis) > 1.65  # sqrt(3) = aligned, ~1.1 random
    i, j = torch.randint(0, 500, (2, 2000))
    assert ((p[i] - p[j]).norm(dim=1) <= (x[i] - x[j]).norm(dim=1) * (1 + 1e-9)).all()


def test_grid_ranges_contain_every_eps_pair():
    from trackformers.cluster.range_dbscan import grid_ranges

    rng = np.random.default_rng(4)
    x, cu = blobs(rng, [300, 200], 5, spread=0.5)
    x = torch.from_numpy(x)
    seq = torch.repeat_interleave(torch.arange(2), torch.tensor([300, 200]))
    order, lo, hi, overflow = grid_ranges(x, seq, 2, 1.0)
    assert not bool(overflow)
    pos = torch.empty_like(order)
    pos[order] = torch.arange(500)
    d = torch.cdist(x, x)
    same = seq[:, None] == seq[None, :]
    i, j = torch.nonzero((d <= 1.0) & same, as_tuple=True)
    pi, pj = pos[i], pos[j]
    covered = ((lo[pi] <= pj[:, None]) & (pj[:, None] < hi[pi])).any(1)
    assert covered.all() and i.numel() > 2000
    # and ranges never cross events
    cand = torch.zeros(500, 500, dtype=torch.bool)
    for r in range(lo.shape[1]):
        for a in range(500):
            cand[a, lo[a, r] : hi[a, r]] = True
    assert not (cand & ~same[order][:, order]).any()


def test_plan_ranges_equal_the_plan_mask():
    from trackformers.attention.plans import cluster_plan, row_ranges
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.cluster.range_dbscan import plan_ranges

    batch = synthetic_batch([500, 0, 300], seed=5)
    plan = cluster_plan(batch, group_size=32, sector_size=128, adjacency=1)
    lo, hi = plan_ranges(plan)
    ref_lo, ref_hi = row_ranges(plan)
    assert torch.equal(lo, ref_lo) and torch.equal(hi, ref_hi)
    lo2, hi2 = plan_ranges(plan, adjacency=2)
    assert (lo2 <= lo).all() and (hi2 >= hi).all() and ((hi2 - lo2) > (hi - lo)).any()


if __name__ == "__main__":
    print(json.dumps(_child()))
