"""Static, sync-free plan build == the previous eager builders, bit for bit (CPU).

``Old*`` below is a frozen copy of the eager builders of commit bbd2589 (plans.py /
blocksparse.py before the static rewrite); the new path pads rows and events, clamps bad
input, replays graphs on CUDA, and must give exactly the same plans and block layouts.
"""

import math

import numpy as np
import pytest
import torch

from trackformers.attention import blocksparse, build, compiled, plans
from trackformers.attention.blocksparse import _first_true, build_layout, plan_layout_tensors
from trackformers.attention.plans import (
    cluster_plan,
    plan_tensors,
    row_ranges,
    stage_length,
    surface_coordinates,
    window_plan,
)
from trackformers.attention.synthetic import synthetic_batch

# ---- reference implementation (plain torch, host syncs allowed) ---------------------------------


def old_event_index(cu, n):
    lengths = cu.diff().long()
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths, output_size=n)


def old_sort_within(segment, value, bound, bits=24):
    """Stable sort by (segment, value quantised to 2^bits steps of [-2^k, 2^k], 2^k >=
    bound): numpy lexsort, independent of the radix-sort key of plans._sort_within (the old
    builders' float64 key differed only for values closer than one step)."""
    half = 2.0 ** math.ceil(math.log2(bound))
    v = value.double().numpy()
    q = np.clip(np.floor((v + half) * (2.0**bits / (2 * half))), 0, 2**bits - 1)
    return torch.from_numpy(np.lexsort((q, segment.numpy()))).long()


def old_inverse(perm):
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return inv


