"""Noise hits: TrackML's rate by default for physics processes, none for the gun, spread over
the sensitive area volume by volume as configured, particle id 0 and weight 0."""

import numpy as np
import pytest

from trackformers.sim.events import EventFactory
from trackformers.sim.noise import TRACKML_NOISE_FRACTION, default_noise_fraction
from trackformers.sim.settings import default_settings


def test_trackml_figure_and_defaults_per_process():
    assert TRACKML_NOISE_FRACTION == pytest.approx((120_939 - 103_305) / 103_305, abs=5e-4)
    assert [default_noise_fraction(p) for p in ("ttbar", "tth", "minbias")] == [0.171] * 3
    assert default_noise_fraction("gun") == default_noise_fraction("particles") == 0.0
    for process, want in (("ttbar", 0.171), ("minbias", 0.171), ("gun", 0.0)):
        settings = default_settings(process=process)
        assert settings["detector"]["noise_fraction"] is None  # resolved by the factory
        assert EventFactory(settings).detector.config.noise_fraction == want
    explicit = default_settings(process="ttbar")
    explicit["detector"]["noise_fraction"] = 0.0  # an explicit value wins over the default
    assert EventFactory(explicit).detector.config.noise_fraction == 0.0


def _expected_share(geo, spread):
    """(volumes, share of the noise per volume) computed from the geometry directly."""
    area = geo.area()
    modules = np.where(geo.n_phi > 0, geo.n_phi * geo.n_z, geo.ring_nphi.sum(axis=1))
    channels = area / np.where(geo.sensitive, 12 * geo.sigma_u * geo.sigma_v, 1.0)
    weight = {"area": area, "module": modules * geo.sensitive, "channel": channels}[spread]
    vols = np.unique(geo.volume_id[geo.sensitive])
    share = np.array([weight[geo.volume_id == v].sum() for v in vols]) / weight.sum()
    return vols, share


@pytest.mark.parametrize("spread", ["area", "module", "channel"])
def test_noise_rate_and_spread_over_volumes_match_the_configuration(spread):
    """A gun event with TrackML's noise rate: the noise count is Poisson(0.171 x particle hits)
    and each volume holds its configured share (of the sensitive area, of the modules or of the
    readout channels), within 4 standard deviations."""
    settings = default_settings(process="gun")
    settings["process"].update(n_particles=[3000, 3000], eta=[-3.0, 3.0], pt=[0.5, 5.0])
    settings["detector"].update(noise_fraction=TRACKML_NOISE_FRACTION, noise_spread=spread)
    factory = EventFactory(settings)
    ev = factory.event(0)
    noise = ev["hit_particle_id"] == 0
    n_noise, mean = noise.sum(), TRACKML_NOISE_FRACTION * (~noise).sum()
    assert mean > 3000 and abs(n_noise - mean) < 4 * np.sqrt(mean)
    assert np.all(ev["hit_weight"][noise] == 0) and np.all(ev["hit_tpx"][noise] == 0)
    vols, share = _expected_share(factory.detector.geometry, spread)
    count = np.array([(ev["hit_volume_id"][noise] == v).sum() for v in vols])
    sigma = np.sqrt(n_noise * share * (1 - share))  # binomial spread per volume
    assert np.all(np.abs(count - n_noise * share) < 4 * sigma), (vols, count, n_noise * share)
    assert np.all(ev["hit_module_id"][noise] >= 1)  # the module of the noise hit's position


def test_unknown_noise_spread_is_refused():
    settings = default_settings(process="ttbar")
    settings["detector"]["noise_spread"] = "volume"
    with pytest.raises(ValueError, match="detector.noise_spread must be one of"):
        EventFactory(settings)
