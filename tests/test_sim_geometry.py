"""Geometry as data: TrackML layout, module ids, consistency checks."""

import copy

import numpy as np
import pytest
import yaml

from trackformers.sim.geometry import (
    DEFAULT_GEOMETRY,
    DISK,
    GeometryError,
    geometry_from_dict,
    load_geometry,
    module_ids,
)


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(DEFAULT_GEOMETRY.read_text())


def test_trackml_layout():
    g = load_geometry()
    sens = g.sensitive
    barrel = sens & (g.kind != DISK)
    assert sorted(g.pos[barrel].tolist()) == [32, 72, 116, 172, 260, 360, 500, 660, 820, 1020]
    assert set(g.volume_id[sens].tolist()) == {7, 8, 9, 12, 13, 14, 16, 17, 18}
    assert (g.kind[sens] == DISK).sum() == 2 * (7 + 6 + 6)
    # TrackML numbering: volume 7 layer 2 is the farthest disk at -z, volume 9 layer 2 nearest
    v7 = g.volume_id == 7
    assert g.pos[v7 & (g.layer_id == 2)][0] == -1500 and g.pos[v7 & (g.layer_id == 14)][0] == -600
    assert g.pos[(g.volume_id == 9) & (g.layer_id == 2)][0] == 600
    np.testing.assert_allclose(g.sigma_u[g.volume_id == 8], 0.05 / np.sqrt(12))
    np.testing.assert_allclose(g.sigma_v[g.volume_id == 17], 10.4 / np.sqrt(12))
    # module overlaps from the ACTS GenericDetector: per barrel layer in phi, along z per volume
    inner = (g.volume_id == 8) & (g.layer_id == 2)
    assert (
        g.overlap[inner][0] == 0.245 and g.overlap[(g.volume_id == 8) & (g.layer_id == 4)] == 0.15
    )
    z_ov = g.z_overlaps()
    assert z_ov[g.volume_id == 8].tolist() == [2.0] * 4 and set(z_ov[g.volume_id == 13]) == {5.0}
    assert not z_ov[g.kind == DISK].any()


def test_module_ids_cover_segmentation():
    g = load_geometry()
    s = np.flatnonzero((g.volume_id == 8) & (g.layer_id == 2))[0]  # r = 32: 16 x 14 modules
    phi, z = np.meshgrid(np.linspace(-np.pi + 1e-3, np.pi - 1e-3, 160), np.linspace(-490, 490, 140))
    x, y = 32 * np.cos(phi.ravel()), 32 * np.sin(phi.ravel())
    mod, centre = module_ids(g, np.full(x.size, s), x, y, z.ravel())
    assert sorted(set(mod.tolist())) == list(range(1, 16 * 14 + 1))
    assert np.all(np.abs(np.angle(np.exp(1j * (centre - phi.ravel())))) <= np.pi / 16 + 1e-9)
    d = np.flatnonzero((g.volume_id == 9) & (g.layer_id == 2))[0]  # rings 28 + 40 modules
    r, ph = np.meshgrid(np.linspace(32, 175, 50), np.linspace(-3.1, 3.1, 200))
    mod, _ = module_ids(
        g,
        np.full(r.size, d),
        (r * np.cos(ph)).ravel(),
        (r * np.sin(ph)).ravel(),
        np.full(r.size, 600.0),
    )
    assert sorted(set(mod.tolist())) == list(range(1, 28 + 40 + 1))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["barrels"][0]["layers"][1].update(r=20.0), "must exceed the previous"),
        (lambda s: s["barrels"][1].update(volume_id=8), "volume_id 8 is duplicated"),
        (lambda s: s["endcaps"][0].update(z=[400.0, 700.0]), "intersects barrel volume 8"),
        (lambda s: s["endcaps"][0]["rings"][1].update(r_min=110.0), "rings must be contiguous"),
        (lambda s: s["barrels"][2].pop("half_z"), "missing field 'half_z'"),
        (lambda s: s["barrels"][0].update(x_over_x0=-0.1), "x_over_x0"),
        (lambda s: s["endcaps"][1].update(z=[1500.0, 1220.0]), "must increase"),
        (lambda s: s["barrels"][0]["layers"][0].update(n_phi=0), "n_phi and n_z must be >= 1"),
        (lambda s: s["world"].update(r=1000.0), "reaches outside the world"),
        (lambda s: s.pop("world"), "missing field 'world'"),
        (lambda s: s["barrels"][0]["layers"][2].update(overlap=0.6), "layer 2: 'overlap'"),
        (lambda s: s["barrels"][1].update(z_overlap=200.0), "'z_overlap' must be in"),
        (lambda s: s["barrels"][1].update(z_overlap=-1.0), "'z_overlap' must be in"),
    ],
)
def test_inconsistent_geometry_is_rejected(spec, edit, message):
    bad = copy.deepcopy(spec)
    edit(bad)
    with pytest.raises(GeometryError, match=message):
        geometry_from_dict(bad)


def test_bad_geometry_file_names_the_file(tmp_path, spec):
    bad = copy.deepcopy(spec)
    bad["barrels"][0]["layers"][1]["r"] = 20.0
    path = tmp_path / "geo.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(GeometryError, match=str(path)):
        load_geometry(path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_geometry(tmp_path / "nope.yaml")