def old_cluster(batch, group_size, sector_size, adjacency):
    coords, cu_seqlens = batch.coords, batch.cu_seqlens
    n = coords.shape[0]
    seq = old_event_index(cu_seqlens, n)
    max_sec = batch.max_seqlen // sector_size + 2
    cu = cu_seqlens.long()
    lengths = cu.diff()
    phi, s = surface_coordinates(coords.float())
    p1 = old_sort_within(seq, phi, math.pi, bits=plans.SECTOR_PHI_BITS)
    rank = torch.arange(n) - cu[seq[p1]]
    n_ev = lengths[seq[p1]]
    n_sec = torch.clamp(torch.div(n_ev + sector_size // 2, sector_size, rounding_mode="floor"), 1)
    sector = torch.empty(n, dtype=torch.long)
    sector[p1] = rank * n_sec // n_ev.clamp_min(1)
    s_lim = plans.ENDCAP_Z_MM + plans.BARREL_RADIUS_MM
    s_key = torch.where(sector % 2 == 0, s, -s)
    perm = old_sort_within(seq * max_sec + sector, s_key, s_lim)
    seg = (seq * max_sec + sector)[perm]
    rows = torch.arange(n)
    new_seg = torch.cat([torch.ones(1, dtype=torch.bool), seg[1:] != seg[:-1]])
    seg_start = torch.cummax(torch.where(new_seg, rows, 0), 0).values
    seg_idx = torch.cumsum(new_seg.long(), 0) - 1
    seg_len = torch.zeros(n, dtype=torch.long).index_add_(0, seg_idx, torch.ones_like(seg_idx))[
        seg_idx
    ]
    rank2 = rows - seg_start
    n_groups = (seg_len + group_size - 1) // group_size
    local = rank2 * n_groups // seg_len
    new_local = torch.cat([torch.zeros(1, dtype=torch.bool), local[1:] != local[:-1]])
    new_group = new_seg | new_local
    group_id = (torch.cumsum(new_group.long(), 0) - 1).int()
    starts = torch.nonzero(new_group).squeeze(1)
    group_ptr = torch.cat([starts, torch.tensor([n])]).int()
    start, end = cu[seq], cu[seq + 1]
    gid, ptr = group_id.long(), group_ptr.long()
    lo = ptr[torch.maximum(gid - adjacency, gid[start])]
    hi = ptr[torch.minimum(gid + adjacency, gid[end - 1]) + 1]
    return perm, old_inverse(perm), group_id, group_ptr, lo[:, None], hi[:, None]


def old_window(batch, w):
    coords, cu = batch.coords, batch.cu_seqlens.long()
    n = coords.shape[0]
    seq = old_event_index(batch.cu_seqlens, n)
    perm = old_sort_within(seq, torch.atan2(coords[:, 1], coords[:, 0]), math.pi)
    start, end = cu[seq], cu[seq + 1]
    rows = torch.arange(n)
    full = (end - start) <= 2 * w + 1
    lo_main = torch.where(full, start, torch.maximum(rows - w, start))
    hi_main = torch.where(full, end, torch.minimum(rows + w + 1, end))
    left_over = torch.where(full, 0, (start - (rows - w)).clamp_min(0))
    right_over = torch.where(full, 0, (rows + w + 1 - end).clamp_min(0))
    wraps_left = left_over > 0
    lo_wrap = torch.where(wraps_left, end - left_over, start)
    hi_wrap = torch.where(wraps_left, end, start + right_over)
    lo, hi = torch.stack([lo_main, lo_wrap], 1), torch.stack([hi_main, hi_wrap], 1)
    return perm, old_inverse(perm), lo, hi


def old_layout(lo, hi, n_pad, block):
    """Old _layout_tensors (argsort-based block lists)."""
    n, r = lo.shape
    pad_rows = torch.arange(n, n_pad)[:, None]
    lo = torch.cat([lo, pad_rows.expand(-1, r)])
    hi = torch.cat([hi, torch.cat([pad_rows + 1, pad_rows.expand(-1, r - 1)], 1)])
    nb = n_pad // block
    qb = (torch.arange(n_pad) // block)[:, None].expand(-1, r)

    def count(b0, b1):
        ok = (b1 > b0).to(torch.int32)
        base = qb * (nb + 1)
        diff = torch.zeros(nb * (nb + 1), dtype=torch.int32)
        diff.scatter_add_(0, (base + torch.where(ok > 0, b0, 0)).flatten(), ok.flatten())
        diff.scatter_add_(0, (base + torch.where(ok > 0, b1, 0)).flatten(), -ok.flatten())
        return diff.view(nb, nb + 1).cumsum(1, dtype=torch.int32)[:, :nb]

    def first_true(mask):
        idx = torch.argsort((~mask).to(torch.int8), dim=1, stable=True).to(torch.int32)
        return mask.sum(1, dtype=torch.int32), idx

    nonempty = hi > lo
    t0 = lo // block
    touched = count(t0, torch.where(nonempty, (hi - 1) // block + 1, t0)) > 0
    f0 = (lo + block - 1) // block
    full = count(f0, torch.maximum(hi // block, f0)) == block
    return (lo.int(), hi.int(), *first_true(touched & ~full), *first_true(full))


# ---- tests ----------------------------------------------------------------------------

BATCHES = [
    ([0, 37, 1, 0, 130, 64], 1),
    ([1], 2),
    ([300, 0, 2, 513], 3),
    ([5, 5, 0], 4),
    ([0], 5),
]
CLUSTER = [(8, 32, 1), (16, 1000, 2), (4, 4, 0), (128, 4096, 1), (3, 50, 3)]


def _equal(a, b):
    assert a.shape == b.shape and torch.equal(a.long(), b.long())


def _equal_blocks(a, b):
    """Block layouts (kv_num, kv_idx, full_num, full_idx) equal where FlexAttention reads
    them: counts, and index rows up to their count; every index in range."""
    for num_a, idx_a, num_b, idx_b in ((a[0], a[1], b[0], b[1]), (a[2], a[3], b[2], b[3])):
        _equal(num_a, num_b)
        assert idx_a.shape == idx_b.shape
        nb = idx_a.shape[-1]
        assert bool(((idx_a >= 0) & (idx_a < nb)).all())
        used = torch.arange(nb) < num_a.reshape(-1, 1)  # (QB, KB)
        _equal(idx_a.reshape(-1, nb)[used], idx_b.reshape(-1, nb)[used])


@pytest.mark.parametrize("sizes,seed", BATCHES)
@pytest.mark.parametrize("group_size,sector_size,adjacency", CLUSTER)
def test_cluster_plan_equals_old_eager(sizes, seed, group_size, sector_size, adjacency):
    batch = synthetic_batch(sizes, seed=seed)
    new = cluster_plan(batch, group_size, sector_size, adjacency)
    if batch.num_hits == 0:  # the old builder crashed on a batch without hits
        assert new.perm.numel() == 0 and new.group_ptr.tolist() == [0]
        return
    perm, inv, gid, ptr, lo, hi = old_cluster(batch, group_size, sector_size, adjacency)
    for a, b in ((new.perm, perm), (new.inv_perm, inv), (new.group_id, gid), (new.group_ptr, ptr)):
        _equal(a, b)
    assert new.group_id.dtype == new.group_ptr.dtype == torch.int32
    assert new.perm.dtype == new.inv_perm.dtype == torch.int64
    nlo, nhi = row_ranges(new)
    _equal(nlo, lo)
    _equal(nhi, hi)


@pytest.mark.parametrize("sizes,seed", BATCHES)
@pytest.mark.parametrize("window", [0, 3, 20, 200])
def test_window_plan_equals_old_eager(sizes, seed, window):
    batch = synthetic_batch(sizes, seed=seed)
    new = window_plan(batch, window)
    if batch.num_hits == 0:
        assert new.perm.numel() == 0 and row_ranges(new)[0].shape == (0, 2)
        return
    perm, inv, lo, hi = old_window(batch, window)
    _equal(new.perm, perm)
    _equal(new.inv_perm, inv)
    nlo, nhi = row_ranges(new)
    _equal(nlo, lo)
    _equal(nhi, hi)


@pytest.mark.parametrize("sizes,seed", BATCHES[:3])
@pytest.mark.parametrize("pad,extra_events", [(0, 0), (37, 5), (128, 40)])
def test_padded_program_equals_unpadded(sizes, seed, pad, extra_events):
    """More pad rows (with garbage coordinates) and a longer cu_stage change nothing real."""
    batch = synthetic_batch(sizes, seed=seed)
    n, b = batch.num_hits, batch.num_events
    length = stage_length(b + extra_events)
    coords = torch.cat([batch.coords, 1e4 * torch.randn(pad, 3)])  # (P, 3) garbage pads
    stage = torch.cat([batch.cu_seqlens.long(), torch.full((length - b - 1,), n)])
    kw = dict(max_sec=batch.max_seqlen // 32 + 2, group_size=8, sector_size=32, adjacency=1)
    t = plan_tensors("cluster", coords, stage, **kw)
    perm, inv, gid, ptr, lo, hi = old_cluster(batch, 8, 32, 1)
    g = int(t["num_groups"])
    _equal(t["perm"][:n], perm)
    _equal(t["inv_perm"][:n], inv)
    _equal(t["group_id"][:n], gid)
    _equal(t["group_ptr"][: g + 1], ptr)
    assert t["group_ptr"].shape == (n + pad + 1,) and bool((t["group_ptr"][g:] == n).all())
    _equal(t["lo0"][:n, None], lo)
    _equal(t["hi0"][:n, None], hi)
    rows = torch.arange(n, n + pad)
    _equal(t["lo0"][n:], rows)
    _equal(t["hi0"][n:], rows + 1)
    assert t["info"].tolist()[: b + 1] == batch.cu_seqlens.tolist()


@pytest.mark.parametrize(
    "name,kw",
    [
        ("flex", dict(group_size=16, sector_size=100, block_size=32)),
        ("flex", dict(group_size=8, sector_size=1000, adjacency=2, block_size=16)),
        ("flex", dict(mask="full", block_size=32)),
        ("windowed", dict(window=20, block_size=32)),
        ("windowed", dict(window=200, block_size=16)),
    ],
)
@pytest.mark.parametrize("sizes,seed", BATCHES[:4])
def test_backend_layout_equals_old_layout(name, kw, sizes, seed):
    """The layout built inside the static program == old _layout_tensors on old ranges."""
    batch = synthetic_batch(sizes, seed=seed)
    backend = build(name, impl="torch", **kw)
    plan = backend.plan(batch)
    lay = plan.extra[f"layout_b{backend.block_size}"]
    if name == "windowed":
        *_, lo, hi = old_window(batch, kw["window"])
    elif kw.get("mask") == "full":
        cu, seq = batch.cu_seqlens.long(), old_event_index(batch.cu_seqlens, batch.num_hits)
        lo, hi = cu[seq][:, None], cu[seq + 1][:, None]
    else:
        *_, lo, hi = old_cluster(batch, kw["group_size"], kw["sector_size"], kw.get("adjacency", 1))
    old = old_layout(lo, hi, lay.n_pad, lay.block)
    blocks = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
    _equal(lay.lo, old[0])
    _equal(lay.hi, old[1])
    _equal_blocks([getattr(lay, f) for f in blocks], old[2:])
    general = build_layout(plan, backend.block_size)  # the row_ranges path agrees too
    _equal(general.lo, lay.lo)
    _equal(general.hi, lay.hi)
    _equal_blocks([getattr(general, f) for f in blocks], [getattr(lay, f) for f in blocks])


def test_first_true_is_stable_argsort():
    g = torch.Generator().manual_seed(0)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = torch.rand(37, 53, generator=g) < density
        counts, idx = _first_true(mask)
        _equal(counts, mask.sum(1))
        _equal(idx, torch.argsort((~mask).to(torch.int8), dim=1, stable=True))


def test_packed_outputs_are_aligned_views_cut_to_n():
    t = {
        "perm": torch.arange(10),
        "group_id": torch.arange(7, dtype=torch.int32),
        "lo0": torch.arange(9, dtype=torch.int32),
        "c": torch.arange(12).view(3, 4),
        "blocks": torch.arange(33, dtype=torch.int32).view(1, 1, 3, 11),
        "w16": torch.arange(16, dtype=torch.int32),
        "after": torch.arange(5),
        "flags": torch.arange(6) % 2 == 0,
    }
    layout, buffers = compiled._pack(t)
    out = compiled._unpack(layout, buffers, 3, ("perm", "group_id"))
    assert out.keys() == t.keys()
    assert [b.dtype for b in buffers] == [torch.bool, torch.int32]  # int32+int64: one buffer
    for k, v in t.items():
        _equal(out[k], v[:3] if k in ("perm", "group_id") else v)
        assert out[k].dtype == v.dtype, k
        assert out[k].storage_offset() % compiled.ALIGN == 0, k  # kernels assume alignment


@pytest.fixture
def graph_emulation(monkeypatch):
    """Run the CUDA-graph orchestration on CPU: static buffers reused, outputs cloned."""
    monkeypatch.setattr(compiled, "GRAPH_DEVICES", ("cpu",))
    monkeypatch.setattr(compiled, "_GRAPHS", type(compiled._GRAPHS)())
    return compiled


def test_graph_buffers_reused_without_stale_data_or_aliasing(graph_emulation):
    backend = build("flex", impl="torch", group_size=16, sector_size=100, block_size=32)
    big = synthetic_batch([40, 0, 60], seed=1)  # 100 and 97 hits: same bucket (128)
    small = synthetic_batch([1, 90, 0, 0, 6], seed=2)
    p_big = backend.plan(big)
    kept = {k: v.clone() for k, v in vars(p_big).items() if isinstance(v, torch.Tensor)}
    p_small = backend.plan(small)
    assert len(graph_emulation._GRAPHS) == 1  # one program for both batches
    for k, v in kept.items():  # the first plan is not overwritten by the second replay
        _equal(getattr(p_big, k), v)
    ref = build("flex", impl="torch", group_size=16, sector_size=100, block_size=32)
    graph_emulation.GRAPH_DEVICES = ()
    for got, batch in ((p_big, big), (p_small, small)):
        want = ref.plan(batch)
        for f in ("perm", "inv_perm", "group_id", "group_ptr"):
            _equal(getattr(got, f), getattr(want, f))
        a, b = got.extra["layout_b32"], want.extra["layout_b32"]
        for f in ("lo", "hi", "kv_indices", "full_kv_indices"):
            _equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("emulate", [False, True])
@pytest.mark.parametrize("host_known", [True, False])
@pytest.mark.parametrize(
    "cu,max_seqlen,match",
    [
        ([0, 10, 15], 10, "run from 0 to total_hits=20"),
        ([0, 12, 8, 20], 20, "non-decreasing"),
        ([0, 5, 20], 10, "max_seqlen=10 < longest event"),
        ([3, 10, 20], 10, "run from 0"),
    ],
)
def test_bad_cu_seqlens_rejected(request, monkeypatch, emulate, host_known, cu, max_seqlen, match):
    """Rejected from the host copy before the program (host_known) or, for device
    cu_seqlens of unknown values, from the values the program saw (the one sync)."""
    if emulate:
        request.getfixturevalue("graph_emulation")
    if not host_known:
        monkeypatch.setattr(plans, "host_cu_seqlens", lambda cu: None)
    bad = synthetic_batch([10, 10])
    bad.cu_seqlens = torch.tensor(cu, dtype=torch.int32)
    bad.max_seqlen = max_seqlen
    for make in (
        lambda: cluster_plan(bad, 4, 8),
        lambda: window_plan(bad, 2),
        lambda: build("flex", impl="torch", block_size=16).plan(bad),
    ):
        with pytest.raises(ValueError, match=match):
            make()


def test_sync_free_path_pads_group_ptr_and_asserts_on_device():
    batch = synthetic_batch([30, 0, 1, 45], seed=7)
    exact = cluster_plan(batch, 8, 32)
    free = cluster_plan(batch, 8, 32, sync=False)
    g = int(free.extra["num_groups"])
    assert free.group_ptr.numel() == batch.num_hits + 1 > g + 1
    _equal(free.group_ptr[: g + 1], exact.group_ptr)
    assert bool((free.group_ptr[g:] == batch.num_hits).all())
    for a, b in zip(row_ranges(free), row_ranges(exact), strict=True):  # padding is harmless
        _equal(a, b)
    bad = synthetic_batch([10, 10])
    bad.cu_seqlens = torch.tensor([0, 12, 8, 20], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="cu_seqlens"):
        cluster_plan(bad, 4, 8, sync=False)


def test_empty_batch_and_empty_events():
    batch = synthetic_batch([0, 0])
    assert batch.num_hits == 0 and batch.cu_seqlens.tolist() == [0, 0, 0]
    plan = cluster_plan(batch, 4, 8)
    assert plan.perm.numel() == 0 and plan.group_ptr.tolist() == [0]
    assert window_plan(batch, 3).perm.numel() == 0


def test_synthetic_batch_with_empty_events():
    batch = synthetic_batch([0, 7, 0, 1], seed=3)
    assert batch.cu_seqlens.tolist() == [0, 0, 7, 7, 8]
    assert batch.coords.shape == (8, 3) and batch.x.shape == (8, 3) and batch.max_seqlen == 7
    assert batch.particle_id.shape == (8,) and bool((batch.particle_id >= 1).all())
    assert torch.isfinite(batch.coords).all()
    with pytest.raises(ValueError, match="n_hits"):
        synthetic_batch([-1])


def test_synthetic_batch_targets_are_per_particle():
    batch = synthetic_batch([300, 0, 200], seed=2, num_params=4, num_classes=7)
    params, cls, pid = batch.targets["params"], batch.targets["class"], batch.particle_id
    assert params.shape == (500, 4) and cls.shape == (500,) and batch.targets["valid"].all()
    assert int(cls.min()) >= 0 and int(cls.max()) < 7
    for p in pid.unique()[:20]:  # every hit of a particle carries the particle's targets
        hits = pid == p
        assert (params[hits] == params[hits][0]).all() and (cls[hits] == cls[hits][0]).all()
    assert params.std() > 0.5 and len(cls.unique()) > 1  # drawn, not constant
    assert synthetic_batch([10], seed=2).targets == {}  # none unless asked for
    empty = synthetic_batch([0], num_params=2, num_classes=3)
    assert empty.targets["params"].shape == (0, 2) and empty.targets["class"].shape == (0,)


def test_plan_layout_program_is_one_function():
    """plan_layout_tensors runs without any host sync on CPU tensors of fixed shape."""
    batch = synthetic_batch([50, 20], seed=1)
    coords = torch.cat([batch.coords, torch.zeros(58, 3)])  # (128, 3)
    stage = torch.tensor([0, 50, 70, 70])
    t = plan_layout_tensors("window", coords, stage, block=32, window=5)
    assert t["kv_indices"].shape == (1, 1, 4, 4) and t["lo1"].shape == (128,)


def _plan_fields(plan, block):
    lay = plan.extra[f"layout_b{block}"]
    out = [plan.perm, plan.inv_perm, plan.group_id, plan.group_ptr]
    return out + [lay.lo, lay.hi, *lay.blocks]


GPU_BACKENDS = [
    ("flex", dict(group_size=64, sector_size=1024)),
    ("flex", dict(group_size=32, sector_size=300, adjacency=2, block_size=64)),
    ("flex", dict(mask="full")),
    ("windowed", dict(window=100)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [(True,), (False,)], ids=["compiled", "eager"])
@pytest.mark.parametrize("name,kw", GPU_BACKENDS)
def test_cuda_graph_plans_equal_cpu_plans(monkeypatch, name, kw, variant):
    """Graph replay (compiled integer steps, or all eager) == eager launches on CUDA == CPU,
    bit for bit, for several batches sharing and not sharing a graph."""
    import warnings

    monkeypatch.setattr(compiled, "GRAPH_VARIANTS", variant)
    monkeypatch.setattr(compiled, "_GRAPHS", type(compiled._GRAPHS)())
    backend = build(name, **kw)
    block = backend.block_size
    for sizes, seed in (
        ([3000, 0, 17, 1, 5000], 9),
        ([2990, 5000, 0, 0, 1], 10),
        ([1], 11),
        ([0, 700], 12),
    ):
        cpu = synthetic_batch(sizes, seed=seed)
        gpu = cpu.to("cuda")
        want = _plan_fields(build(name, impl="torch", **kw).plan(cpu), block)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent compile/capture fallback
            got = _plan_fields(backend.plan(gpu), block)
        with monkeypatch.context() as m:
            m.setattr(plans, "GRAPHS", False)
            m.setattr(compiled, "ENABLED", False)
            eager = _plan_fields(backend.plan(gpu), block)
        for a, b, c in zip(want, got, eager, strict=True):
            if a is None:
                assert b is None and c is None
                continue
            _equal(b, c)  # graph replay == eager launches
            _equal(b.cpu(), a)  # == the CPU plan
    assert len(compiled._GRAPHS) == 3 and all(compiled._GRAPHS.values())  # 2 share a bucket


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", GPU_BACKENDS)
def test_plan_of_a_moved_batch_never_syncs(name, kw):
    """A batch moved by PackedBatch.to() carries its cu_seqlens on the host: the plan
    (graph replay, block layout, BlockMask) is built without one device sync and equals the
    plan of the same batch whose cu_seqlens the builder must read back (the synced path)."""
    backend = build(name, **kw)
    block = backend.block_size
    cpu = synthetic_batch([3000, 0, 17, 1, 5000], seed=9)
    moved = cpu.to("cuda")
    unknown = synthetic_batch([3000, 0, 17, 1, 5000], seed=9, device="cuda")
    backend.plan(moved)  # warm-up: compiles and captures (those may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        plan = backend.plan(moved)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    got, want = _plan_fields(plan, block), _plan_fields(backend.plan(unknown), block)
    for a, b in zip(got, want, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", GPU_BACKENDS[::3])
def test_plan_inside_an_outer_cuda_graph(name, kw):
    """The sync-free path records into a caller's CUDA graph and replays on new inputs."""
    backend = build(name, **kw)
    block = backend.block_size
    static = synthetic_batch([3000, 0, 1500], seed=1, device="cuda")
    other = synthetic_batch([1500, 3000, 0], seed=2, device="cuda")  # same N, B, max_seqlen
    backend.plan(static)  # warm-up (compiles the program)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        backend.plan(static, sync=False)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan = backend.plan(static)  # capturing: sync-free automatically
    for field in ("coords", "x", "cu_seqlens"):
        getattr(static, field).copy_(getattr(other, field))
    graph.replay()
    torch.cuda.synchronize()
    ref = backend.plan(other)
    got, want = _plan_fields(plan, block), _plan_fields(ref, block)
    if name == "flex" and kw.get("mask") != "full":
        g = int(plan.extra["num_groups"])
        got[3] = got[3][: g + 1]
    for a, b in zip(got, want, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.gpu
def test_plan_capture_tolerates_a_pin_memory_thread(monkeypatch):
    """A DataLoader's pin-memory thread allocating pinned host memory while a new bucket's
    plan graph is captured must not break the capture (no fallback warning, equal plans)."""
    import threading
    import warnings

    monkeypatch.setattr(compiled, "_GRAPHS", type(compiled._GRAPHS)())
    kw = dict(group_size=64, sector_size=1024)
    backend = build("flex", **kw)
    reference = build("flex", impl="torch", **kw)
    stop = threading.Event()

    def pin_loop():
        while not stop.is_set():
            torch.empty(1 << 20, dtype=torch.uint8, pin_memory=True).fill_(1)

    thread = threading.Thread(target=pin_loop, daemon=True)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns
            for i, sizes in enumerate(([3000, 17], [9000, 1], [20000], [40000, 5])):
                cpu = synthetic_batch(sizes, seed=20 + i)
                got = _plan_fields(backend.plan(cpu.to("cuda")), backend.block_size)
                want = _plan_fields(reference.plan(cpu), backend.block_size)
                for a, b in zip(got, want, strict=True):
                    assert (a is None and b is None) or torch.equal(a.cpu(), b)
    finally:
        stop.set()
        thread.join()
    assert len(compiled._GRAPHS) == 4 and all(compiled._GRAPHS.values())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [8, 16, 64])
def test_contiguous_layout_equals_difference_arrays(seed, block):
    """Cluster/full plans take the per-block min/max layout; it equals the general
    difference-array layout on random batches (several events, pads, adjacency 0..3)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 300, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g)
    batch = synthetic_batch(sizes.tolist(), seed=seed)
    n = batch.num_hits
    coords, stage = plans._stage(batch, plans.bucket_length(n, block))  # zero pad rows
    for kind, kw in (
        ("full", {}),
        *[
            (
                "cluster",
                dict(
                    max_sec=batch.max_seqlen // 40 + 2, group_size=gs, sector_size=40, adjacency=adj
                ),
            )
            for gs, adj in ((5, 0), (7, 1), (16, 2), (3, 3))
        ],
    ):
        t = plan_tensors(kind, coords, stage, **kw)
        ranges = [(t["lo0"], t["hi0"])]
        fast = blocksparse.layout_tensors(ranges, block, contiguous=True)
        slow = blocksparse.layout_tensors(ranges, block)
        _equal_blocks(
            [fast[k] for k in blocksparse.BLOCK_KEYS], [slow[k] for k in blocksparse.BLOCK_KEYS]
        )


def test_contiguous_layout_would_be_wrong_for_wrapping_windows():
    """The check above can fail: a window range with a gap is not a contiguous block union."""
    n, block = 64, 8
    lo = torch.arange(n, dtype=torch.int32)
    hi = lo + 1
    lo[:block], hi[:block] = 0, 1  # rows 0..7 attend key 0 ...
    lo[block - 1], hi[block - 1] = n - 1, n  # ... and row 7 the last key: a gap in block 0
    fast = blocksparse.layout_tensors([(lo, hi)], block, contiguous=True)
    slow = blocksparse.layout_tensors([(lo, hi)], block)
    assert not torch.equal(fast["kv_num_blocks"], slow["kv_num_blocks"])


@pytest.mark.parametrize("seed", range(8))
def test_host_group_count_equals_program(seed):
    """cluster_group_count (host ints, what lets a plan skip the sync) == the program's."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 700, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
    batch = synthetic_batch(sizes.tolist(), seed=seed)
    cu = batch.cu_seqlens.tolist()
    for gs, ss in ((1, 1), (3, 7), (8, 32), (16, 100), (128, 4096), (50, 33)):
        kw = dict(max_sec=batch.max_seqlen // ss + 2, group_size=gs, sector_size=ss)
        t = plan_tensors("cluster", *plans._stage(batch, batch.num_hits), **kw)
        assert plans.cluster_group_count(cu, gs, ss) == int(t["num_groups"]), (sizes, gs, ss)


def test_host_cu_seqlens_recorded_and_dropped_on_change():
    import gc

    from trackformers.data import batch as batch_mod

    cu = torch.tensor([0, 5, 12], dtype=torch.int32)  # stands in for a device copy
    batch_mod._remember_host_cu(cu, [0, 5, 12])
    assert batch_mod._recorded(cu) == [0, 5, 12]
    assert batch_mod._recorded(cu.clone()) is None  # another tensor: unknown
    key = id(cu)
    cu.add_(0)  # modified in place: the recorded values no longer count
    assert batch_mod._recorded(cu) is None
    del cu
    gc.collect()
    assert key not in batch_mod._HOST_CU  # dropped with the tensor
    assert batch_mod.host_cu_seqlens(torch.tensor([0, 3])) == [0, 3]  # host tensors: direct
    with torch.inference_mode():  # inference tensors have no version counter: never recorded
        frozen = torch.tensor([0, 4], dtype=torch.int32)
        batch_mod._remember_host_cu(frozen, [0, 4])
        assert batch_mod._recorded(frozen) is None


@pytest.mark.parametrize(
    "num_segments,bits", [(4, 12), (8, 12), (9, 12), (128, 24), (129, 24), (1 << 20, 24)]
)
def test_sort_keys_of_every_width_give_the_lexicographic_order(num_segments, bits):
    """int16, int32 and int64 keys (chosen by segment count and value bits) all sort by
    (segment, quantised value), ties in input order; NaN sorts as the lowest value."""
    g = torch.Generator().manual_seed(num_segments)
    seg = torch.randint(0, num_segments, (4000,), generator=g)
    val = (torch.rand(4000, generator=g) * 2 - 1) * 3.1
    val[1::9] = val[::9][: val[1::9].numel()]  # exact ties
    val[5] = float("nan")
    got = plans._sort_within(seg, val, math.pi, num_segments, bits=bits)
    want = old_sort_within(seg, torch.nan_to_num(val, nan=-4.0), math.pi, bits=bits)
    _equal(got, want)
