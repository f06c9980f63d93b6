"""Learned (eta, phi) attention locality (models/geobias.py): geometry, limits, errors, wiring."""

import math

import pytest
import torch

from trackformers.attention.synthetic import synthetic_batch
from trackformers.models import Encoder
from trackformers.models.geobias import GeoBias, eta_phi, geo_columns


def test_eta_phi_of_known_points():
    coords = torch.tensor([[10.0, 0.0, 0.0], [0.0, 5.0, 5.0], [-3.0, -3.0, -10.0]])
    ep = eta_phi(coords)
    torch.testing.assert_close(ep[:, 1], torch.tensor([0.0, math.pi / 2, -3 * math.pi / 4]))
    want_eta = [0.0, math.asinh(1.0), math.asinh(-10.0 / math.hypot(3.0, 3.0))]
    torch.testing.assert_close(ep[:, 0], torch.tensor(want_eta))


def delta_r2(etaphi):
    """Reference: (n, 2) eta, phi -> (n, n) dR^2 = d_eta^2 + 2 - 2 cos d_phi, built explicitly."""
    d_eta = etaphi[:, None, 0] - etaphi[None, :, 0]
    d_phi = etaphi[:, None, 1] - etaphi[None, :, 1]
    return d_eta.square() + 2.0 - 2.0 * torch.cos(d_phi)


def test_delta_r2_wraps_phi():
    """Two hits at phi = pi - 0.01 and -pi + 0.01 are 0.02 apart, not 2 pi - 0.02."""
    ep = torch.tensor([[0.0, math.pi - 0.01], [0.03, -math.pi + 0.01], [0.0, 0.0]])
    d2 = delta_r2(ep)
    assert d2.shape == (3, 3)
    torch.testing.assert_close(d2[0, 1], torch.tensor(0.03**2 + 0.02**2), rtol=1e-4, atol=0)
    torch.testing.assert_close(d2, d2.T)
    torch.testing.assert_close(d2.diagonal(), torch.zeros(3))
    torch.testing.assert_close(d2[0, 2], torch.tensor(2 - 2 * math.cos(math.pi - 0.01)))


def test_columns_give_minus_dr2_up_to_a_row_constant():
    torch.manual_seed(1)
    coords = torch.randn(40, 3) * torch.tensor([300.0, 300.0, 900.0])
    qc, kc = geo_columns(coords)
    assert qc.shape == kc.shape == (40, 4)
    eta = eta_phi(coords)[:, 0]
    scores = qc @ kc.T - (eta.square() + 2)[:, None]  # (n, n)
    torch.testing.assert_close(scores, -delta_r2(eta_phi(coords)), atol=2e-5, rtol=0)


def test_bias_widths_are_log_spaced():
    g = GeoBias(4, r_min=0.01, r_max=1.0)
    radii = (-0.5 * g.log_w).exp()
    torch.testing.assert_close(radii, torch.tensor([0.01, 0.01 ** (2 / 3), 0.1 ** (2 / 3), 1.0]))


def _reference(q, k, v, log_w, coords):
    """Scores q.k / sqrt(D) - w_h dR^2 with the (H, n, n) bias built explicitly."""
    bias = -log_w.exp()[:, None, None] * delta_r2(eta_phi(coords))[None]  # (H, n, n)
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=bias
    )
    return out.transpose(0, 1)  # (n, H, D)


def test_widened_heads_equal_the_explicit_bias_and_train_the_widths():
    torch.manual_seed(0)
    n, h, d = 50, 3, 8
    coords = torch.randn(n, 3) * torch.tensor([200.0, 200.0, 600.0])
    coords[:10] = coords[10:20] * 1.001  # close pairs: the sharp head matters
    q, k, v = torch.randn(3, n, h, d).unbind(0)
    g = GeoBias(h, r_min=0.02, r_max=1.0)
    qg, kg, vg = g(q, k, v, geo_columns(coords))
    assert qg.shape == kg.shape == vg.shape == (n, h, d + 4) and qg.dtype == torch.float32
    out = torch.nn.functional.scaled_dot_product_attention(
        qg.transpose(0, 1), kg.transpose(0, 1), vg.transpose(0, 1)
    ).transpose(0, 1)[..., :d]
    want = _reference(q, k, v, g.log_w.detach(), coords)  # float32 cancellation: ~1e-7 w eta^2
    torch.testing.assert_close(out, want, atol=2e-3, rtol=0)
    out.square().sum().backward()
    assert g.log_w.grad is not None and torch.all(g.log_w.grad != 0)


def test_sharp_widths_make_each_hit_see_only_itself():
    torch.manual_seed(0)
    coords = torch.tensor([[100.0 * (i + 1), 37.0 * i, 50.0 * i] for i in range(6)])
    q, k, v = torch.randn(3, 6, 2, 8).unbind(0)
    g = GeoBias(2, r_min=1e-4, r_max=1e-4)
    qg, kg, vg = g(q, k, v, geo_columns(coords))
    out = torch.nn.functional.scaled_dot_product_attention(
        qg.transpose(0, 1), kg.transpose(0, 1), vg.transpose(0, 1)
    ).transpose(0, 1)[..., :8]
    torch.testing.assert_close(out, v, atol=1e-5, rtol=0)


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
