"""Signal anchors and top-k hard negatives of the contrastive loss: equal to dense references
(loss and gradient), no (N, N) tensor, bad options rejected with the option named."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from trackformers.data.batch import PackedBatch
from trackformers.losses import (
    SupConLoss,
    hard_infonce_naive,
    hard_negatives,
    positive_table,
    signal_labels,
    supcon_naive,
)


def _event_batch(lengths, n_particles=6, dim=8, noise_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels = torch.randint(1, n_particles + 1, (n,), generator=g)
    labels[torch.rand(n, generator=g) < noise_frac] = 0
    emb = torch.randn(n, dim, generator=g, dtype=torch.float64)
    # per-particle signal flag (ids repeat across events on purpose: flag per (event, id))
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    flag = torch.rand(len(lengths), n_particles + 1, generator=g) < 0.5
    signal = flag[seq, labels] & (labels != 0)
    return emb, labels, cu, signal


def _batch(emb, labels, cu, signal=None):
    return PackedBatch(
        x=emb.float(),
        cu_seqlens=cu,
        max_seqlen=int(cu.diff().max()),
        coords=torch.randn(emb.shape[0], 3),
        particle_id=labels,
        targets={} if signal is None else {"signal": signal},
    )


def _loss_and_grad(loss, emb, batch):
    e = emb.clone().requires_grad_(True)
    value = loss({"embedding": e}, batch)
    value.backward()
    return value.detach(), e.grad


def _naive_and_grad(fn, emb):
    e = emb.clone().requires_grad_(True)
    value = fn(F.normalize(e, dim=-1))
    value.backward()
    return value.detach(), e.grad


@pytest.mark.parametrize("noise", ["negative", "ignore"])
@pytest.mark.parametrize("k", [1, 3, 1000])  # 1000 > every event
@pytest.mark.parametrize("tile_elems", [5, 1 << 20])
@pytest.mark.parametrize("layout", ["gather", "masked"])
def test_topk_matches_dense_reference(noise, k, tile_elems, layout):
    emb, labels, cu, _ = _event_batch([13, 1, 29, 2, 40])
    valid = labels != 0 if noise == "ignore" else torch.ones_like(labels, dtype=bool)
    loss = SupConLoss(
        0.3, negatives="topk", topk=k, noise=noise, tile_elems=tile_elems, topk_layout=layout
    )
    got, g_got = _loss_and_grad(loss, emb, _batch(emb, labels, cu))
    ref, g_ref = _naive_and_grad(
        lambda x: hard_infonce_naive(x.float(), labels, valid, cu, 0.3, k), emb.float()
    )
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got.float(), g_ref, rtol=1e-4, atol=1e-6)
    assert g_got.abs().sum() > 0


def test_topk_with_all_negatives_is_hept_infonce_and_differs_from_supcon():
    """k >= event size keeps every other-particle hit: the HEPT form (positives do not
    compete with each other), which is not SupCon's value."""
    emb, labels, cu, _ = _event_batch([30])
    valid = torch.ones_like(labels, dtype=bool)
    b = _batch(emb, labels, cu)
    hard, _ = _loss_and_grad(SupConLoss(0.2, negatives="topk", topk=10_000), emb, b)
    sup, _ = _loss_and_grad(SupConLoss(0.2), emb, b)
    x = F.normalize(emb.float(), dim=-1)
    logits = x @ x.T / 0.2
    same = (
        (labels[:, None] == labels[None, :]) & ~torch.eye(30, dtype=bool) & (labels[:, None] != 0)
    )
    neg = labels[:, None] != labels[None, :]
    lse = torch.logsumexp(logits.masked_fill(~neg, float("-inf")), 1)
    per_pair = torch.log1p(torch.exp(lse[:, None] - logits))  # -log(e^a / (e^a + sum neg))
    rows = same.any(1)
    expect = ((per_pair * same).sum(1)[rows] / same.sum(1)[rows]).mean()
    torch.testing.assert_close(hard, expect, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(hard, sup, rtol=1e-3)
    del valid


@pytest.mark.parametrize("negatives", ["event", "topk", "topk-masked"])
def test_signal_anchors_match_dense_reference(negatives):
    emb, labels, cu, signal = _event_batch([25, 3, 31], noise_frac=0.3, seed=4)
    valid = torch.ones_like(labels, dtype=bool)
    assert 0 < signal.sum() < (labels != 0).sum()  # signal, low-pT and noise hits all present
    layout = "masked" if negatives.endswith("masked") else "gather"
    negatives = negatives.split("-")[0]
    loss = SupConLoss(
        0.25, negatives=negatives, topk=4, anchors="signal", tile_elems=40, topk_layout=layout
    )
    got, g_got = _loss_and_grad(loss, emb, _batch(emb, labels, cu, signal))
    if negatives == "topk":
        fn = lambda x: hard_infonce_naive(x, labels, valid, cu, 0.25, 4, anchor_mask=signal)
    else:
        fn = lambda x: supcon_naive(x, labels, valid, cu, 0.25, anchor_mask=signal)
    ref, g_ref = _naive_and_grad(lambda x: fn(x.float()), emb.float())
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got.float(), g_ref, rtol=1e-4, atol=1e-6)
    # non-signal hits still receive gradient (as negatives), and the loss differs from "all"
    assert g_got[~signal].abs().sum() > 0
    every, _ = _loss_and_grad(
        SupConLoss(0.25, negatives=negatives, topk=4), emb, _batch(emb, labels, cu)
    )
    assert not torch.isclose(got, every)


