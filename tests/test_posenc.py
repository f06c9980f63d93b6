"""Sinusoidal feature encoding (models/posenc.py): values, resolution, errors, encoder wiring."""

import math

import pytest
import torch

from trackformers.attention.synthetic import synthetic_batch
from trackformers.models import Encoder
from trackformers.models.posenc import FeatureEncoding

NAMES = ["x", "y", "z", "eta", "sin_phi"]


def test_encoding_values_and_frequencies():
    enc = FeatureEncoding(NAMES, ["eta", "z"], dim_per_feature=4, alpha=100.0)
    x = torch.tensor([[0.0, 0.0, 0.3, 0.01, 0.0]])
    out = enc(x)
    assert out.shape == (1, 8)
    # frequencies alpha * 100^(-k/(n-1)): 100 and 1 for n = 2
    want_eta = [math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)]
    want_z = [math.sin(30.0), math.sin(0.3), math.cos(30.0), math.cos(0.3)]
    torch.testing.assert_close(out[0], torch.tensor(want_eta + want_z))


def test_high_alpha_resolves_small_differences():
    """Two hits 0.002 apart in a scaled feature: nearly equal at alpha 1, far apart at 1000."""
    a = torch.zeros(1, 5)
    b = a.clone()
    b[0, 3] = 0.002
    gap = {}
    for alpha in (1.0, 1000.0):
        enc = FeatureEncoding(NAMES, ["eta"], dim_per_feature=16, alpha=alpha)
        gap[alpha] = (enc(a) - enc(b)).norm().item()
    assert gap[1.0] < 0.01
    assert gap[1000.0] > 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(fields=[]), "empty"),
        (dict(fields=["phi"]), "not input features"),
        (dict(fields=["eta"], dim_per_feature=3), "even integer"),
        (dict(fields=["eta"], dim_per_feature=0), "even integer"),
        (dict(fields=["eta"], alpha=0.0), "alpha"),
        (dict(fields=["eta"], alpha=-5), "alpha"),
    ],
)
def test_bad_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureEncoding(NAMES, **kwargs)


def test_encoder_appends_encoding_and_needs_names():
    batch = synthetic_batch([30, 20], num_features=5, seed=3)
    kw = dict(in_features=5, d_model=32, n_heads=4, n_layers=1)
    posenc = dict(fields=["eta", "sin_phi"], dim_per_feature=8, alpha=1000.0)
    enc = Encoder(**kw, posenc=posenc, feature_names=NAMES)
    assert enc.input_mlp[0].in_features == 5 + 16
    assert enc(batch).shape == (50, 32)
    # the encoded column changes the output although its raw value moves by 1e-3 only
    moved = synthetic_batch([30, 20], num_features=5, seed=3)
    moved.x[:, 3] += 1e-3
    assert not torch.allclose(enc(batch), enc(moved), atol=1e-4)
    with pytest.raises(ValueError, match="feature_names"):
        Encoder(**kw, posenc=posenc)
    with pytest.raises(ValueError, match="feature_names"):
        Encoder(**kw, posenc=posenc, feature_names=NAMES[:3])
