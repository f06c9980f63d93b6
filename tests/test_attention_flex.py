"""flex and windowed backends == float64 masked dense reference, forward and gradients.

CPU: the torch block-sparse path (fwd + bwd) and eager FlexAttention with the same BlockMask
(forward; FlexAttention has no CPU backward). GPU (marked gpu): compiled FlexAttention.
"""

import pytest
import torch

from trackformers.attention import available, build
from trackformers.attention.blocksparse import bucket_length, build_layout
from trackformers.attention.plans import dense_mask_reference
from trackformers.attention.synthetic import synthetic_batch

SIZES = [300, 17, 1, 500]
CONFIGS = [
    ("flex", dict(group_size=16, sector_size=100, block_size=32)),
    ("flex", dict(group_size=8, sector_size=1000, adjacency=2, block_size=16)),
    ("flex", dict(mask="full", block_size=32)),
    ("windowed", dict(window=20, block_size=32)),
    ("windowed", dict(window=200, block_size=16)),
]


def reference(q, k, v, mask):
    q, k, v = (t.double() for t in (q, k, v))
    s = torch.einsum("ihd,jhd->hij", q, k) / q.shape[-1] ** 0.5  # (H, N, N)
    return torch.einsum("hij,jhd->ihd", s.masked_fill(~mask, float("-inf")).softmax(-1), v)


def input_mask(plan):
    m = dense_mask_reference(plan)
    return m if plan.inv_perm is None else m[plan.inv_perm][:, plan.inv_perm]


