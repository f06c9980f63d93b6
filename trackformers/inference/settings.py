"""What evaluation takes from a checkpoint's run config besides the model: the clustering
(tuned on validation, the run's validation clustering, or a default by output names) and the
rules of the metrics (reconstructable particles, track matching).
"""

from __future__ import annotations

from collections.abc import Mapping

from trackformers.metrics import MatchingRules, Reconstructable


def validation_config(cfg: Mapping) -> dict:
    """The validation section of a run config (``module.validation``, or ``validation`` of
    older runs); {} when there is none.

    Args:
        cfg: a run config.
    """
    return dict((cfg.get("module") or {}).get("validation") or cfg.get("validation") or {})


def cluster_settings(cfg: dict, cluster: Mapping, outputs: Mapping) -> dict:
    """The clustering to use, with "source" saying where it came from:

    an explicit method ("explicit"); else (method auto) the clustering tuned on validation
    and stored in the checkpoint ("checkpoint"), else the run's validation clustering
    ("run validation config"), else a default chosen by the output names ("default").
    Under auto, non-empty ``params`` and a ``filter_threshold`` given by the user override
    the chosen ones (source gets "+ overrides").

    Args:
        cfg: the run config.
        cluster: the requested clustering (``method: auto`` to choose).
        outputs: the model's output names.

    Returns:
        Method, input, params, filter_threshold and source.
    """
    cluster = dict(cluster or {})
    if cluster.get("method", "auto") != "auto":
        return {**cluster, "source": "explicit"}
    val = validation_config(cfg).get("cluster")
    tuned = cfg.get("tuned_clustering")

    def stored(spec: Mapping, input_key: str, source: str) -> dict:
        """A clustering stored in the checkpoint (tuned, or the run's validation one)."""
        return {
            "method": spec.get("method", "dbscan"),
            "input": spec.get(input_key, "embedding"),
            "params": dict(spec.get("params") or {}),
            "filter_threshold": spec.get("filter_threshold"),
            "source": source,
        }

    if tuned and tuned.get("input", "embedding") in outputs:
        source = f"checkpoint (tuned on validation, {tuned.get('criterion')})"
        chosen = stored(tuned, "input", source)
    elif val and val.get("output_key", "embedding") in outputs:
        chosen = stored(val, "output_key", "run validation config")
    elif "embedding" in outputs:
        chosen = {
            "method": "dbscan",
            "input": "embedding",
            "source": "default",
            "params": {"eps": 0.2, "min_samples": 2},
        }
    elif "params" in outputs:
        chosen = {
            "method": "dbscan",
            "input": "params",
            "source": "default",
            "params": {"eps": 0.05, "min_samples": 2},
        }
    else:
        chosen = {"method": "argmax", "input": "logits", "params": {}, "source": "default"}
    overrides = {}
    if cluster.get("params"):
        overrides["params"] = {**chosen["params"], **dict(cluster["params"])}
    if cluster.get("filter_threshold") is not None:
        overrides["filter_threshold"] = cluster["filter_threshold"]
    if overrides:
        chosen.update(overrides, source=chosen["source"] + " + overrides")
    return chosen


def metric_rules(run_cfg: Mapping, cfg: Mapping | None = None):
    """(Reconstructable, MatchingRules) of a run's validation settings, overridden by the
    evaluate config's ``reconstructable`` / ``matching``.

    Args:
        run_cfg: the run config.
        cfg: the evaluate config (None: no overrides).

    Returns:
        The reconstructable definition and the matching rules.
    """
    cfg = cfg or {}
    val = validation_config(run_cfg)
    rec = Reconstructable(
        **{**dict(val.get("reconstructable") or {}), **dict(cfg.get("reconstructable") or {})}
    )
    rules = MatchingRules(**{**dict(val.get("matching") or {}), **dict(cfg.get("matching") or {})})
    return rec, rules
