"""Checks of a composed configuration, run first by each entry point (before any data is read
or model built), so nonsense fails in a second with the key and value instead of after data
and model setup, or after the first epoch.

One function per entry point: :func:`check_train_config` (``trackformers.train``),
:func:`check_evaluate_config` (``trackformers.evaluate``) and :func:`check_simulate_config`
(``trackformers.simulate``). Each collects every problem and raises one :class:`ConfigError`
listing them as ``key = value: must be ...``. Keys a config does not have are skipped (the
code that uses them keeps its defaults); keys it has must hold sensible values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

_MISSING = object()


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names every bad key and value."""


def _get(cfg, key: str):
    """cfg[a][b][c] for key "a.b.c", or _MISSING when a level is absent."""
    node = cfg
    for part in key.split("."):
        if node is None or not isinstance(node, Mapping) and not hasattr(node, "get"):
            return _MISSING
        try:
            node = node.get(part, _MISSING)
        except Exception:  # e.g. an OmegaConf interpolation that cannot resolve
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


class _Checker:
    def __init__(self, cfg, what: str):
        self.cfg, self.what, self.problems = cfg, what, []

    def bad(self, key: str, value, need: str) -> None:
        self.problems.append(f"{key} = {value!r}: must be {need}")

    def integer(self, key: str, lo: int, allow_none: bool = False, also: tuple = ()) -> None:
        """Integer >= lo (or one of ``also``; None when allow_none)."""
        v = _get(self.cfg, key)
        if v is _MISSING or (v is None and allow_none) or (v in also and not isinstance(v, bool)):
            return
        ok = isinstance(v, Integral) and not isinstance(v, bool) and v >= lo
        if not ok:
            alt = "".join(f" or {a}" for a in also) + (" or null" if allow_none else "")
            self.bad(key, v, f"an integer >= {lo}{alt}")

    def number(self, key: str, gt=None, ge=None, lt=None, le=None, allow_none=False) -> None:
        """Finite real number within the given bounds (None when allow_none)."""
        v = _get(self.cfg, key)
        if v is _MISSING or (v is None and allow_none):
            return
        ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))
        ok = ok and (gt is None or v > gt) and (ge is None or v >= ge)
        ok = ok and (lt is None or v < lt) and (le is None or v <= le)
        if not ok:
            ops = ((">", gt), (">=", ge), ("<", lt), ("<=", le))
            need = "a finite number " + " and ".join(f"{o} {b}" for o, b in ops if b is not None)
            self.bad(key, v, need.strip() + (" or null" if allow_none else ""))

    def boolean(self, key: str) -> None:
        """true or false (not 0 / 1 or a string)."""
        v = _get(self.cfg, key)
        if v is not _MISSING and not isinstance(v, bool):
            self.bad(key, v, "true or false")

    def choice(self, key: str, options) -> None:
        v = _get(self.cfg, key)
        if v is not _MISSING and v not in options:
            self.bad(key, v, f"one of {list(options)}")

    def cluster(self, prefix: str) -> None:
        """Clustering parameters (DBSCAN eps / min_samples, HDBSCAN sizes) under prefix."""
        self.number(f"{prefix}.eps", gt=0)
        self.integer(f"{prefix}.min_samples", 1, allow_none=True)
        self.integer(f"{prefix}.min_cluster_size", 2)
        self.number(f"{prefix}.cluster_selection_epsilon", ge=0)
        self.integer(f"{prefix}.window", 1)
        self.integer(f"{prefix}.max_pairs", 1)
        self.integer(f"{prefix}.max_elems", 1)

    def done(self) -> None:
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise ConfigError(f"{self.what} configuration is invalid:\n  {lines}")


