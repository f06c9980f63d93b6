"""Regression, binned cross-entropy and their weighted combination."""

import math

import pytest
import torch

from trackformers.data.batch import PackedBatch
from trackformers.losses import (
    BinnedCrossEntropyLoss,
    CombinedLoss,
    ParameterRegressionLoss,
    SupConLoss,
)

COLUMNS = ["eta", "sin_phi", "cos_phi", "q_over_pt"]


def _batch(n=50, noise=5, n_classes=6):
    g = torch.Generator().manual_seed(0)
    pid = torch.randint(1, 8, (n,), generator=g)
    pid[:noise] = 0
    phi = (torch.rand(n, generator=g) * 2 - 1) * math.pi
    q = torch.where(torch.rand(n, generator=g) > 0.5, 1.0, -1.0)
    params = torch.stack(
        [torch.randn(n, generator=g), torch.sin(phi), torch.cos(phi), q / (1 + 4 * torch.rand(n))],
        1,
    )
    params[:noise] = float("nan")  # noise hits have no particle parameters
    cls = torch.randint(0, n_classes, (n,), generator=g)
    cls[:noise] = -1
    return PackedBatch(
        x=torch.randn(n, 3, generator=g),
        cu_seqlens=torch.tensor([0, n], dtype=torch.int32),
        max_seqlen=n,
        coords=torch.randn(n, 3, generator=g),
        particle_id=pid,
        targets={"params": params, "valid": pid != 0, "class": cls},
    )


def test_regression_perfect_is_zero_noise_ignored_weights_apply():
    batch = _batch()
    loss = ParameterRegressionLoss(COLUMNS, kind="huber")
    perfect = batch.targets["params"].nan_to_num(0.0)
    assert loss({"params": perfect}, batch).item() == pytest.approx(0.0, abs=1e-10)
    pred = torch.zeros(50, 4, requires_grad=True)
    value = loss({"params": pred}, batch)
    assert torch.isfinite(value)  # NaN targets of noise hits never enter
    value.backward()
    assert pred.grad[:5].abs().sum() == 0 and pred.grad[5:].abs().sum() > 0
    # per-column weights and scales
    cols = ParameterRegressionLoss(COLUMNS).per_column({"params": pred}, batch).detach()
    weighted = ParameterRegressionLoss(COLUMNS, weights={"q_over_pt": 3.0, "eta": 0.0})
    expected = cols[1] + cols[2] + 3.0 * cols[3]
    assert weighted({"params": pred}, batch).item() == pytest.approx(expected.item(), rel=1e-6)
    scaled = ParameterRegressionLoss(COLUMNS, scales={"eta": 2.0}).per_column(
        {"params": pred}, batch
    )
    assert scaled[0].item() == pytest.approx(cols[0].item() / 4.0, rel=1e-6)


def test_regression_errors_name_missing_target_and_width():
    batch = _batch()
    with pytest.raises(ValueError, match="num_params"):
        ParameterRegressionLoss(COLUMNS)({"params": torch.zeros(50, 3)}, batch)
    with pytest.raises(KeyError, match="'params'"):
        ParameterRegressionLoss(COLUMNS)({"logits": torch.zeros(50, 4)}, batch)
    with pytest.raises(ValueError, match="d0"):
        ParameterRegressionLoss(COLUMNS, weights={"d0": 1.0})
    batch.targets.pop("params")
    with pytest.raises(KeyError, match="needs target 'params'"):
        ParameterRegressionLoss()({"params": torch.zeros(50, 4)}, batch)


def test_binned_ce_ignores_invalid_noise_class_and_weights():
    batch = _batch(n_classes=6)
    cls = batch.targets["class"]
    good = torch.full((50, 6), -30.0)
    good[torch.arange(50), cls.clamp(min=0)] = 30.0
    loss = BinnedCrossEntropyLoss()
    assert loss({"logits": good}, batch).item() < 1e-6
    lg = torch.randn(50, 6, requires_grad=True)
    loss({"logits": lg}, batch).backward()
    assert lg.grad[:5].abs().sum() == 0 and lg.grad[5:].abs().sum() > 0
    # explicit noise class: the last logit is trained for particle-id-0 hits
    noisy = BinnedCrossEntropyLoss(noise="class")
    with_noise = torch.cat([good, torch.full((50, 1), -30.0)], 1)
    with_noise[:5, :] = -30.0
    with_noise[:5, 6] = 30.0
    assert noisy({"logits": with_noise}, batch).item() < 1e-6
    with_noise[:5, 6] = -30.0
    assert noisy({"logits": with_noise}, batch).item() > 0.1  # 5 of 50 hits at ln 7
    with pytest.raises(ValueError, match=r"num_classes \+ 1"):
        noisy({"logits": good}, batch)
    # class weights change the value; a wrong length is a clear error
    r = torch.randn(50, 6)
    w = BinnedCrossEntropyLoss(class_weights=[1, 5, 1, 1, 1, 1])({"logits": r}, batch)
    assert w.item() != pytest.approx(loss({"logits": r}, batch).item())
    with pytest.raises(ValueError, match="class_weights has 2"):
        BinnedCrossEntropyLoss(class_weights=[1, 2])({"logits": r}, batch)


def test_combined_loss_weights_terms_and_skips_zero():
    batch = _batch()
    reg = ParameterRegressionLoss(COLUMNS)
    con = SupConLoss(0.2)
    out = {"params": torch.randn(50, 4), "embedding": torch.randn(50, 4)}
    r, c = reg(out, batch).item(), con(out, batch).item()
    terms = {"regression": reg, "contrastive": con}
    total, parts = CombinedLoss(terms, {"contrastive": 0.25})(out, batch)
    assert total.item() == pytest.approx(r + 0.25 * c, rel=1e-5)
    assert set(parts) == {"regression", "contrastive"}
    total, parts = CombinedLoss(terms, {"contrastive": 0.0})(out, batch)
    assert set(parts) == {"regression"} and total.item() == pytest.approx(r, rel=1e-6)
    with pytest.raises(ValueError, match="unknown terms"):
        CombinedLoss({"regression": reg}, {"hinge": 1.0})
    assert CombinedLoss({"regression": reg}).output_sizes() == {"params": 4}
