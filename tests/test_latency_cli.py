"""trackformers.latency: choosing the clustering of a latency run (conf/cluster + overrides)."""

from __future__ import annotations

import numpy as np
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
    from trackformers.inference.latency import measure_predictor_latency

    cfg = run_config(
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, str(tmp_path)
    )
    events = helix_events(2, seed=1, n_particles=10)
    cluster = cluster_choice("dbscan_window", ["eps=0.3", "window=8"])
    res = measure_predictor_latency(
        make_ckpt(tmp_path, cfg), events, "cpu", repeat=1, cluster=cluster
    )
    assert res["cluster"]["params"]["neighbourhood"] == "window"
    assert res["same_partition_as_staged"] == 1.0 and res["n_tracks_mean"] >= 1
    assert res["stages_median_ms"] is None and res["eager_completion_fraction"] == 0.0


def test_predictor_latency_physics_cpu(tmp_path):
    """--physics: the Predictor's tracks and the staged fp32 path's are scored with the run's
    rules on the same events; on a CPU both are the same float32 computation."""
    from test_evaluate_cli import make_ckpt, run_config

    from trackformers.data.synthetic import helix_events
    from trackformers.inference.latency import measure_predictor_latency
    from trackformers.inference.settings import metric_rules
    from trackformers.metrics import evaluate_event

    cfg = run_config(
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, str(tmp_path)
    )
    events = helix_events(2, seed=2, n_particles=12)
    ckpt = make_ckpt(tmp_path, cfg)
    cluster = {"method": "dbscan", "params": {"eps": 0.3, "min_samples": 2}}
    res = measure_predictor_latency(ckpt, events, "cpu", repeat=1, physics=True, cluster=cluster)
    pred, ref = res["physics"]["predictor"], res["physics"]["staged_fp32"]
    assert res["precision"] == "fp16"  # the default request; a CPU forward is float32 anyway
    assert pred["n_reconstructable"] == ref["n_reconstructable"] > 0
    assert pred["dm_efficiency"] == ref["dm_efficiency"]
    assert pred["n_dm"] == sum(e["n_dm"] for e in pred["per_event"])
    assert 0 <= pred["dm_efficiency_err"] <= 1 and len(pred["per_event"]) == 2
    # the same count from the metrics API directly: all hits in one track finds nobody
    rec, rules = metric_rules({})
    none = evaluate_event(events[0], -np.ones(len(events[0]["hit_x"]), dtype=np.int64), rec, rules)
    assert none[0]["n_dm"] == 0


def test_precision_names():
    from trackformers.inference import amp_precision

    assert amp_precision(True) == "bf16" and amp_precision(False) == "fp32"
    assert amp_precision("fp16") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of"):
        amp_precision("fp8")


def test_latency_real_variant_names():
    from trackformers.latency import variant_args

    args = variant_args("plan-fp16-c", 0.05)
    assert args[:2] == ["--cluster", "dbscan_plan"] and "eps=0.05" in args
    assert args[-3:] == ["--precision", "fp16", "--compile"]
    assert "window=512" in variant_args("win512-fp32", 0.1)
    assert variant_args("plan-c-k16384", 0.1)[-3:] == ["--compile", "--ffn-chunk", "16384"]
    with pytest.raises(ValueError, match="hood must be"):
        variant_args("grid", 0.1)
    with pytest.raises(ValueError, match="unknown part"):
        variant_args("plan-fp8", 0.1)
