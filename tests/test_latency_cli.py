"""trackformers.latency: choosing the clustering of a latency run (conf/cluster + overrides)."""

from __future__ import annotations

import pytest

from trackformers.latency import cluster_choice


def test_cluster_choice_reads_conf_and_overrides():
    cfg = cluster_choice("dbscan_window", ["eps=0.1", "window=1024"])
    assert cfg["method"] == "dbscan_plan"
    assert cfg["params"]["neighbourhood"] == "window"
    assert cfg["params"]["eps"] == 0.1 and cfg["params"]["window"] == 1024
    assert cluster_choice("dbscan")["params"]["eps"] == 0.2  # conf default kept
    assert cluster_choice(None) is None
    assert cluster_choice(None, (), '{"method": "dbscan"}') == {"method": "dbscan"}


def test_cluster_choice_errors():
    with pytest.raises(ValueError, match="no cluster config"):
        cluster_choice("nope")
    with pytest.raises(ValueError, match="key=value"):
        cluster_choice("dbscan", ["eps"])
    with pytest.raises(ValueError, match="needs --cluster"):
        cluster_choice(None, ["eps=0.1"])
    with pytest.raises(ValueError, match="not both"):
        cluster_choice("dbscan", (), "{}")


def test_predictor_latency_with_window_clustering_cpu(tmp_path):
    from test_evaluate_cli import make_ckpt, run_config

    from trackformers.data.synthetic import helix_events
    from trackformers.latency import measure_predictor_latency

    cfg = run_config({"_target_": "trackformers.models.heads.ContrastiveHead",
                      "embed_dim": 8}, str(tmp_path))  # fmt: skip
    events = helix_events(2, seed=1, n_particles=10)
    cluster = cluster_choice("dbscan_window", ["eps=0.3", "window=8"])
    res = measure_predictor_latency(make_ckpt(tmp_path, cfg), events, "cpu", repeat=1,
                                    cluster=cluster)  # fmt: skip
    assert res["cluster"]["params"]["neighbourhood"] == "window"
    assert res["same_partition_as_staged"] == 1.0 and res["n_tracks_mean"] >= 1
    assert res["stages_median_ms"] is None and res["eager_completion_fraction"] == 0.0
