"""Encoder + heads: shapes, permutation equivariance, event independence, Hydra configs."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from trackformers.attention import build
from trackformers.attention.plans import cluster_plan, window_plan
from trackformers.attention.synthetic import synthetic_batch
from trackformers.data.batch import PackedBatch
from trackformers.models import (
    ClassifierHead,
    ContrastiveHead,
    Encoder,
    JointHead,
    RegressorHead,
    TrackFormer,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def small_encoder(**kw):
    args = dict(in_features=5, d_model=32, n_heads=4, n_layers=2, dropout=0.0)
    args.update(kw)
    return Encoder(**args).double()


def permuted(batch, perm):
    return PackedBatch(
        x=batch.x[perm],
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        coords=batch.coords[perm],
    )


@pytest.mark.parametrize("ffn,norm", [("gelu", "layernorm"), ("swiglu", "rmsnorm")])
def test_encoder_is_permutation_equivariant_within_events(ffn, norm):
    batch = synthetic_batch([40, 60], num_features=5, seed=1)
    batch.x = batch.x.double()
    enc = small_encoder(ffn=ffn, norm=norm)
    out = enc(batch)
    assert out.shape == (100, 32)
    perm = torch.cat([torch.randperm(40), 40 + torch.randperm(60)])
    torch.testing.assert_close(enc(permuted(batch, perm)), out[perm])


def test_events_do_not_talk_to_each_other():
    batch = synthetic_batch([40, 60], num_features=5, seed=2)
    batch.x = batch.x.double()
    enc = small_encoder()
    out = enc(batch)
    batch.x[40:] += 1.0
    out2 = enc(batch)
    torch.testing.assert_close(out[:40], out2[:40])
    assert not torch.allclose(out[40:], out2[40:])


@pytest.mark.parametrize("kind", ["cluster", "window"])
def test_reordering_plan_returns_input_order(kind):
    """Encoder permutes once into plan order; must equal per-layer sort/unsort by the backend."""
    batch = synthetic_batch([70, 90], num_features=5, seed=3)
    batch.x = batch.x.double()
    enc = small_encoder()
    plan = cluster_plan(batch, 8, 40) if kind == "cluster" else window_plan(batch, 7)
    out = enc(batch, plan)
    h = enc.input_mlp(batch.x)
    for block in enc.blocks:
        h = block(h, plan)  # the backend sorts and unsorts in every layer
    torch.testing.assert_close(out, enc.final_norm(h))
    full = enc(batch)  # sparse masks really change the result
    assert not torch.allclose(out, full)


def test_heads_outputs():
    batch = synthetic_batch([30, 50], num_features=5, seed=4)
    batch.x = batch.x.double()
    heads = {
        "cla": (ClassifierHead(32, 11), {"logits": 11}),
        "reg": (RegressorHead(32, 4), {"params": 4}),
        "joint": (JointHead(32, 4, 11), {"params": 4, "logits": 11}),
        "con": (ContrastiveHead(32, 16), {"embedding": 16}),
        "con_aux": (ContrastiveHead(32, 16, aux_params=4), {"embedding": 16, "params": 4}),
    }
    for head, keys in heads.values():
        out = TrackFormer(small_encoder(), head.double())(batch)
        assert set(out) == {"hidden", *keys}
        for key, width in keys.items():
            assert out[key].shape == (80, width) and torch.isfinite(out[key]).all()
    emb = TrackFormer(small_encoder(), heads["con"][0])(batch)["embedding"]
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(80, dtype=torch.float64))


def test_joint_classifier_is_conditioned_on_regression():
    head = JointHead(8, 3, 5).double()
    h = torch.randn(10, 8, dtype=torch.float64)
    logits = head(h)["logits"]
    reg_w = head.regressor[-1].weight
    (g,) = torch.autograd.grad(logits.sum(), reg_w)
    assert g.abs().sum() > 0
    head.detach_condition = True
    (g,) = torch.autograd.grad(head(h)["logits"].sum(), reg_w, allow_unused=True)
    assert g is None or g.abs().sum() == 0


@pytest.mark.parametrize(
    "model,attention",
    [
        ("enc_cla", "dense"),
        ("enc_reg", "dense"),
        ("joint", "dense"),
        ("contrastive", "dense"),
        ("joint", "flex"),
        ("contrastive", "windowed"),
    ],
)
def test_hydra_model_configs_instantiate_and_train(model, attention):
    overrides = [
        f"+model={model}",
        f"+attention={attention}",
        "model.encoder.d_model=32",
        "model.encoder.n_heads=4",
        "model.encoder.n_layers=2",
        "+data.num_features=5",
    ]
    if attention != "dense":
        overrides.append("attention.block_size=16")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=None, overrides=overrides)
    net = instantiate(cfg.model)
    assert isinstance(net, TrackFormer) and isinstance(
        net.encoder.attention, type(build(attention))
    )
    batch = synthetic_batch([30, 50], num_features=5, seed=5)
    out = net(batch)
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="divisible"):
        Encoder(5, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="norm"):
        Encoder(5, d_model=32, n_heads=4, norm="batchnorm")
    with pytest.raises(ValueError, match="ffn"):
        Encoder(5, d_model=32, n_heads=4, ffn="relu")
    with pytest.raises(KeyError, match="unknown attention backend"):
        Encoder(5, d_model=32, n_heads=4, attention="nope")
    batch = synthetic_batch([10], num_features=4)
    with pytest.raises(ValueError, match=r"PackedBatch.x has shape \(10, 4\)"):
        Encoder(5, d_model=32, n_heads=4)(batch)


def test_contrastive_head_with_auxiliary_regression_trains_both():
    """model.head.aux_params + loss=contrastive_reg: the embedding and the regressed
    parameters both get gradients, through one encoder."""
    overrides = [
        "+model=contrastive",
        "+attention=dense",
        "+loss=contrastive_reg",
        "model.encoder.d_model=32",
        "model.encoder.n_heads=4",
        "model.encoder.n_layers=1",
        "+data.num_features=5",
        "model.head.aux_params=4",
        "+data.features.targets=[eta,sin_phi,cos_phi,q_over_pt]",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=None, overrides=overrides)
    net, loss_fn = instantiate(cfg.model), instantiate(cfg.loss)
    batch = synthetic_batch([30, 50], num_features=5, seed=6, num_params=4)
    out = net(batch)
    assert out["embedding"].shape == (80, 32) and out["params"].shape == (80, 4)
    total, parts = loss_fn(out, batch)
    assert set(parts) == {"contrastive", "regression"}
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())
    total.backward()
    assert net.head.aux[-1].weight.grad.abs().sum() > 0
    assert net.head.net[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="aux_params"):
        ContrastiveHead(32, 16, aux_params=0)