def test_signal_labels_give_non_signal_hits_no_partner():
    labels = torch.tensor([0, 5, 5, 7, 7, 9, 9, 0])
    signal = torch.tensor([False, True, True, False, False, True, True, True])  # noise flag ignored
    out = signal_labels(labels, signal)
    assert out[1] == out[2] and out[5] == out[6] and out[1] != out[5]
    others = out[[0, 3, 4, 7]]
    assert len(set(others.tolist())) == 4 and not set(others.tolist()) & set(out[[1, 5]].tolist())
    with pytest.raises(ValueError, match=r"targets\['signal'\] has shape \(3,\)"):
        signal_labels(labels, signal[:3])


def test_positive_table_lists_same_particle_hits_of_the_event():
    emb, labels, cu, _ = _event_batch([11, 1, 17], noise_frac=0.3, seed=2)
    valid = torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)) < 0.8
    table = positive_table(labels, valid, cu)
    seq = torch.repeat_interleave(torch.arange(3), cu.diff().long())
    for i in range(labels.numel()):
        expect = set()
        if valid[i] and labels[i] != 0:
            same = (seq == seq[i]) & (labels == labels[i]) & valid
            same[i] = False
            expect = set(torch.nonzero(same).squeeze(1).tolist())
        got = table[i][table[i] >= 0].tolist()
        assert len(got) == len(set(got)) and set(got) == expect, i
    del emb


def test_hard_negatives_are_the_most_similar_other_particle_hits():
    emb, labels, cu, _ = _event_batch([20, 2, 35], seed=6)
    valid = labels != 0
    anchors = valid.clone()
    anchors[3] = False
    neg = hard_negatives(emb, labels, valid, anchors, cu, k=5, tile_elems=30)
    assert neg.shape == (labels.numel(), 5) and (neg[3] == -1).all()
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        for i in range(s, e):
            if not anchors[i]:
                continue
            other = torch.arange(s, e)
            other = other[(labels[s:e] != labels[i]) & valid[s:e]]
            sims = emb[other] @ emb[i]
            top = sims.topk(min(5, len(other))).values
            got = neg[i][neg[i] >= 0]
            assert (labels[got] != labels[i]).all() and valid[got].all()
            assert len(set(got.tolist())) == len(got) == len(top)  # fewer than k: -1 padded
            torch.testing.assert_close((emb[got] @ emb[i]).sort(descending=True).values, top)
    wide = hard_negatives(emb, labels, valid, anchors, cu, k=10_000)
    assert wide.shape[1] == 35  # k beyond the largest event: capped


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_topk_loss_never_builds_an_n_by_n_tensor():
    n, k, dim, tile = 2000, 16, 8, 20_000
    emb, labels, cu, _ = _event_batch([n], n_particles=400, dim=dim, seed=8)
    batch = _batch(emb, labels, cu)
    e = emb.float().clone().requires_grad_(True)
    loss = SupConLoss(0.2, negatives="topk", topk=k, tile_elems=tile)
    assert not loss._masked(cu, torch.zeros(n, k + 20))  # a large event: the gathered layout
    with _LargestTensor() as rec:
        loss({"embedding": e}, batch).backward()
    assert e.grad.abs().sum() > 0
    width = int(torch.bincount(labels[labels != 0]).max()) + k  # (N, P + k) neighbour table
    assert rec.largest <= max(2 * tile, n * width, n * dim), rec.largest  # O(tile + N (P + k))
    assert rec.largest < n * n / 20
    with _LargestTensor() as dense:  # the recorder does see an N x N matrix when one is made
        hard_infonce_naive(F.normalize(emb.float(), dim=-1), labels, labels >= 0, cu, 0.2, k)
    assert dense.largest >= n * n