@pytest.fixture(scope="module")
def batch():
    return synthetic_batch(SIZES, seed=11)


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_torch_path_forward_and_gradients(batch, name, kw):
    backend = build(name, impl="torch", **kw)
    plan = backend.plan(batch)
    q, k, v = (
        torch.randn(batch.num_hits, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    out = backend(q, k, v, plan)
    ref = reference(q, k, v, input_mask(plan))
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name,kw", CONFIGS)
def test_eager_flexattention_with_the_blockmask(batch, name, kw):
    backend = build(name, impl="flex", **kw)
    plan = backend.plan(batch)
    q, k, v = (torch.randn(batch.num_hits, 2, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(
        backend(q, k, v, plan), reference(q, k, v, input_mask(plan)), atol=1e-10, rtol=1e-10
    )


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_block_layout_equals_blocks_of_the_mask(batch, name, kw):
    """Visited key blocks == blocks holding an allowed pair; full blocks == all-allowed blocks."""
    backend = build(name, **kw)
    plan = backend.plan(batch)
    lay = build_layout(plan, backend.block_size)
    bs, n, n_pad = lay.block, lay.n, lay.n_pad
    mask = torch.zeros(n_pad, n_pad, dtype=torch.bool)
    mask[:n, :n] = dense_mask_reference(plan)
    mask[torch.arange(n, n_pad), torch.arange(n, n_pad)] = True  # pad rows attend themselves
    blocks = mask.view(n_pad // bs, bs, n_pad // bs, bs)
    any_, all_ = blocks.any(3).any(1), blocks.all(3).all(1)  # (QB, KB)

    def dense(num, idx):
        d = torch.zeros_like(any_)
        for qb in range(d.shape[0]):
            d[qb, idx[qb, : num[qb]].long()] = True
        return d

    full = dense(lay.full_kv_num_blocks, lay.full_kv_indices)
    partial = dense(lay.kv_num_blocks, lay.kv_indices)
    assert torch.equal(full, all_)
    assert torch.equal(partial, any_ & ~all_)
    bm = lay.block_mask()
    assert torch.equal(bm.to_dense()[0, 0].bool(), any_)


def test_bucket_length_ladder():
    seen = set()
    for n in range(1, 70000, 97):
        m = bucket_length(n, 128)
        assert m >= n and m % 128 == 0 and m <= max(n * 1.125, n + 128) + 1
        seen.add(m)
    assert len(seen) < 80  # few distinct compiled shapes over 1..70k hits
    assert bucket_length(60000, 128) == bucket_length(61000, 128)


def test_capabilities_declared():
    for name, cls in available().items():
        caps = cls.capabilities
        assert caps.masks and caps.devices and caps.dtypes, name
    assert "cluster" in available()["flex"].capabilities.masks
    assert available()["windowed"].capabilities.masks == ("window",)


def test_bad_arguments():
    with pytest.raises(ValueError, match="flex mask"):
        build("flex", mask="window")
    with pytest.raises(ValueError, match="impl"):
        build("windowed", impl="cuda")
    with pytest.raises(ValueError, match="window"):
        build("windowed", window=-2)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name,kw",
    [
        ("flex", dict(group_size=64, sector_size=1024)),
        ("flex", dict(mask="full")),
        ("windowed", dict(window=100)),
    ],
)
def test_compiled_flex_on_gpu(name, kw):
    batch = synthetic_batch([3000, 700, 5000], seed=3, device="cuda")
    backend = build(name, **kw)
    plan = backend.plan(batch)
    n = batch.num_hits
    q, k, v = (
        torch.randn(n, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    out = backend(q, k, v, plan)
    ref = reference(q, k, v, input_mask(plan))
    assert (out.double() - ref).norm() / ref.norm() < 1e-2
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(out.double(), (q, k, v), g),
        torch.autograd.grad(ref, (q, k, v), g),
        strict=True,
    ):
        assert (a.double() - b).norm() / b.norm() < 2e-2


@pytest.mark.gpu
def test_no_recompilation_across_event_sizes():
    """Same bucket: no recompilation; after one dynamic recompile, none for new sizes."""
    from torch._dynamo.utils import counters

    backend = build("flex", group_size=128)
    graphs = []
    for n in (60000, 60500, 70000, 90000, 45000):
        batch = synthetic_batch([n], seed=n, device="cuda")
        plan = backend.plan(batch)
        q = torch.randn(n, 8, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        backend(q, q, q, plan).sum().backward()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == graphs[1]
    assert graphs[2] == graphs[3] == graphs[4]


def test_wrong_number_of_rows_is_rejected(batch):
    backend = build("flex", impl="torch", block_size=32)
    plan = backend.plan(batch)
    q = torch.randn(batch.num_hits - 1, 2, 8)
    with pytest.raises(ValueError, match="rows but the plan covers"):
        backend(q, q, q, plan)


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_blockmask_query_side_equals_torch_transposition(batch, name, kw):
    """The layout reuses the key-side blocks for the query side (masks are symmetric)."""
    from torch.nn.attention.flex_attention import BlockMask

    backend = build(name, **kw)
    lay = build_layout(backend.plan(batch), backend.block_size)
    ours = lay.block_mask()
    ref = BlockMask.from_kv_blocks(
        lay.kv_num_blocks[None, None],
        lay.kv_indices[None, None],
        lay.full_kv_num_blocks[None, None],
        lay.full_kv_indices[None, None],
        BLOCK_SIZE=lay.block,
    )
    for field in ("q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(ours, field), getattr(ref, field))
    for num, field in (("q_num_blocks", "q_indices"), ("full_q_num_blocks", "full_q_indices")):
        counts = getattr(ref, num)[0, 0]
        for row in range(counts.numel()):
            c = int(counts[row])
            assert torch.equal(
                getattr(ours, field)[0, 0, row, :c], getattr(ref, field)[0, 0, row, :c]
            )


@pytest.mark.parametrize(
    "name,kw",
    [
        ("dense", {}),
        ("dense", dict(pad_efficiency=2.0)),
        ("flex", dict(impl="torch", block_size=16, group_size=8)),
        ("windowed", dict(impl="torch", block_size=16, window=5)),
    ],
)
def test_empty_event_in_the_batch(name, kw):
    from trackformers.data.batch import PackedBatch

    src = synthetic_batch([50, 30], seed=1)
    cu = torch.tensor([0, 50, 50, 80], dtype=torch.int32)
    batch = PackedBatch(x=src.x, cu_seqlens=cu, max_seqlen=50, coords=src.coords)
    backend = build(name, **kw)
    plan = backend.plan(batch)
    q, k, v = (torch.randn(80, 2, 4, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(backend(q, k, v, plan), reference(q, k, v, input_mask(plan)))
