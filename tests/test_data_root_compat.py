"""Compatibility with real ROOT (PyPI package ``root``): we read files ROOT writes (TTree with
std::vector branches, RDataFrame Snapshot) and ROOT reads the files we write.

ROOT runs in a subprocess so its interpreter and signal handlers stay out of the test process.
The ``root`` package is in the dev extra; without it these tests fail (on purpose).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from trackformers.data import reader
from trackformers.data.features import FeatureConfig
from trackformers.data.packing import pack_events
from trackformers.data.schema import ALL_BRANCHES, EVENT_BRANCHES
from trackformers.data.synthetic import helix_events
from trackformers.sim.writer import write_events


def run_root(script: str, tmp_path) -> str:
    code = "import warnings; warnings.simplefilter('ignore')\nimport ROOT\nimport numpy as np\n"
    code += textwrap.dedent(script)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _save_events(path, events):
    np.savez(
        path, **{f"{i}:{k}": np.asarray(v) for i, e in enumerate(events) for k, v in e.items()}
    )


def _same_events(a_list, b_list):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list, strict=True):
        for k, dt in ALL_BRANCHES.items():
            assert np.asarray(b[k]).dtype == dt, k
            np.testing.assert_array_equal(np.asarray(a[k], dtype=dt), b[k], err_msg=k)


def test_read_root_written_std_vector_tree(tmp_path):
    events = helix_events(5, seed=8, first_id=40)
    _save_events(tmp_path / "in.npz", events)
    run_root(
        f"""
        data = np.load("in.npz")
        n_events = {len(events)}
        scalar = {{"event_id": "l", "pileup": "I"}}
        ctype = {{"float32": "float", "int32": "int", "uint64": "unsigned long"}}
        dtypes = {{k: str(np.asarray(data["0:" + k]).dtype) for k in {list(ALL_BRANCHES)!r}}}
        f = ROOT.TFile("root_vectors.root", "RECREATE")
        tree = ROOT.TTree("events", "written by ROOT with std::vector branches")
        holders = {{}}
        for k, dt in dtypes.items():
            if k in scalar:
                holders[k] = np.zeros(1, dtype=dt)
                tree.Branch(k, holders[k], k + "/" + scalar[k])
            else:
                holders[k] = ROOT.std.vector(ctype[dt])()
                tree.Branch(k, holders[k])
        for i in range(n_events):
            for k, h in holders.items():
                a = np.asarray(data[f"{{i}}:{{k}}"])
                if k in scalar:
                    h[0] = a
                else:
                    h.resize(len(a))
                    if len(a):
                        np.frombuffer(h.data(), dtype=a.dtype, count=len(a))[:] = a
            tree.Fill()
        ROOT.TNamed("note", "ROOT-written").Write()
        tree.Write()
        f.Close()
        """,
        tmp_path,
    )
    path = tmp_path / "root_vectors.root"
    _same_events(events, reader.read_events(path))
    # and the packed path works on it
    batch = pack_events(reader.read_events(path), FeatureConfig(targets=("eta", "z0")))
    assert batch.num_events == 5 and batch.targets["valid"].any()
    assert reader.read_metadata(path) == {}  # no provenance in a foreign file: empty, no error


# ROOT's ROOT::RCompressionSetting::EAlgorithm numbers
ROOT_ALGORITHM = {"zlib": 1, "lzma": 2, "lz4": 4, "zstd": 5}


def test_root_reads_our_files(tmp_path):
    """ROOT reads what we write, with the default codec (LZ4) and the other configurable ones."""
    events = helix_events(4, seed=9, first_id=70)
    codecs = {"default": None, "zstd": "zstd:1", "zlib": "zlib:1"}
    for name, comp in codecs.items():
        kwargs = {} if comp is None else {"compression": comp}
        write_events(tmp_path / f"ours_{name}.root", events, {"generator": "helix test"}, **kwargs)
    out = run_root(
        f"""
        import json
        result = {{}}
        for codec in {list(codecs)!r}:
            f = ROOT.TFile.Open(f"ours_{{codec}}.root")
            t = f.Get("events")
            meta = json.loads(str(f.Get("metadata").GetString()))
            names = {list(ALL_BRANCHES)!r}
            scalars = {list(EVENT_BRANCHES)!r}
            dump = {{}}
            for i in range(t.GetEntries()):
                t.GetEntry(i)
                for k in names:
                    v = getattr(t, k)
                    if k in scalars:
                        dump[f"{{i}}:{{k}}"] = [int(v)]
                    else:
                        n = t.nhit if k.startswith("hit_") else t.npart
                        dump[f"{{i}}:{{k}}"] = np.asarray(v)[:n].tolist()
            result[codec] = {{"n": int(t.GetEntries()), "meta": meta, "dump": dump,
                              "title_x": t.GetBranch("hit_x").GetTitle(),
                              "algorithm": int(f.GetCompressionAlgorithm()),
                              "zip_tot": [int(t.GetZipBytes()), int(t.GetTotBytes())]}}
            f.Close()
        print(json.dumps(result))
        """,
        tmp_path,
    )
    result = json.loads(out.strip().splitlines()[-1])
    for name, got in result.items():
        codec = "lz4" if name == "default" else name
        assert got["algorithm"] == ROOT_ALGORITHM[codec], name
        assert got["zip_tot"][0] < 0.8 * got["zip_tot"][1], name  # ROOT really decompressed
        assert got["n"] == 4
        assert got["meta"] == {"generator": "helix test"}
        assert got["title_x"] == "hit_x[nhit]/F"
        for i, ev in enumerate(events):
            for k, dt in ALL_BRANCHES.items():
                want = np.atleast_1d(np.asarray(ev[k], dtype=dt))
                np.testing.assert_allclose(
                    np.asarray(got["dump"][f"{i}:{k}"], dtype=dt),
                    want,
                    rtol=0,
                    atol=0,
                    err_msg=f"{name}: {k}",
                )


@pytest.mark.slow
def test_rdataframe_snapshot_round_trip(tmp_path):
    """ROOT's RDataFrame reads our file and snapshots it with std::vector columns; we read that."""
    events = helix_events(6, seed=10, first_id=5)
    src = tmp_path / "ours.root"
    write_events(src, events, {})
    run_root(
        f"""
        df = ROOT.RDataFrame("events", "{src}")
        cols = [str(c) for c in df.GetColumnNames()]
        for c in cols:
            if c.startswith(("hit_", "part_")):
                inner = str(df.GetColumnType(c)).replace("ROOT::VecOps::RVec<", "")[:-1]
                df = df.Redefine(c, f"std::vector<{{inner}}>({{c}}.begin(), {{c}}.end())")
        keep = [c for c in cols if c not in ("nhit", "npart")]
        df.Snapshot("events", "snapshot.root", keep)
        """,
        tmp_path,
    )
    import uproot

    with uproot.open(tmp_path / "snapshot.root") as f:
        assert f["events"]["hit_x"].typename == "std::vector<float>"
    _same_events(events, reader.read_events(tmp_path / "snapshot.root"))
