"""Learned (eta, phi) attention locality (models/geobias.py): geometry, limits, errors, wiring."""

import math

import pytest
import torch

from trackformers.attention.synthetic import synthetic_batch
from trackformers.models import Encoder
from trackformers.models.geobias import GeoBias, biased_attention, delta_r2, eta_phi


def test_eta_phi_of_known_points():
    coords = torch.tensor([[10.0, 0.0, 0.0], [0.0, 5.0, 5.0], [-3.0, -3.0, -10.0]])
    ep = eta_phi(coords)
    torch.testing.assert_close(ep[:, 1], torch.tensor([0.0, math.pi / 2, -3 * math.pi / 4]))
    want_eta = [0.0, math.asinh(1.0), math.asinh(-10.0 / math.hypot(3.0, 3.0))]
    torch.testing.assert_close(ep[:, 0], torch.tensor(want_eta))


def test_delta_r2_wraps_phi():
    """Two hits at phi = pi - 0.01 and -pi + 0.01 are 0.02 apart, not 2 pi - 0.02."""
    ep = torch.tensor([[0.0, math.pi - 0.01], [0.03, -math.pi + 0.01], [0.0, 0.0]])
    d2 = delta_r2(ep)
    assert d2.shape == (3, 3)
    torch.testing.assert_close(d2[0, 1], torch.tensor(0.03**2 + 0.02**2))
    torch.testing.assert_close(d2, d2.T)
    assert torch.all(d2.diagonal() == 0)
    torch.testing.assert_close(d2[0, 2], torch.tensor((math.pi - 0.01) ** 2))


def test_bias_widths_are_log_spaced_and_learnable():
    g = GeoBias(4, r_min=0.01, r_max=1.0)
    radii = (-0.5 * g.log_w).exp()
    torch.testing.assert_close(radii, torch.tensor([0.01, 0.01 ** (2 / 3), 0.1 ** (2 / 3), 1.0]))
    d2 = torch.tensor([[0.0, 0.01**2], [0.01**2, 0.0]])
    bias = g(d2)
    assert bias.shape == (4, 2, 2)
    assert bias[0, 0, 1].item() == pytest.approx(-1.0, rel=1e-5)  # dR = r_min: -1
    bias.sum().backward()
    assert g.log_w.grad is not None and torch.all(g.log_w.grad != 0)


def test_zero_bias_is_plain_attention_and_strong_bias_is_local():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 6, 2, 8).unbind(0)  # (n, H, D) each
    plain = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    ).transpose(0, 1)
    torch.testing.assert_close(biased_attention(q, k, v, torch.zeros(2, 6, 6)), plain)
    far = torch.full((6, 6), 1e4).fill_diagonal_(0.0)  # every other hit far away
    local = biased_attention(q, k, v, -far.expand(2, 6, 6))
    torch.testing.assert_close(local, v, atol=1e-5, rtol=0)  # each hit sees only itself


@pytest.mark.parametrize("kw", [dict(r_min=0.0), dict(r_min=0.5, r_max=0.1), dict(r_max=math.inf)])
def test_bad_radii_are_refused(kw):
    with pytest.raises(ValueError, match="r_min"):
        GeoBias(4, **kw)


def test_encoder_with_geo_bias():
    batch = synthetic_batch([30, 20], num_features=3, seed=3)
    kw = dict(in_features=3, d_model=16, n_heads=2, n_layers=2)
    torch.manual_seed(0)
    plain = Encoder(**kw)
    torch.manual_seed(0)
    geo = Encoder(**kw, geo_bias=dict(r_min=0.05, r_max=1.0))
    missing, unexpected = geo.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("geo.log_w" in m for m in missing) and len(missing) == 2
    h = geo(batch)
    assert h.shape == (50, 16) and torch.isfinite(h).all()
    other = synthetic_batch([30, 20], num_features=3, seed=3)
    other.coords[30:] += 100.0  # event 1 changed: event 0's outputs stay
    other.x[30:] += 1.0
    out = geo(other)
    torch.testing.assert_close(out[:30], h[:30])
    assert not torch.allclose(out[30:], h[30:])
    with torch.no_grad():  # widths -> 0: the bias vanishes and the plain encoder comes back
        for block in geo.blocks:
            block.attn.geo.log_w.fill_(-60.0)
    torch.testing.assert_close(geo(batch), plain(batch), atol=1e-5, rtol=1e-5)


def test_geo_bias_needs_dense_attention():
    with pytest.raises(ValueError, match="attention=dense"):
        Encoder(3, 16, 2, 1, attention="windowed", geo_bias=dict(r_min=0.05))
