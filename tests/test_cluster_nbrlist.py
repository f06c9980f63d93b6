"""Range DBSCAN over the count pass's fixed-capacity neighbour list (trackformers.cluster.
nbr_list) gives the same labels as the range-kernel passes (list_capacity=0) and sklearn.

Cases: grid ranges (exact DBSCAN, per-row kernel) and plan ranges (a cluster plan and a phi
window with wrap-around, tiled kernel), events packed with an empty and single-hit events and
a padding event (valid=False, all at one point); capacity K large (no overflow row), K = 2
(most rows overflow: their rounds and border rule go through the range kernel restricted
to them, next to list rows in the same blocks) and K = 0 (no list); min_samples 1, 2, 5;
points on a lattice with eps
= the lattice step (many pairs exactly at eps). The table itself is checked against brute
force in float64. The Triton parts run under TRITON_INTERPRET=1 in ONE child process (this
file as a script); each test asserts one entry of its JSON report. The GPU test checks the
list path on CUDA at realistic size and that it never syncs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interp_child import Checks, ok, run_child
from test_cluster_range import blobs
from test_cluster_window import _cluster_plan, reference, window_mask, wrap_events

CAPS = (0, 2, 64)  # list capacities: off, most rows overflow, none overflows
MIN_SAMPLES = (1, 2, 5)
SIZES = [150, 0, 1, 90, 1]  # real events; a padding event follows
PAD = 40


def _packed_with_padding(coords, x, cu):
    """The events followed by a padding event of PAD rows at coords 0 and embedding 0 (as the
    Predictor pads): coords, x, cu and valid (N,) bool."""
    n = len(x)
    coords = np.concatenate([coords, np.zeros((PAD, 3), coords.dtype)])
    x = np.concatenate([x, np.zeros((PAD, x.shape[1]), x.dtype)])
    cu = np.r_[cu, n + PAD].astype(np.int32)
    return coords, x, cu, torch.arange(n + PAD) < n


def _plans(coords, cu, window: int = 16):
    from trackformers.attention.plans import window_plan
    from trackformers.data.batch import PackedBatch

    c, cu_t = torch.from_numpy(coords), torch.from_numpy(cu)
    b = PackedBatch(x=c, cu_seqlens=cu_t, max_seqlen=int(np.diff(cu).max()), coords=c)
    return {"window": window_plan(b, window), "cluster": _cluster_plan(coords, cu)}


def _allowed(plan, coords, cu, n_real: int, window: int = 16) -> np.ndarray:
    """(n_real, n_real) candidate pairs of the real rows, from the definitions."""
    from trackformers.attention.plans import dense_mask_reference

    if plan.kind == "window":
        return window_mask(coords, cu, window)[:n_real, :n_real]
    n = len(coords)
    allowed = np.zeros((n, n), dtype=bool)
    perm = plan.perm.numpy()
    allowed[np.ix_(perm, perm)] = dense_mask_reference(plan).numpy()
    return allowed[:n_real, :n_real]


def _labels(start, k: int):
    """(labels (N,) list, overflow rows or None) of one sync-free run completed exactly."""
    from trackformers.cluster import range_dbscan as rd

    st = start(k)
    lab = rd.complete(st, rd.number_labels(st))
    over = None if st.nlist is None else int(st.nlist.over.sum())
    return lab.tolist(), over


def _compare(start, ref: list) -> list:
    """[every capacity equals the reference, clusters, noise, overflow rows per K > 0]."""
    got = {k: _labels(start, k) for k in CAPS}
    same = all(lab == ref for lab, _ in got.values())
    return [same, int(max(ref)) + 1, int(sum(v < 0 for v in ref)), [got[k][1] for k in CAPS[1:]]]


# ---- child process (TRITON_INTERPRET=1) ------------------------------------------------------
def _child() -> dict:
    from trackformers.cluster import dbscan_cpu
    from trackformers.cluster import range_dbscan as rd

    check = Checks()

    def grid():  # exact DBSCAN (per-row kernel) with a padding event
        rng = np.random.default_rng(0)
        x, cu = blobs(rng, SIZES, 2, n_centres=8, spread=0.2)
        n = len(x)
        _, xp, cup, valid = _packed_with_padding(np.zeros((n, 3)), x, cu)
        out = {}
        for ms in MIN_SAMPLES:
            ref = dbscan_cpu(x, cu, eps=0.3, min_samples=ms).tolist() + [-1] * PAD
            out[ms] = _compare(
                lambda k, ms=ms: rd.start_grid(
                    torch.from_numpy(xp),
                    torch.from_numpy(cup),
                    0.3,
                    ms,
                    valid=valid,
                    list_capacity=k,
                ),
                ref,
            )
        return out

    def plan():  # cluster plan and phi window (tiled kernel), float32, with a padding event
        coords, x, cu, _ = wrap_events(SIZES, seed=1)
        n = len(x)
        coords, xp, cup, valid = _packed_with_padding(coords, x, cu)
        xt = torch.from_numpy(xp).float()
        out: dict = {}
        for kind, pl in _plans(coords, cup).items():
            allowed = _allowed(pl, coords, cup, n)
            for ms in MIN_SAMPLES:
                ref = reference(x, allowed, 0.15, ms).tolist() + [-1] * PAD
                out[f"{kind}{ms}"] = _compare(
                    lambda k, ms=ms, pl=pl: rd.start_plan(
                        xt, pl, 0.15, ms, valid=valid, list_capacity=k
                    ),
                    ref,
                )
        return out

    def ties():  # lattice points (duplicates too), eps = the step: pairs exactly at eps
        rng = np.random.default_rng(2)
        sizes = [120, 1, 80]
        x = rng.integers(0, 9, size=(sum(sizes), 2)).astype(np.float32)
        cu = np.r_[0, np.cumsum(sizes)].astype(np.int32)
        coords, _, _, _ = wrap_events(sizes, seed=2)
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        at_eps = int((d == 1.0).sum())
        pl = _plans(coords, cu)["window"]
        allowed = _allowed(pl, coords, cu, len(x))
        xt = torch.from_numpy(x)
        ref = dbscan_cpu(x, cu, eps=1.0, min_samples=3).tolist()
        grid = _compare(
            lambda k: rd.start_grid(xt, torch.from_numpy(cu), 1.0, 3, list_capacity=k), ref
        )
        ref = reference(x, allowed, 1.0, 3).tolist()
        window = _compare(lambda k: rd.start_plan(xt, pl, 1.0, 3, list_capacity=k), ref)
        return {"pairs_at_eps": at_eps, "grid": grid, "window": window}

    def table():  # the neighbour table against brute force in float64
        out = {}
        rng = np.random.default_rng(3)
        x, cu = blobs(rng, [200, 1, 120], 2, n_centres=8, spread=0.2)
        coords, xw, cuw, _ = wrap_events([200, 1, 120], seed=3)
        plan = _plans(coords, cuw)["window"]
        starts = {  # capacities with both complete and overflow rows
            "grid": lambda: rd.start_grid(
                torch.from_numpy(x), torch.from_numpy(cu), 0.3, 3, list_capacity=8
            ),
            "window": lambda: rd.start_plan(torch.from_numpy(xw), plan, 0.15, 3, list_capacity=4),
        }
        for name, start in starts.items():
            st = start()
            xs = st.xs.double().numpy()
            lo, hi = st.lo.numpy(), st.hi.numpy()
            nbr, count = st.nlist.nbr.numpy(), st.nlist.count.numpy()
            k = nbr.shape[1]
            bad, full, over = 0, 0, 0
            for i in range(len(xs)):
                cand = np.concatenate([np.arange(a, b) for a, b in zip(lo[i], hi[i], strict=True)])
                d2 = ((xs[cand] - xs[i]) ** 2).sum(1)
                want = set(cand[d2 <= st.eps**2].tolist())  # the row itself included
                c = int(count[i])
                if c <= k:
                    full += 1
                    bad += c != len(want) or sorted(nbr[i, :c].tolist()) != sorted(want)
                else:
                    over += 1
                    listed = nbr[i].tolist()
                    bad += c != len(want) or len(set(listed)) != k or not set(listed) <= want
            out[name] = [bad, full, over]
        return out

    def unfinished_rounds():  # one long chain, 1 round: complete() finishes over the list
        from sklearn.cluster import DBSCAN

        x = np.arange(200, dtype=np.float64)[:, None] * 0.1
        x = x[np.random.default_rng(1).permutation(200)]
        cu = torch.tensor([0, 200], dtype=torch.int32)
        ref = DBSCAN(eps=0.15, min_samples=2).fit_predict(x).tolist()
        res = []
        for k in (2, 3):  # 3 neighbours per inner point (itself included): overflow / fits
            st = rd.start_grid(torch.from_numpy(x), cu, 0.15, 2, rounds=1, list_capacity=k)
            early = rd.number_labels(st)
            lab_before = st.lab.clone()
            lab = rd.complete(st, early).tolist()
            kept = bool(torch.equal(st.lab, lab_before))
            res.append(
                [bool(st.pending), int(early.max()) + 1, lab == ref, kept, int(st.nlist.over.sum())]
            )
        return res

    def no_sync_ops():  # no aten op that reads a device value on the host (CPU proxy)
        from torch.utils._python_dispatch import TorchDispatchMode

        banned = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "item")

        class Record(TorchDispatchMode):
            seen: set = set()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.seen.add(func.__name__.split(".")[0])
                return func(*args, **(kwargs or {}))

        coords, x, cu, _ = wrap_events([80, 40], seed=4)
        pl = _plans(coords, cu)
        xt = torch.from_numpy(x).float()
        rd.start_plan(xt, pl["window"], 0.15, 3, list_capacity=2)  # warm-up: caches, compile
        rd.start_grid(xt, torch.from_numpy(cu), 0.15, 3, list_capacity=2)
        with Record() as rec:
            for kind in ("window", "cluster"):
                rd.number_labels(rd.start_plan(xt, pl[kind], 0.15, 3, list_capacity=2))
            rd.number_labels(rd.start_grid(xt, torch.from_numpy(cu), 0.15, 3, list_capacity=2))
        return [sorted(o for o in rec.seen if o in banned), len(rec.seen)]

    for fn in (grid, plan, ties, table, unfinished_rounds, no_sync_ops):
        check(fn.__name__, fn)
    return check.report


@pytest.fixture(scope="module")
def report():
    return run_child(__file__)


def _assert_rows(rows: dict, n_rows: int, min_clusters: int = 3) -> None:
    for name, (same, n_clusters, _, overflow) in rows.items():
        assert same, name
        assert n_clusters >= min_clusters, (name, n_clusters)  # non-trivial clusterings
        over_small, over_big = overflow
        assert over_small > n_rows // 3 and over_big == 0, (name, overflow)
    assert any(noise > 0 for _, _, noise, _ in rows.values())


def test_grid_list_path_equals_sklearn(report):
    _assert_rows(ok(report["grid"]), sum(SIZES))


def test_plan_list_path_equals_sklearn(report):
    rows = ok(report["plan"])
    assert sorted(rows) == sorted(f"{k}{m}" for k in ("window", "cluster") for m in MIN_SAMPLES)
    _assert_rows(rows, sum(SIZES))


def test_ties_at_eps_are_neighbours(report):
    rows = dict(ok(report["ties"]))
    assert rows.pop("pairs_at_eps") > 200
    _assert_rows(rows, 201, min_clusters=2)


def test_table_holds_exactly_the_eps_neighbours(report):
    for name, (bad, full, over) in ok(report["table"]).items():
        assert bad == 0 and full > 100 and over > 10, (name, bad, full, over)


def test_unfinished_rounds_are_completed_over_the_list(report):
    (p2, e2, ok2, kept2, over2), (p3, e3, ok3, kept3, over3) = ok(report["unfinished_rounds"])
    assert p2 and p3 and e2 > 1 and e3 > 1  # one round split the chain
    assert ok2 and ok3 and kept2 and kept3  # complete() is exact, the caller's state untouched
    assert over2 > 150 and over3 == 0


def test_no_host_reads_of_device_values(report):
    banned, n_ops = ok(report["no_sync_ops"])
    assert banned == [] and n_ops > 10


def test_bad_list_capacity_raises():
    from trackformers.cluster import range_dbscan as rd

    x = torch.zeros(4, 2)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="list_capacity must be an int >= 0"):
            rd.start_grid(x, cu, 0.1, 2, list_capacity=bad)


if __name__ == "__main__":
    print(json.dumps(_child()))


# ---- GPU: realistic size, equal to the range path, sync-free ---------------------------------
def _track_embedding(pid: np.ndarray, d: int = 32, noise: float = 0.025, seed: int = 0):
    """(N, d) float32 unit vectors scattered around a unit centre per particle."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(pid.max() + 1, d))
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    x = centre[pid] + rng.normal(size=(len(pid), d)) * noise
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True)).float()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["window", "cluster", "grid"])
def test_cuda_list_path_equals_range_path_and_is_sync_free(kind):
    from trackformers.attention.plans import cluster_plan, window_plan
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.cluster import range_dbscan as rd

    batch = synthetic_batch([40_000, 20_000], seed=7).to("cuda")
    x = _track_embedding(batch.particle_id.cpu().numpy()).cuda()  # (N, 32)
    n = x.shape[0]
    valid = torch.ones(n, dtype=torch.bool, device="cuda")
    eps, ms = 0.2, 3
    plan = None
    if kind == "window":
        plan = window_plan(batch, 512)
    elif kind == "cluster":
        plan = cluster_plan(batch, group_size=128, sector_size=4096, adjacency=1)

    def run(k):
        if plan is None:
            st = rd.start_grid(x, batch.cu_seqlens, eps, ms, valid=valid, list_capacity=k)
        else:
            st = rd.start_plan(x, plan, eps, ms, valid=valid, list_capacity=k)
        return st, rd.number_labels(st)

    st0, lab0 = run(0)
    ref = rd.complete(st0, lab0)
    assert int(ref.max()) + 1 > 1000 and int((ref < 0).sum()) > 0
    for k in (2, 16):
        run(k)  # warm-up: kernels compiled, caches filled
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            st, lab = run(k)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        over = int(st.nlist.over.sum())
        # K = 2: most rows through the overflow pass; K = 16: (nearly) all through the list
        assert (over > n // 10) if k == 2 else (over < n // 100), (k, over)
        assert torch.equal(rd.complete(st, lab), ref), k
