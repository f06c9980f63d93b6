"""Output files are written under a temporary name and renamed: a failed write leaves no
truncated file under the final name (trackformers.io_atomic, used by evaluate and results)."""

import errno
import json

import numpy as np
import pandas as pd
import pytest

from trackformers.io_atomic import atomic_path, write_csv_atomic, write_text_atomic
from trackformers.metrics import MatchingRules, Reconstructable
from trackformers.results.outputs import write_outputs
from trackformers.viz.style import plt, save


def _efbig_after_half(self, path, *args, **kwargs):
    """A to_csv that writes half of the table, then fails as a full disk / file limit does."""
    text = pd.DataFrame.to_string(self)
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    raise OSError(errno.EFBIG, "File too large")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = write_text_atomic(tmp_path / "sub" / "metrics.json", json.dumps({"a": 1}))
    assert json.loads(out.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_path(out) as tmp:
            tmp.write_text('{"a": ')
            raise RuntimeError("writer broke")
    assert json.loads(out.read_text()) == {"a": 1}
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]


def test_os_error_names_the_final_path(tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _efbig_after_half)
    with pytest.raises(OSError, match=r"writing .*particles.csv failed: File too large") as info:
        write_csv_atomic(tmp_path / "particles.csv", pd.DataFrame({"x": np.arange(100)}))
    assert info.value.errno == errno.EFBIG
    assert list(tmp_path.iterdir()) == []


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "t.csv.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".gz") and tmp.name.startswith(".")
        pd.DataFrame({"x": [1, 2]}).to_csv(tmp, index=False)  # compression from the suffix
    assert pd.read_csv(tmp_path / "t.csv.gz")["x"].tolist() == [1, 2]


def test_plot_save_is_atomic(tmp_path, monkeypatch):
    fig = plt.figure()
    path = save(fig, tmp_path / "plots" / "a.png")
    assert (tmp_path / "plots" / "a.png").read_bytes()[:4] == b"\x89PNG" and path.endswith("a.png")
    fig2 = plt.figure()

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PN")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(fig2), "savefig", broken)
    with pytest.raises(OSError, match="b.png"):
        save(fig2, tmp_path / "plots" / "b.png")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["a.png"]
    assert not plt.fignum_exists(fig2.number)  # closed also on failure


def test_evaluate_leaves_no_truncated_particles_csv(tmp_path, monkeypatch):
    """A write of evaluate's outputs that fails midway leaves nothing under the final names."""
    from trackformers.data.synthetic import helix_events

    ev = helix_events(1, seed=2, n_particles=5)[0]
    labels = np.asarray(ev["hit_particle_id"]).astype(np.int64)
    monkeypatch.setattr(pd.DataFrame, "to_csv", _efbig_after_half)
    rec, rules = Reconstructable(pt_min=0.0), MatchingRules()
    with pytest.raises(OSError, match="particles.csv"):
        write_outputs(tmp_path, iter([(ev, labels)]), rec, rules, {"sample": (None, None)}, False)
    assert list(tmp_path.iterdir()) == []
