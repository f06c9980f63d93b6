"""On CUDA: the compiled tiled losses equal the naive ones, and a 65 k-hit event's loss
(forward + backward) stays under 2 GiB of GPU memory."""

import pytest
import torch
import torch.nn.functional as F

from trackformers.losses import hinge_naive, supcon_naive, tiled_pair_loss, window_neighbours
from trackformers.losses.contrastive import SupConPairs
from trackformers.losses.hinge import HingePairs

pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _event(n, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, max(2, n // 7), (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.1] = 0
    cu = torch.tensor([0, n // 3, n], dtype=torch.int32)
    emb = torch.randn(n, dim, generator=g)
    return emb.cuda(), labels.cuda(), cu.cuda(), torch.randn(n, 3, generator=g).cuda()


@cuda
@pytest.mark.parametrize("kind", ["supcon", "hinge"])
@pytest.mark.parametrize("negatives", ["event", "window"])
def test_compiled_tiles_match_naive_on_cuda(kind, negatives):
    emb, labels, cu, coords = _event(3000)
    valid = torch.ones_like(labels, dtype=torch.bool)
    mask, nbr = None, None
    if negatives == "window":
        nbr = window_neighbours(cu, 16, coords=coords)
        mask = torch.zeros(3000, 3000, dtype=torch.bool, device="cuda")
        rows = torch.arange(3000, device="cuda")[:, None].expand_as(nbr)
        mask[rows[nbr >= 0], nbr[nbr >= 0]] = True
    a = emb.clone().requires_grad_(True)
    b = emb.clone().requires_grad_(True)
    if kind == "supcon":
        naive = supcon_naive(F.normalize(a, dim=-1), labels, valid, cu, 0.1, pair_mask=mask)
        arg, pairs = F.normalize(b, dim=-1), SupConPairs(0.1)
    else:
        naive = hinge_naive(a * 0.2, labels, valid, cu, 0.5, pair_mask=mask)
        arg, pairs = b * 0.2, HingePairs(0.5, 1.0, 1.0)
    kw = {"neighbours": nbr} if nbr is not None else {"cu_seqlens": cu}
    tiled = tiled_pair_loss(arg, labels, valid, pairs, tile_elems=1 << 20, compile=True, **kw)
    naive.backward()
    tiled.backward()
    torch.testing.assert_close(tiled, naive, rtol=1e-4, atol=1e-5)
    rel = (b.grad - a.grad).norm() / a.grad.norm()
    assert rel < 1e-4, rel


@cuda
@pytest.mark.parametrize("kind", ["supcon", "hinge"])
def test_65k_hit_event_loss_fits_in_2_gib(kind):
    n = 65536
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(1, n // 7, (n,), generator=g).cuda()
    emb = torch.randn(n, 32, generator=g).cuda().requires_grad_(True)
    cu = torch.tensor([0, n], dtype=torch.int32, device="cuda")
    valid = torch.ones_like(labels, dtype=torch.bool)
    pairs = SupConPairs(0.1) if kind == "supcon" else HingePairs(0.5, 1.0, 1.0)
    for _ in range(2):  # the first pass compiles
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        x = F.normalize(emb, dim=-1) if kind == "supcon" else emb
        loss = tiled_pair_loss(x, labels, valid, pairs, cu_seqlens=cu)
        loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        emb.grad = None
    assert torch.isfinite(loss)
    assert peak <= 2 * 1024**3, f"{peak / 1024**3:.2f} GiB"
