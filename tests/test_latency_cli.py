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
