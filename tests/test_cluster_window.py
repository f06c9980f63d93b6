"""DBSCAN within neighbourhoods of any plan (trackformers.cluster.local_dbscan, tiled kernel)
against a brute-force numpy reference built from the definitions, not from the plan code:

- window: hits sorted by phi = atan2(y, x) per event; i and j are candidates iff their
  circular distance in that order is <= W (or the event has <= 2W + 1 hits);
- cluster: the plan's dense mask (plans.dense_mask_reference);
- eps-pairs among the candidates -> sklearn DBSCAN on the precomputed sparse graph.

Events are ragged (incl. empty and single-hit ones) and have tracks across phi = +-pi, so
the wrap-around part of the window matters (a planted bug that drops it must be caught).
The Triton path runs under TRITON_INTERPRET=1 in ONE child process (this file as a script);
each test asserts one entry of its JSON report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interp_child import Checks, ok, run_child
from scipy.sparse import csr_matrix
from sklearn.cluster import DBSCAN
from test_cluster_range import padded_step_model, padded_step_vs_eager

SIZES = [0, 150, 1, 90, 0, 260]
EPS, MS = 0.15, 3


def wrap_events(sizes=SIZES, seed=0, d=6):
    """coords (N, 3), embedding (N, d), cu (B+1,): particles of ~6 hits close in phi and in
    the embedding; a third of them sit at phi = +-pi (hits on both sides of the cut)."""
    rng = np.random.default_rng(seed)
    coords, emb, pid_all, base = [], [], [], 0
    for n in sizes:
        n_part = max(1, n // 6)
        phi0 = rng.uniform(-np.pi, np.pi, n_part)
        phi0[: n_part // 3] = np.pi - 1e-3  # straddle the cut
        pid = rng.integers(0, n_part, n)
        phi = phi0[pid] + rng.normal(size=n) * 0.01
        phi = (phi + np.pi) % (2 * np.pi) - np.pi
        r = rng.uniform(30, 180, n)
        coords.append(np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(-400, 400, n)], 1))
        centre = rng.normal(size=(n_part, d)) * 0.6
        emb.append(centre[pid] + rng.normal(size=(n, d)) * 0.04)
        pid_all.append(pid + base)
        base += n_part
    cu = np.r_[0, np.cumsum(sizes)].astype(np.int32)
    return (
        np.concatenate(coords).astype(np.float32),
        np.concatenate(emb),
        cu,
        np.concatenate(pid_all),
    )


def window_mask(coords: np.ndarray, cu: np.ndarray, w: int) -> np.ndarray:
    """(N, N) bool candidate pairs of a +-w phi window, from the definition."""
    n = len(coords)
    allowed = np.zeros((n, n), dtype=bool)
    phi = np.arctan2(coords[:, 1], coords[:, 0])
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        m = b - a
        pos = np.empty(m, dtype=np.int64)
        pos[np.argsort(phi[a:b], kind="stable")] = np.arange(m)
        dist = np.abs(pos[:, None] - pos[None, :])
        circ = np.minimum(dist, m - dist)
        allowed[a:b, a:b] = (circ <= w) | (m <= 2 * w + 1)
    return allowed


def reference(x: np.ndarray, allowed: np.ndarray, eps=EPS, ms=MS) -> np.ndarray:
    """sklearn DBSCAN on the eps-graph restricted to ``allowed`` pairs."""
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    keep = allowed & (d <= eps) & ~np.eye(len(x), dtype=bool)
    i, j = np.nonzero(keep)
    graph = csr_matrix((d[i, j], (i, j)), shape=d.shape)
    return DBSCAN(eps=eps, min_samples=ms, metric="precomputed").fit_predict(graph)


def _cluster(coords, x, cu, params, impl, plan=None):
    from trackformers.cluster import cluster_hits

    p = {"eps": EPS, "min_samples": MS, "impl": impl, **params}
    return cluster_hits(
        "dbscan_plan",
        torch.from_numpy(x),
        torch.from_numpy(cu),
        plan=plan,
        coords=torch.from_numpy(coords),
        **p,
    ).numpy()


def _cluster_plan(coords, cu):
    from trackformers.attention.plans import cluster_plan
    from trackformers.data.batch import PackedBatch

    c = torch.from_numpy(coords)
    cu_t = torch.from_numpy(cu)
    b = PackedBatch(x=c, cu_seqlens=cu_t, max_seqlen=int(np.diff(cu).max()), coords=c)
    return cluster_plan(b, group_size=16, sector_size=64, adjacency=1)


def cases(impl: str, only: tuple[str, ...] | None = None) -> dict:
    """[equal to the reference, clusters, noise] per case (shared by both processes):
    windows +-4 and +-16, the model's cluster plan, the same plan built by the clustering,
    and a window covering every event (against plain sklearn DBSCAN); ``only``: a subset."""
    from trackformers.attention.plans import dense_mask_reference

    def want(name):
        return only is None or name in only

    out: dict = {}
    coords, x, cu, _ = wrap_events()
    for w in (4, 16):
        if want(f"window{w}"):
            got = _cluster(coords, x, cu, {"neighbourhood": "window", "window": w}, impl)
            ref = reference(x, window_mask(coords, cu, w))
            out[f"window{w}"] = [
                got.tolist() == ref.tolist(),
                int(ref.max()) + 1,
                int((ref < 0).sum()),
            ]
    if want("model_cluster") or want("own_cluster"):
        plan = _cluster_plan(coords, cu)
        perm = plan.perm.numpy()
        allowed = np.zeros((len(x), len(x)), dtype=bool)
        allowed[np.ix_(perm, perm)] = dense_mask_reference(plan).numpy()
        ref = reference(x, allowed)
        own = {"neighbourhood": "cluster", "group_size": 16, "sector_size": 64, "adjacency": 1}
        # the model's plan, and the same Part-2 plan built by the clustering from the coords
        for name, p, pl in (
            ("model_cluster", {"neighbourhood": "model"}, plan),
            ("own_cluster", own, None),
        ):
            if want(name):
                got = _cluster(coords, x, cu, p, impl, plan=pl)
                out[name] = [got.tolist() == ref.tolist(), int(ref.max()) + 1, int((ref < 0).sum())]
    if want("whole_event"):
        got = _cluster(coords, x, cu, {"neighbourhood": "window", "window": 1000}, impl)
        ref, off = [], 0
        for a, b in zip(cu[:-1], cu[1:], strict=True):
            if b > a:
                lab = DBSCAN(eps=EPS, min_samples=MS).fit_predict(x[a:b])
                ref.append(np.where(lab >= 0, lab + off, -1))
                off += int(lab.max()) + 1
        ref = np.concatenate(ref)
        out["whole_event"] = [
            got.tolist() == ref.tolist(),
            int(ref.max()) + 1,
            int((ref < 0).sum()),
        ]
    return out


# ---- child process (TRITON_INTERPRET=1) ------------------------------------------------------
def _child() -> dict:
    from trackformers.cluster import range_dbscan as rd

    check = Checks()

    check("triton", lambda: cases("triton"))

    def dropped_wrap():  # planted bug: the wrap-around range is lost
        real = rd.plan_ranges
        rd.plan_ranges = lambda *a, **k: tuple(t[:, :1] for t in real(*a, **k))
        try:
            return cases("triton", only=("window16",))["window16"][0]
        finally:
            rd.plan_ranges = real

    check("dropped_wrap", dropped_wrap)

    def per_row_kernel():  # the fallback kernel (TRACKFORMERS_PLAN_KERNEL=rows), same labels
        rd.PLAN_TILED = False
        try:
            return cases("triton", only=("window16", "model_cluster"))
        finally:
            rd.PLAN_TILED = True

    check("per_row_kernel", per_row_kernel)

    def predictor_padded_step():
        # the CUDA-graph step (padding event, static buffers, neighbourhood plan built with
        # sync=False) run eagerly on CPU equals the eager Predictor
        model, batch, eps = padded_step_model()
        res = []
        for w in (8, 200):
            cfg = {
                "method": "dbscan_plan",
                "input": "params",
                "params": {"eps": eps, "min_samples": 3, "neighbourhood": "window", "window": w},
            }
            res.append(padded_step_vs_eager(model, batch, cfg))
        return res

    check("predictor_padded_step", predictor_padded_step)
    return check.report


@pytest.fixture(scope="module")
def report():
    return run_child(__file__)


def _assert_cases(out: dict) -> None:
    for name, (same, n_clusters, noise) in out.items():
        assert same, name
        assert n_clusters > 20 and noise > 0, (name, n_clusters, noise)  # non-trivial


def test_torch_path_equals_reference():
    _assert_cases(cases("torch"))


def test_triton_tiled_path_equals_reference(report):
    _assert_cases(ok(report["triton"]))


def test_per_row_kernel_equals_reference(report):
    _assert_cases(ok(report["per_row_kernel"]))


def test_dropped_wrap_range_is_caught(report):
    assert ok(report["dropped_wrap"]) is False


def test_torch_dropped_wrap_range_is_caught(monkeypatch):
    from trackformers.cluster import range_dbscan as rd

    real = rd.plan_ranges
    monkeypatch.setattr(rd, "plan_ranges", lambda *a, **k: tuple(t[:, :1] for t in real(*a, **k)))
    assert not cases("torch", only=("window16",))["window16"][0]


def test_predictor_step_with_window_equals_eager(report):
    for same, pad_noise, n_clusters, outputs in ok(report["predictor_padded_step"]):
        assert same and pad_noise and n_clusters >= 2
        assert outputs == ["params"]  # the graph keeps the clustering input alone


def test_window_clustering_stays_in_events_and_needs_coords():
    from trackformers.cluster import cluster_hits

    coords, x, cu, _ = wrap_events([40, 40], seed=3)
    x[40:] = x[:40]  # the same points in two events: never one cluster
    lab = _cluster(coords, x, cu, {"neighbourhood": "window", "window": 100}, "torch")
    assert set(lab[:40][lab[:40] >= 0]).isdisjoint(lab[40:][lab[40:] >= 0])
    with pytest.raises(ValueError, match="needs hit coords"):
        cluster_hits(
            "dbscan_plan",
            torch.from_numpy(x),
            torch.from_numpy(cu),
            eps=0.1,
            neighbourhood="window",
            window=8,
        )
    with pytest.raises(ValueError, match="neighbourhood must be one of"):
        cluster_hits(
            "dbscan_plan", torch.from_numpy(x), torch.from_numpy(cu), eps=0.1, neighbourhood="phi"
        )


if __name__ == "__main__":
    print(json.dumps(_child()))


def test_block_unions_of_a_partial_last_block_are_tight():
    """Per block, side and range: the union is exactly min lo / max hi over its active rows,
    also for the partial last block (its padding once turned int64's max into its min, so the
    block scanned from key 0: exact labels, a whole-batch scan)."""
    from trackformers.cluster.tiled_ranges import SIDES, block_unions

    n, bm = 100, 64  # blocks of 64 and 36 rows
    rows = torch.arange(n)
    lo = torch.stack([(rows - 5).clamp_min(0), rows + 20], 1)  # (N, 2): containing, after
    hi = torch.stack([(rows + 6).clamp_max(n), (rows + 30).clamp_max(n)], 1)
    active = rows % 7 != 3
    ulo, uhi = block_unions(lo, hi, active, bm)
    assert ulo.shape == uhi.shape == (2, 2 * SIDES)
    for blk in range(2):
        sl = slice(blk * bm, min(n, (blk + 1) * bm))
        r, a = rows[sl], active[sl]
        for k in range(2):
            l, h = lo[sl, k], hi[sl, k]
            side = torch.where(l > r, 2, torch.where(h <= r, 0, 1))
            for s in range(SIDES):
                use = a & (h > l) & (side == s)
                want = (int(l[use].min()), int(h[use].max())) if use.any() else (0, 0)
                assert (int(ulo[blk, k * SIDES + s]), int(uhi[blk, k * SIDES + s])) == want
    assert int(ulo[1, 1]) == 64 - 5  # the partial block's own rows, not key 0
