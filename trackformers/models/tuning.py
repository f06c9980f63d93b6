"""Clustering parameters chosen on the validation events at the end of training.

``TuneClustering`` (a Lightning callback, conf/callbacks/default.yaml ``tune_clustering``) runs
the trained model once over the validation split, then clusters the stored outputs for every
point of a small grid (eps x min_samples x hit-filter threshold) and keeps the best point by

* ``criterion: dm_at_fake`` (default): the highest double-majority efficiency among the
  points whose fake rate is <= ``fake_max``; ties go to the lower fake rate, then to the
  higher TrackML score. When no point meets the cap (an undertrained model), the highest
  TrackML score wins (``cap_met`` is False in the result): the lowest fake rate alone would
  pick a filter that drops nearly every hit.
* ``criterion: trackml_score``: the highest mean TrackML score (ties: higher DM efficiency).

The result (plain python types) goes to the module's ``tuned_clustering`` and from there into
every checkpoint written afterwards as ``checkpoint["clustering"]`` (``last.ckpt`` of
``trackformers.train`` is written after the fit); ``evaluate``, ``latency`` and the
``Predictor`` use it unless the user names a clustering.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from lightning.pytorch.callbacks import Callback

from trackformers.cluster.filtering import FILTER_KEY, check_threshold
from trackformers.metrics.event import COUNT_KEYS, evaluate_event, rates
from trackformers.models.module import batch_events

log = logging.getLogger("trackformers.train")
CRITERIA = ("dm_at_fake", "trackml_score")


def _grid(values, name: str, check) -> tuple:
    values = list(values) if values is not None else []
    if not values:
        raise ValueError(f"callbacks.tune_clustering.{name}: the grid is empty")
    out = []
    for v in values:
        out.append(check(v, f"callbacks.tune_clustering.{name}"))
    return tuple(out)


def _eps(v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
        raise ValueError(f"{where}: eps values must be finite numbers > 0, got {v!r}")
    return float(v)


def _min_samples(v, where):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{where}: min_samples values must be integers >= 1, got {v!r}")
    return int(v)


class TuneClustering(Callback):
    """Grid search of the clustering on the validation split at the end of ``fit``.

    Args:
        enabled: False skips the search (checkpoints then carry no ``clustering``).
        eps: DBSCAN radii to try (each > 0).
        min_samples: DBSCAN core sizes to try (each >= 1).
        filter_threshold: hit-filter thresholds to try (each in (0, 1), or null: no filter);
            used only when the model has a hit filter.
        criterion: "dm_at_fake" or "trackml_score" (see the module docstring).
        fake_max: the fake-rate cap of "dm_at_fake", in [0, 1].
        max_events: use at most this many validation events (null = all; >= 1).
    """

    def __init__(
        self,
        enabled: bool = True,
        eps: Sequence[float] = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2),
        min_samples: Sequence[int] = (2, 4),
        filter_threshold: Sequence[float | None] = (None, 0.3, 0.5, 0.7),
        criterion: str = "dm_at_fake",
        fake_max: float = 0.03,
        max_events: int | None = None,
    ):
        self.enabled = bool(enabled)
        self.eps = _grid(eps, "eps", _eps)
        self.min_samples = _grid(min_samples, "min_samples", _min_samples)
        self.thresholds = _grid(filter_threshold, "filter_threshold", check_threshold)  # None ok
        if criterion not in CRITERIA:
            raise ValueError(
                f"callbacks.tune_clustering.criterion must be one of {CRITERIA}, got {criterion!r}"
            )
        if not (isinstance(fake_max, (int, float)) and 0.0 <= fake_max <= 1.0):
            raise ValueError(
                f"callbacks.tune_clustering.fake_max must lie in [0, 1], got {fake_max!r}"
            )
        if max_events is not None and (isinstance(max_events, bool) or int(max_events) < 1):
            raise ValueError(
                f"callbacks.tune_clustering.max_events must be >= 1 or null, got {max_events!r}"
            )
        self.criterion, self.fake_max = criterion, float(fake_max)
        self.max_events = None if max_events is None else int(max_events)
        self.result: dict | None = None

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self.enabled or not getattr(pl_module, "val_enabled", False):
            return
        if trainer.interrupted or pl_module.cluster_method not in ("dbscan", "dbscan_cpu"):
            if pl_module.cluster_method not in ("dbscan", "dbscan_cpu"):
                log.info("tune_clustering: method %s has no eps to tune", pl_module.cluster_method)
            return
        dm = trainer.datamodule
        loader = dm.val_dataloader() if dm is not None else trainer.val_dataloaders
        self.result = tune_clustering(pl_module, loader, self)
        self.result["global_step"] = int(trainer.global_step)
        pl_module.tuned_clustering = self.result
        m = self.result["metrics"]
        log.info(
            "tune_clustering: eps=%s min_samples=%s filter_threshold=%s -> val DM %.4f fake "
            "%.4f score %.4f (%d events, %s)",
            self.result["params"]["eps"],
            self.result["params"]["min_samples"],
            self.result["filter_threshold"],
            m["dm_efficiency"],
            m["fake_rate"],
            m["trackml_score"],
            self.result["n_events"],
            self.criterion,
        )


@torch.no_grad()
def collect_outputs(module, loader, max_events: int | None = None) -> list[dict]:
    """Per validation batch: the clustering input, the filter logit (or None), cu_seqlens
    (kept on the module's device, where the grid's clusterings run) and the per-event truth
    dicts of ``batch_events``.

    Args:
        module: the ``TrackFormerModule`` (run in eval mode, its mode restored after).
        loader: the validation batches.
        max_events: stop after the batch that reaches this many events (None: all).
    """
    was_training = module.training
    module.eval()
    stored, n = [], 0
    try:
        for batch in loader:
            batch = batch.to(module.device)
            out = module.model(batch)
            stored.append(
                {
                    "x": out[module.cluster_key].detach().float(),
                    "filter": out[FILTER_KEY].detach().float() if FILTER_KEY in out else None,
                    "cu": batch.cu_seqlens,
                    "events": batch_events(batch, module.target_names),
                }
            )
            n += batch.num_events
            if max_events is not None and n >= max_events:
                break
    finally:
        module.train(was_training)
    return stored


def score_point(module, stored: list[dict], params: dict, threshold: float | None) -> dict:
    """Validation metrics (DM efficiency, fake rate, TrackML score...) of one grid point.

    Args:
        module: the ``TrackFormerModule`` (its clustering and metric definitions).
        stored: the batches of ``collect_outputs``.
        params: the clustering method's keyword arguments (eps, min_samples, ...).
        threshold: the hit-filter threshold (None: no filter).
    """
    sums = dict.fromkeys(COUNT_KEYS, 0.0)
    scores = []
    for b in stored:
        out = {module.cluster_key: b["x"]}
        if b["filter"] is not None:
            out[FILTER_KEY] = b["filter"]
        labels = module.cluster(out, b["cu"], params, threshold).cpu().numpy()  # (N,)
        cu = b["cu"].tolist()
        for i, ev in enumerate(b["events"]):
            m, _ = evaluate_event(
                ev, labels[cu[i] : cu[i + 1]], module.reconstructable, module.matching
            )
            for k in COUNT_KEYS:
                sums[k] += m[k]
            if not math.isnan(m["trackml_score"]):
                scores.append(m["trackml_score"])
    res = rates(sums)
    res["trackml_score"] = float(sum(scores) / len(scores)) if scores else math.nan
    return res


def _key(metrics: dict, criterion: str, fake_max: float) -> tuple:
    def nz(v):
        return -math.inf if math.isnan(v) else v

    dm, fake, score = (
        nz(metrics["dm_efficiency"]),
        metrics["fake_rate"],
        nz(metrics["trackml_score"]),
    )
    fake = 1.0 if math.isnan(fake) else fake
    if criterion == "trackml_score":
        return (score, dm, -fake)
    if fake <= fake_max:
        return (True, dm, -fake, score)
    return (False, score, dm, -fake)


def best_point(rows: list, criterion: str, fake_max: float):
    """The (params, threshold, metrics) row of ``rows`` that ``criterion`` prefers.

    Args:
        rows: (params, threshold, metrics) of every grid point.
        criterion: one of ``CRITERIA`` (see the module docstring).
        fake_max: the fake-rate cap of ``dm_at_fake``.
    """
    return max(rows, key=lambda r: _key(r[2], criterion, fake_max))


def tune_clustering(module, loader, tuner: TuneClustering) -> dict:
    """The best grid point of ``tuner``'s grid on the events of ``loader`` (see module doc).

    Args:
        module: the trained ``TrackFormerModule``.
        loader: the validation batches.
        tuner: the callback holding the grid, criterion, fake-rate cap and event limit.

    Returns:
        The result in plain python types: method, input, params, filter_threshold,
        criterion, fake_max, cap_met, metrics, n_events and every grid point's metrics.
    """
    stored = collect_outputs(module, loader, tuner.max_events)
    if not stored:
        raise ValueError("tune_clustering: the validation split has no events")
    has_filter = stored[0]["filter"] is not None
    thresholds = tuner.thresholds if has_filter else (None,)
    rows = []
    for thr in thresholds:
        for eps in tuner.eps:
            for ms in tuner.min_samples:
                params = {**module.cluster_params, "eps": eps, "min_samples": ms}
                rows.append((params, thr, score_point(module, stored, params, thr)))
    params, thr, metrics = best_point(rows, tuner.criterion, tuner.fake_max)
    return {
        "method": module.cluster_method,
        "input": module.cluster_key,
        "params": {k: (float(v) if isinstance(v, float) else v) for k, v in params.items()},
        "filter_threshold": thr,
        "criterion": tuner.criterion,
        "fake_max": tuner.fake_max,
        "cap_met": bool(metrics["fake_rate"] <= tuner.fake_max),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "n_events": int(sum(len(b["events"]) for b in stored)),
        "grid": [
            {
                "eps": p["eps"],
                "min_samples": p["min_samples"],
                "filter_threshold": t,
                "dm_efficiency": float(m["dm_efficiency"]),
                "fake_rate": float(m["fake_rate"]),
                "trackml_score": float(m["trackml_score"]),
            }
            for p, t, m in rows
        ],
    }
