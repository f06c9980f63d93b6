"""A dataset is one simulation setting: files of the old defaults (sigma_z 50 mm) are refused
beside files of the new (TrackML beam spot) when read together, not silently mixed."""

import pytest

from trackformers.data.datamodule import TrackDataModule
from trackformers.data.provenance import check_one_setting
from trackformers.data.synthetic import helix_events
from trackformers.sim.settings import default_settings
from trackformers.sim.writer import write_events
from trackformers.simulate import run


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    made = {}
    for name, vertex, seed in (("old", "hllhc", 1), ("new", None, 1), ("new_seed2", None, 2)):
        s = default_settings(process="gun", vertex=vertex)
        s.update(n_events=4, events_per_shard=4, seed=seed, output=str(root / name))
        s["progress"] = False
        (made[name],) = run(s)
    made["imported"] = root / "imported.root"  # no simulation settings (like a TrackML import)
    write_events(made["imported"], helix_events(3, seed=1), {"source": "test"})
    return made


def test_old_and_new_defaults_are_refused_together(datasets):
    with pytest.raises(ValueError, match=r"other settings .*vertex\.sigma_z: 50\.0 -> 5\.5"):
        check_one_setting([datasets["old"], datasets["new"]])
    dm = TrackDataModule(path=[str(datasets["new"]), str(datasets["old"])], max_tokens=2500)
    with pytest.raises(ValueError, match="old/shard_00000.root was made with other settings"):
        dm.setup("fit")


def test_same_setting_other_seed_and_imported_files_pass(datasets):
    kind = check_one_setting([datasets["new"], datasets["new_seed2"], datasets["imported"]])
    assert kind["vertex"]["sigma_z"] == 5.5 and "seed" not in kind
    assert check_one_setting([datasets["imported"]]) is None


def test_resume_on_data_of_other_settings_is_refused(datasets):
    """The DataModule's checkpoint state holds the simulation settings; resuming a run made on
    the old defaults with data of the new ones is an error, on the same data it passes."""
    old = TrackDataModule(path=str(datasets["old"]), max_tokens=2500)
    old.setup("fit")
    state = old.state_dict()
    assert state["simulation"]["vertex"]["sigma_z"] == 50.0
    new = TrackDataModule(path=str(datasets["new"]), max_tokens=2500)
    new.setup("fit")
    with pytest.raises(
        ValueError, match=r"checkpoint was trained .*vertex\.sigma_z: 50\.0 -> 5\.5"
    ):
        new.load_state_dict(state)
    new.load_state_dict(new.state_dict())  # same settings: fine
    new.load_state_dict({})  # a checkpoint without saved settings: nothing to compare