def check_train_config(cfg) -> None:
    """Check the composed ``trackformers.train`` config (conf/train.yaml and its groups).

    Args:
        cfg: the composed config (DictConfig or plain mapping).

    Raises:
        ConfigError: naming every bad key and its value.
    """
    c = _Checker(cfg, "train")
    enc = "model.encoder"
    c.integer(f"{enc}.n_layers", 1)
    c.integer(f"{enc}.n_heads", 1)
    c.integer(f"{enc}.d_model", 1)
    c.integer(f"{enc}.in_features", 1)
    c.number(f"{enc}.ffn_mult", gt=0)
    c.number(f"{enc}.dropout", ge=0, lt=1)
    d, h = _get(cfg, f"{enc}.d_model"), _get(cfg, f"{enc}.n_heads")
    if (
        all(isinstance(x, Integral) and not isinstance(x, bool) and x >= 1 for x in (d, h))
        and d % h
    ):
        c.bad(f"{enc}.d_model", d, f"a multiple of {enc}.n_heads = {h}")
    c.number("model.head.dropout", ge=0, lt=1)
    c.integer("model.head.embed_dim", 1)
    c.integer("data.max_tokens", 1)
    c.integer("data.max_events_per_batch", 1, allow_none=True)
    c.integer("data.chunk_bytes", 1)
    c.integer("data.num_workers", 0)
    c.number("data.val_fraction", ge=0, lt=1)
    c.number("data.test_fraction", ge=0, lt=1)
    vf, tf = _get(cfg, "data.val_fraction"), _get(cfg, "data.test_fraction")
    if isinstance(vf, Real) and isinstance(tf, Real) and vf + tf >= 1:
        c.bad("data.val_fraction + data.test_fraction", vf + tf, "< 1 (no training events left)")
    c.choice("data.on_error", ("raise", "skip"))
    c.number("optim.optimizer.lr", gt=0)
    c.number("optim.optimizer.eps", gt=0)
    c.number("optim.optimizer.weight_decay", ge=0)
    betas = _get(cfg, "optim.optimizer.betas")
    if betas is not _MISSING:
        vals = (
            list(betas)
            if not isinstance(betas, (str, bytes)) and hasattr(betas, "__iter__")
            else None
        )
        if (
            vals is None
            or len(vals) != 2
            or not all(isinstance(b, Real) and not isinstance(b, bool) and 0 <= b < 1 for b in vals)
        ):
            c.bad(
                "optim.optimizer.betas",
                vals if vals is not None else betas,
                "two numbers in [0, 1)",
            )
    c.integer("optim.scheduler.warmup_steps", 0)
    c.integer("optim.scheduler.total_steps", 1, allow_none=True)
    c.number("optim.scheduler.min_lr_ratio", ge=0, le=1)
    c.boolean("optim.scheduler.time_budget")
    c.integer("trainer.max_steps", 1, also=(-1,))
    c.integer("trainer.max_epochs", 1, allow_none=True, also=(-1,))
    c.integer("trainer.accumulate_grad_batches", 1)
    c.integer("trainer.log_every_n_steps", 1)
    c.cluster("validation.cluster.params")
    c.number("validation.reconstructable.pt_min", ge=0)
    c.number("validation.reconstructable.abs_eta_max", gt=0)
    c.integer("validation.reconstructable.min_hits", 0)
    c.integer("validation.matching.min_cluster_hits", 1)
    c.choice("monitor.mode", ("min", "max"))
    c.done()


def check_evaluate_config(cfg) -> None:
    """Check the composed ``trackformers.evaluate`` config (conf/evaluate.yaml).

    Args:
        cfg: the composed config (DictConfig or plain mapping).

    Raises:
        ConfigError: naming every bad key and its value.
    """
    c = _Checker(cfg, "evaluate")
    if not _get(cfg, "ckpt"):
        c.bad(
            "ckpt",
            _get(cfg, "ckpt") if _get(cfg, "ckpt") is not _MISSING else None,
            "the path of a .ckpt written by trackformers.train",
        )
    c.integer("max_events", 1, allow_none=True)
    c.integer("max_tokens", 1, allow_none=True)
    c.choice("split", ("auto", "train", "val", "test", "all"))
    device = _get(cfg, "device")
    if device is not _MISSING and device != "auto":
        import torch

        try:
            torch.device(device)
        except (RuntimeError, TypeError) as err:
            c.bad("device", device, f"auto, cpu, cuda or cuda:<index> ({err})")
    c.cluster("cluster.params")
    c.number("reconstructable.pt_min", ge=0)
    c.number("reconstructable.abs_eta_max", gt=0)
    c.integer("reconstructable.min_hits", 0)
    c.integer("matching.min_cluster_hits", 1)
    c.done()


def check_simulate_config(cfg) -> None:
    """Check the composed ``trackformers.simulate`` config (conf/simulate.yaml): the run's
    size. The physics settings are checked by ``trackformers.sim.shards.Simulation``, also
    before any output is written.

    Args:
        cfg: the composed config (DictConfig or plain mapping).

    Raises:
        ConfigError: naming every bad key and its value.
    """
    c = _Checker(cfg, "simulate")
    c.integer("n_events", 1)
    c.integer("events_per_shard", 1)
    c.integer("workers", 1)
    c.integer("minbias_library.size", 0)
    c.done()
