"""Evaluate a checkpoint: ``python -m trackformers.evaluate ckpt=path/to/last.ckpt [data=...]``.

The checkpoint carries the resolved run config (model, data features, validation clustering),
so nothing has to be re-specified: the model is rebuilt from it, the test split of the run's
dataset is read (or every event of ``data=<files/dir/glob>``), hits go through the model
(GPU when available, CPU otherwise) and the clustering, and the run directory receives

    metrics.json          dataset metrics (TrackML score, DM/perfect/LHC efficiency, fake and
                          duplicate rate, counts), plus per-event metrics and settings
    particles.csv         per-particle table of all evaluated events
    tracks.csv            per-track table (size, majority particle, purity, fake flag, eta)
    breakdowns/*.csv      efficiency by pt, eta, pile-up and barrel/endcap
    plots/*.png           efficiency vs pt and eta, fake rate, event display, attention view

and everything is logged to the training run's offline wandb run (resumed by id) or a new
offline run. A metrics table and the paths are printed at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from trackformers.config_checks import check_evaluate_config
from trackformers.inference import AMP_DTYPES, load_model
from trackformers.inference.events import data_spec, iter_eval_events, resolve_path
from trackformers.inference.settings import metric_rules
from trackformers.inference.stream import infer_stream
from trackformers.io_atomic import write_text_atomic
from trackformers.paths import CONF_DIR
from trackformers.results.outputs import print_report, write_outputs
from trackformers.results.wandb_log import log_wandb


def run(cfg: Mapping) -> dict:
    """Evaluate per the evaluate config (see conf/evaluate.yaml); returns the metrics.json dict.

    Args:
        cfg: the resolved evaluate config.
    """
    t0 = time.perf_counter()
    check_evaluate_config(cfg)
    ckpt = resolve_path(cfg["ckpt"])
    # an attention backend that does not run on the device (e.g. the fused Triton one on a
    # CPU-only machine) falls back to dense
    loaded = load_model(
        ckpt, cfg.get("device", "auto"), cfg.get("attention_name") or cfg.get("attention")
    )
    model, run_cfg, device = loaded.model, loaded.config, loaded.device
    data = data_spec(cfg.get("data_path", cfg.get("data")))
    sources: dict = {}
    events = iter_eval_events(
        run_cfg, data, cfg.get("split", "auto"), cfg.get("max_events"), sources
    )
    max_tokens = int(cfg.get("max_tokens") or (run_cfg.get("data") or {}).get("max_tokens", 20_000))
    rec, rules = metric_rules(run_cfg, cfg)
    precision = str(cfg.get("precision", "fp16"))
    if precision not in AMP_DTYPES:
        raise ValueError(
            f"evaluate: precision must be one of {sorted(AMP_DTYPES)}, got {precision!r}"
        )
    state: dict = {}
    stream = infer_stream(
        model,
        events,
        loaded.features,
        device,
        max_tokens,
        cfg.get("cluster") or {},
        run_cfg,
        state,
        amp=precision,
    )
    out_dir = Path(cfg.get("output_dir") or ".").resolve()
    result = write_outputs(
        out_dir, stream, rec, rules, state, bool(cfg.get("plots", True)), sources
    )
    used = state["cluster"]
    summary = {
        **result["metrics"],
        "ckpt": str(ckpt),
        "device": str(device),
        "attention": type(model.encoder.attention).__name__,
        "precision": precision if device.type == "cuda" else "fp32",
        "cluster": used,
        "reconstructable": rec.to_dict(),
        "matching": rules.to_dict(),
        "files": result["files"],
        "plots": result["plots"],
        "per_event": result["per_event"],
        "breakdowns": result["breakdowns"],
        "seconds": time.perf_counter() - t0,
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(summary, indent=1, default=float))
    wandb_dir = log_wandb(cfg.get("wandb") or {}, ckpt, out_dir, result)
    result["cluster"] = used
    print_report(result, out_dir, wandb_dir)
    return summary


def main() -> None:
    """The command line (Hydra; see the module docstring)."""
    # conf/data is a config group of training, so Hydra would read ``data=X`` as choosing one
    # of its options; here data= names the events to evaluate: pass it on as data_path=X.
    sys.argv = [("data_path=" + a[5:]) if a.startswith("data=") else a for a in sys.argv]
    # likewise conf/attention: ``attention=flex`` swaps the backend, passed on as attention_name
    sys.argv = [
        ("+attention_name=" + a[10:]) if a.startswith("attention=") else a for a in sys.argv
    ]

    @hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
    def _main(cfg) -> None:
        c = OmegaConf.to_container(cfg, resolve=True)
        if c.get("output_dir") is None:
            c["output_dir"] = HydraConfig.get().runtime.output_dir
        run(c)

    _main()


if __name__ == "__main__":
    main()
