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


def _batch(n=50, noise=5):
    g = torch.Generator().manual_seed(0)
    pid = torch.randint(1, 8, (n,), generator=g)
    pid[:noise] = 0
    targets = {
        "theta": torch.rand(n, generator=g) * math.pi,
        "phi": (torch.rand(n, generator=g) * 2 - 1) * math.pi,
        "q": torch.where(torch.rand(n, generator=g) > 0.5, 1.0, -1.0),
        "pt": torch.rand(n, generator=g) * 5 + 0.5,
    }
    for k in targets:
        targets[k][:noise] = float("nan")  # noise hits have no particle parameters
    return PackedBatch(
        x=torch.randn(n, 3, generator=g),
        cu_seqlens=torch.tensor([0, n], dtype=torch.int32),
        max_seqlen=n,
        coords=torch.randn(n, 3, generator=g),
        particle_id=pid,
        targets=targets,
    )


def test_regression_perfect_prediction_is_zero_and_phi_wraps():
    batch = _batch()
    loss = ParameterRegressionLoss(
        {"theta": {}, "phi": {"kind": "angle"}, "q": {}, "qpt": {"scale": 2.0}}, kind="huber"
    )
    assert loss.n_outputs == 5
    t = batch.targets
    perfect = torch.stack(
        [t["theta"], torch.sin(t["phi"]), torch.cos(t["phi"]), t["q"], t["q"] / t["pt"] / 2.0], 1
    )
    assert loss({"params": perfect}, batch).item() == pytest.approx(0.0, abs=1e-10)
    decoded = loss.decode(perfect)
    torch.testing.assert_close(decoded["phi"][5:], t["phi"][5:])
    torch.testing.assert_close(decoded["qpt"][5:], (t["q"] / t["pt"])[5:])
    # phi near +pi predicted as near -pi costs almost nothing with the sin/cos encoding
    only_phi = ParameterRegressionLoss({"phi": {"kind": "angle"}})
    batch.targets["phi"][5:] = math.pi - 1e-3
    pred = torch.stack(
        [
            torch.sin(torch.full((50,), -math.pi + 1e-3)),
            torch.cos(torch.full((50,), -math.pi + 1e-3)),
        ],
        1,
    )
    assert only_phi({"params": pred}, batch).item() < 1e-5


def test_regression_ignores_noise_and_gradients_flow():
    batch = _batch()
    loss = ParameterRegressionLoss({"theta": {}})
    pred = torch.zeros(50, 1, requires_grad=True)
    value = loss({"params": pred}, batch)
    assert torch.isfinite(value)  # NaN targets of noise hits never enter
    value.backward()
    assert pred.grad[:5].abs().sum() == 0 and pred.grad[5:].abs().sum() > 0


def test_regression_errors_name_missing_target_and_width():
    batch = _batch()
    with pytest.raises(KeyError, match="'eta'"):
        ParameterRegressionLoss({"eta": {}})({"params": torch.zeros(50, 1)}, batch)
    with pytest.raises(ValueError, match="columns"):
        ParameterRegressionLoss({"theta": {}})({"params": torch.zeros(50, 3)}, batch)
    with pytest.raises(ValueError, match="kind"):
        ParameterRegressionLoss({"theta": {"kind": "log"}})


def test_binned_ce_bins_noise_class_and_class_weights():
    batch = _batch()
    spec = {
        "phi": {"low": -math.pi, "high": math.pi, "bins": 4},
        "q": {"low": -1.5, "high": 1.5, "bins": 2},
    }
    loss = BinnedCrossEntropyLoss(spec, noise="class")
    assert loss.n_outputs == (4 + 1) + (2 + 1)
    assert loss.bin_index("phi", torch.tensor([-4.0, -3.0, 0.1, 3.0, 9.0])).tolist() == [
        0,
        0,
        2,
        3,
        3,
    ]
    # logits that put all mass on the right class (noise -> last class) give ~0
    t = batch.targets
    logits = torch.full((50, 8), -30.0)
    noise = batch.particle_id == 0
    b_phi = torch.where(noise, 4, loss.bin_index("phi", t["phi"].nan_to_num()))
    b_q = torch.where(noise, 2, loss.bin_index("q", t["q"].nan_to_num()))
    logits[torch.arange(50), b_phi] = 30.0
    logits[torch.arange(50), 5 + b_q] = 30.0
    assert loss({"logits": logits}, batch).item() < 1e-6
    # ignoring noise, the noise rows no longer matter at all
    ign = BinnedCrossEntropyLoss({"phi": spec["phi"]}, noise="ignore")
    lg = torch.randn(50, 4, requires_grad=True)
    ign({"logits": lg}, batch).backward()
    assert lg.grad[:5].abs().sum() == 0
    # class weights change the value; wrong length is an error naming the parameter
    w = BinnedCrossEntropyLoss({"phi": {**spec["phi"], "class_weights": [1, 5, 1, 1]}})
    unw = BinnedCrossEntropyLoss({"phi": spec["phi"]})
    r = torch.randn(50, 4)
    assert w({"logits": r}, batch).item() != pytest.approx(unw({"logits": r}, batch).item())
    with pytest.raises(ValueError, match="'phi'.*class_weights"):
        BinnedCrossEntropyLoss({"phi": {**spec["phi"], "class_weights": [1, 2]}})


def test_combined_loss_weights_terms_and_skips_zero():
    batch = _batch()
    reg = ParameterRegressionLoss({"theta": {}})
    con = SupConLoss(0.2)
    out = {"params": torch.randn(50, 1), "embedding": torch.randn(50, 4)}
    r, c = reg(out, batch).item(), con(out, batch).item()
    total, parts = CombinedLoss({"regression": reg, "contrastive": con}, {"contrastive": 0.25})(
        out, batch
    )
    assert total.item() == pytest.approx(r + 0.25 * c, rel=1e-5)
    assert set(parts) == {"regression", "contrastive"}
    total, parts = CombinedLoss({"regression": reg, "contrastive": con}, {"contrastive": 0.0})(
        out, batch
    )
    assert set(parts) == {"regression"} and total.item() == pytest.approx(r, rel=1e-6)
    with pytest.raises(ValueError, match="unknown terms"):
        CombinedLoss({"regression": reg}, {"hinge": 1.0})
    assert CombinedLoss({"regression": reg}).output_sizes() == {"params": 1}
