"""Tiled pairwise losses equal their naive N x N versions, loss and gradient."""

import pytest
import torch

from trackformers.data.batch import PackedBatch
from trackformers.losses import (
    PairwiseHingeLoss,
    SupConLoss,
    hinge_naive,
    supcon_naive,
    tiled_pair_loss,
    window_neighbours,
)
from trackformers.losses.contrastive import SupConPairs
from trackformers.losses.hinge import HingePairs


def _event_batch(lengths, n_particles=6, dim=8, noise_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels = torch.randint(1, n_particles + 1, (n,), generator=g)
    labels[torch.rand(n, generator=g) < noise_frac] = 0
    # particle ids are unique across events only within an event: reuse ids on purpose
    emb = torch.randn(n, dim, generator=g, dtype=torch.float64)
    coords = torch.randn(n, 3, generator=g)
    return emb, labels, cu, coords


def _dense_mask(nbr, n):
    m = torch.zeros(n, n, dtype=torch.bool)
    rows = torch.arange(n)[:, None].expand_as(nbr)
    ok = nbr >= 0
    m[rows[ok], nbr[ok]] = True
    return m


@pytest.mark.parametrize("noise", ["negative", "ignore"])
@pytest.mark.parametrize("tile_elems", [7, 50, 1 << 20])
def test_supcon_event_tiles_match_naive(noise, tile_elems):
    emb, labels, cu, _ = _event_batch([13, 1, 29, 2])
    valid = labels != 0 if noise == "ignore" else torch.ones_like(labels, dtype=bool)
    a = emb.clone().requires_grad_(True)
    b = emb.clone().requires_grad_(True)
    naive = supcon_naive(torch.nn.functional.normalize(a, dim=-1), labels, valid, cu, 0.3)
    pairs = SupConPairs(0.3)
    tiled = tiled_pair_loss(
        torch.nn.functional.normalize(b, dim=-1).double(),
        labels,
        valid,
        pairs,
        cu_seqlens=cu,
        tile_elems=tile_elems,
    )
    naive.backward()
    tiled.backward()
    torch.testing.assert_close(tiled.double(), naive, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12)
    assert a.grad.abs().sum() > 0


@pytest.mark.parametrize("noise", ["negative", "ignore"])
@pytest.mark.parametrize("tile_elems", [7, 1 << 20])
def test_hinge_event_tiles_match_naive(noise, tile_elems):
    emb, labels, cu, _ = _event_batch([17, 3, 25], dim=4)
    emb = emb * 0.4  # many pairs inside the margin
    valid = labels != 0 if noise == "ignore" else torch.ones_like(labels, dtype=bool)
    a = emb.clone().requires_grad_(True)
    b = emb.clone().requires_grad_(True)
    naive = hinge_naive(a, labels, valid, cu, margin=1.0, pos_weight=0.7, neg_weight=1.3)
    tiled = tiled_pair_loss(
        b, labels, valid, HingePairs(1.0, 0.7, 1.3), cu_seqlens=cu, tile_elems=tile_elems
    )
    naive.backward()
    tiled.backward()
    torch.testing.assert_close(tiled.double(), naive, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.grad.double(), a.grad, rtol=1e-9, atol=1e-12)


def test_window_neighbours_are_phi_window():
    cu = torch.tensor([0, 10, 13], dtype=torch.int32)
    phi = torch.cat([torch.randperm(10).double(), torch.tensor([2.0, 0.0, 1.0])]) * 0.3 - 1.0
    coords = torch.stack([torch.cos(phi), torch.sin(phi), torch.zeros_like(phi)], 1).float()
    nbr = window_neighbours(cu, 2, coords=coords)
    assert nbr.shape == (13, 4)
    # event 0: hit with the smallest phi wraps around to the two largest
    order = torch.argsort(phi[:10])
    first = int(order[0])
    assert set(nbr[first].tolist()) == {int(order[1]), int(order[2]), int(order[9]), int(order[8])}
    # event 1 (3 hits <= 2W): every other hit once, rest padded, never crossing events
    for i in range(10, 13):
        row = [j for j in nbr[i].tolist() if j >= 0]
        assert sorted(row) == sorted(set(range(10, 13)) - {i})
    assert (nbr[:10] < 10).all() and (nbr[:10] >= 0).all()


@pytest.mark.parametrize("loss_name", ["supcon", "hinge"])
def test_neighbour_tiles_match_naive_with_mask(loss_name):
    emb, labels, cu, coords = _event_batch([40, 9], dim=6)
    nbr = window_neighbours(cu, 3, coords=coords)
    mask = _dense_mask(nbr, emb.shape[0])
    valid = torch.ones_like(labels, dtype=bool)
    a = emb.clone().requires_grad_(True)
    b = emb.clone().requires_grad_(True)
    if loss_name == "supcon":
        naive = supcon_naive(a, labels, valid, cu, 0.5, pair_mask=mask)
        pairs = SupConPairs(0.5)
    else:
        naive = hinge_naive(a * 0.3, labels, valid, cu, 1.0, pair_mask=mask)
        pairs = HingePairs(1.0, 1.0, 1.0)
    arg = b if loss_name == "supcon" else b * 0.3
    tiled = tiled_pair_loss(arg, labels, valid, pairs, neighbours=nbr, tile_elems=40)
    naive.backward()
    tiled.backward()
    torch.testing.assert_close(tiled.double(), naive, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b.grad.double(), a.grad, rtol=1e-9, atol=1e-12)


def _packed(emb, labels, cu, coords):
    return PackedBatch(
        x=emb.float(),
        cu_seqlens=cu,
        max_seqlen=int(cu.diff().max()),
        coords=coords,
        particle_id=labels,
    )


def test_modules_learn_to_separate_particles():
    """A few SGD steps on free embeddings reduce both losses; noise never anchors."""
    emb, labels, cu, coords = _event_batch([60, 40], dim=8, seed=3)
    batch = _packed(emb, labels, cu, coords)
    for loss in [
        SupConLoss(0.2, tile_elems=2000),
        PairwiseHingeLoss(1.0, negatives="window", window=8),
    ]:
        e = emb.float().clone().requires_grad_(True)
        opt = torch.optim.Adam([e], lr=0.2)
        first = None
        for _ in range(20):
            value = loss({"embedding": e}, batch)
            first = value.item() if first is None else first
            opt.zero_grad()
            value.backward()
            opt.step()
        assert value.item() < 0.8 * first


def test_all_noise_gives_zero_connected_loss():
    emb, labels, cu, coords = _event_batch([10], dim=4)
    labels[:] = 0
    e = emb.float().requires_grad_(True)
    value = SupConLoss(noise="ignore")({"embedding": e}, _packed(emb, labels, cu, coords))
    value.backward()
    assert value.item() == 0.0 and e.grad is not None


def test_missing_truth_and_output_errors_name_the_field():
    emb, labels, cu, coords = _event_batch([10], dim=4)
    batch = _packed(emb, labels, cu, coords)
    with pytest.raises(KeyError, match="embedding"):
        SupConLoss()({"params": emb}, batch)
    batch.particle_id = None
    with pytest.raises(ValueError, match="particle_id"):
        PairwiseHingeLoss()({"embedding": emb}, batch)
    with pytest.raises(ValueError, match="negatives"):
        SupConLoss(negatives="all")