def test_topk_module_learns_and_handles_degenerate_batches():
    emb, labels, cu, signal = _event_batch([60, 40], seed=3)
    batch = _batch(emb, labels, cu, signal)
    loss = SupConLoss(0.2, negatives="topk", topk=8, anchors="signal")
    e = emb.float().clone().requires_grad_(True)
    opt = torch.optim.Adam([e], lr=0.2)
    values = []
    for _ in range(20):
        value = loss({"embedding": e}, batch)
        values.append(value.item())
        opt.zero_grad()
        value.backward()
        opt.step()
    assert values[-1] < 0.7 * values[0]
    none = torch.zeros_like(signal)  # no signal hit: zero loss, graph still connected
    e = emb.float().requires_grad_(True)
    value = loss({"embedding": e}, _batch(emb, labels, cu, none))
    value.backward()
    assert value.item() == 0.0 and e.grad is not None


def test_signal_anchors_need_the_signal_target():
    emb, labels, cu, _ = _event_batch([10])
    with pytest.raises(KeyError, match=r"needs target 'signal'.*data config"):
        SupConLoss(anchors="signal")({"embedding": emb}, _batch(emb, labels, cu))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"topk": 0}, r"loss 'contrastive': topk must be an integer >= 1, got 0"),
        ({"topk": -3}, r"topk must be an integer >= 1, got -3"),
        ({"topk": 2.5}, r"topk must be an integer >= 1, got 2.5"),
        ({"topk": True}, r"topk must be an integer >= 1, got True"),
        ({"window": 0}, r"loss 'contrastive': window must be an integer >= 1, got 0"),
        ({"tile_elems": 0}, r"tile_elems must be an integer >= 1, got 0"),
        ({"topk_layout": "dense"}, r"contrastive topk_layout='dense' must be one of"),
        ({"anchors": "pt"}, r"contrastive anchors='pt' must be one of \('all', 'signal'\)"),
        ({"negatives": "hard"}, r"negatives='hard' must be one of \('event', 'window', 'topk'\)"),
        ({"temperature": 0.0}, r"loss 'contrastive': temperature must be > 0, got 0.0"),
        ({"temperature": -1}, r"temperature must be > 0, got -1"),
    ],
)
def test_bad_options_name_the_option_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss(**kwargs)


@pytest.mark.parametrize(
    "name", ["contrastive_signal", "contrastive_hard", "contrastive_hard_signal"]
)
def test_loss_configs_train_on_real_batches(name, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from trackformers.data.synthetic import helix_events
    from trackformers.sim.writer import write_events
    from trackformers.training.build import build

    write_events(tmp_path / "e.root", helix_events(12, seed=2, n_particles=6), {"test": True})
    conf = Path(__file__).resolve().parents[1] / "conf"
    overrides = [
        "experiment=demo_tiny",
        "model=contrastive",
        f"loss={name}",
        "logger=csv",
        f"data.path={tmp_path}",
        "data.val_fraction=0.0",
        "data.test_fraction=0.0",
        "data.class_bins.n_bins=2",
        "data.num_classes=8",
    ]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    datamodule, module, _ = build(cfg)
    term = module.loss.terms["contrastive"]
    assert (term.negatives == "topk") == ("hard" in name)
    assert (term.anchors == "signal") == ("signal" in name)
    datamodule.setup("fit")
    batch = next(iter(datamodule.datasets["train"]))
    assert batch.targets["signal"].dtype == torch.bool
    total, _ = module.loss(module.model(batch), batch)
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.parameters())


def test_topk_auto_layout_picks_masked_tiles_for_small_events():
    loss = SupConLoss(negatives="topk", topk=256)
    small = torch.tensor([0, 500, 1000], dtype=torch.int32)  # n ~ k: dense tiles are cheaper
    big = torch.tensor([0, 60_000], dtype=torch.int32)
    assert loss._masked(small, torch.zeros(1000, 270))
    assert not loss._masked(big, torch.zeros(60_000, 270))
    assert SupConLoss(negatives="topk", topk_layout="masked")._masked(big, torch.zeros(1, 1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)
@pytest.mark.parametrize("layout", ["gather", "masked"])
def test_compiled_topk_tiles_match_dense_reference(device, layout):
    emb, labels, cu, signal = _event_batch([300, 200], n_particles=40, dim=16, seed=9)
    emb, labels, cu, signal = (t.to(device) for t in (emb.float(), labels, cu, signal))
    loss = SupConLoss(
        0.1, negatives="topk", topk=32, anchors="signal", compile=True, topk_layout=layout
    )
    got, g_got = _loss_and_grad(loss, emb, _batch(emb, labels, cu, signal))
    valid = torch.ones_like(labels, dtype=torch.bool)
    ref, g_ref = _naive_and_grad(
        lambda x: hard_infonce_naive(x, labels, valid, cu, 0.1, 32, anchor_mask=signal), emb
    )
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert (g_got - g_ref).norm() / g_ref.norm() < 1e-4
