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
import math
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trackformers.io_atomic import write_csv_atomic, write_text_atomic

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SCORE_KEYS = ("trackml_score", "dm_efficiency", "perfect_efficiency", "lhc_efficiency",
              "fake_rate", "duplicate_rate")  # fmt: skip


# ---- checkpoint ------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(run config, state_dict) of a Lightning checkpoint written by trackformers.train.

    Loaded with ``weights_only=True`` (trackformers.checkpoint): a checkpoint holding any other
    pickled object, or an empty / truncated / non-checkpoint file, is refused naming the path.
    """
    from trackformers.checkpoint import CheckpointError, load_checkpoint_file

    path = Path(path)
    ckpt = load_checkpoint_file(path)
    cfg = (ckpt.get("trackformers") or {}).get("config")
    if cfg is None:
        cfg = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ValueError(
            f"checkpoint {path} holds no run config with a 'model' entry (looked at "
            "ckpt['trackformers']['config'] and ckpt['hyper_parameters']['config'])"
        )
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' (keys: {sorted(ckpt)[:10]})")
    cfg = _plain(cfg)
    if isinstance(ckpt.get("clustering"), Mapping):  # chosen on validation (models/tuning.py)
        cfg["tuned_clustering"] = _plain(ckpt["clustering"])
    return cfg, ckpt["state_dict"]


def _plain(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(
        json.dumps(cfg, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def swap_attention_kwargs(trained: Mapping, name: str) -> dict:
    """Settings of the trained attention config that backend ``name`` also takes, so that a
    swap keeps the mask the model was trained with (group size, adjacency, window, ...); a
    windowed (phi-window) run swapped to a backend with masks gets ``mask="window"``."""
    import inspect

    from trackformers.attention import available

    backends = available()
    if name not in backends:
        raise KeyError(f"unknown attention backend {name!r}; registered: {sorted(backends)}")
    params = inspect.signature(backends[name].__init__).parameters
    kept = {k: v for k, v in trained.items() if k in params and k not in ("self", "name")}
    target = str(trained.get("_target_", "")) + str(trained.get("name", ""))
    if "mask" in params and "mask" not in kept and "window" in target.lower():
        kept["mask"] = "window"
    return kept


def build_model(cfg: dict, state_dict: Mapping, attention: str | None = None) -> torch.nn.Module:
    """The run's model with trained weights; ``attention`` swaps the backend ("dense", ...)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    mcfg = OmegaConf.create({"model": cfg["model"], "data": cfg.get("data", {})})
    if attention is not None:
        old = mcfg.model.encoder.get("attention")
        old = OmegaConf.to_container(old, resolve=True) if old is not None else {}
        akw = {"_target_": "trackformers.attention.build", "name": attention,
               **swap_attention_kwargs(old, attention)}  # fmt: skip
        mcfg.model.encoder.attention = OmegaConf.create(akw)
    model = instantiate(mcfg.model)
    weights = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    if not weights:
        raise ValueError("checkpoint state_dict has no 'model.*' weights")
    weights = {k.replace("._orig_mod", ""): v for k, v in weights.items()}  # compiled encoders
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def runs_on(model: torch.nn.Module, device: torch.device) -> bool:
    backend = getattr(getattr(model, "encoder", None), "attention", None)
    caps = getattr(backend, "capabilities", None)
    return caps is None or device.type in caps.devices


# ---- data ------------------------------------------------------------------------------------
def iter_eval_events(
    cfg: dict, data, split: str, max_events: int | None, sources: dict | None = None
) -> Iterator[dict]:
    """Full events (all schema fields) of the evaluation set, streamed file chunk by chunk.

    ``sources`` (optional) receives event_id -> file of every event served, for messages.
    """
    from trackformers.data.dataset import split_of
    from trackformers.data.reader import list_files

    dcfg = cfg.get("data") or {}
    spec = data if data is not None else dcfg.get("path")
    if spec is None:
        raise ValueError("no data: pass data=<files/dir/glob> (the run config has no data.path)")
    spec = [spec] if isinstance(spec, str) else list(spec)
    files = list_files([_resolve(p) for p in spec])
    if split == "auto":
        split = "test" if data is None else "all"
    splits = {"train": 0, "val": 1, "test": 2}
    if split != "all" and split not in splits:
        raise ValueError(f"split must be train, val, test, all or auto, got {split!r}")
    fractions = (float(dcfg.get("val_fraction", 0.1)), float(dcfg.get("test_fraction", 0.1)))
    if max_events is not None and (isinstance(max_events, bool) or int(max_events) < 1):
        raise ValueError(f"max_events = {max_events!r}: must be an integer >= 1 or null")
    n = 0
    for ev in (ev for f in files for ev in _events_of(f, sources)):
        if split != "all":
            s = split_of(np.atleast_1d(ev["event_id"]), *fractions, int(dcfg.get("split_seed", 0)))
            if s[0] != splits[split]:
                continue
        yield ev
        n += 1
        if max_events is not None and n >= max_events:
            break
    if n == 0:
        raise ValueError(f"no events of split {split!r} in {[str(f) for f in files]}")


def _events_of(path: Path, sources: dict | None) -> Iterator[dict]:
    from trackformers.data.reader import iter_events

    for ev in iter_events([path]):
        if sources is not None:
            sources[int(np.asarray(ev["event_id"]))] = str(path)
        yield ev


def data_spec(value):
    """data= value: files / a directory / a glob, or the name of a conf/data/<name>.yaml."""
    if isinstance(value, str) and re.fullmatch(r"\w+", value) and not _resolve(value).exists():
        named = CONF_DIR / "data" / f"{value}.yaml"
        if named.is_file():
            from omegaconf import OmegaConf

            return OmegaConf.load(named).get("path")
    return value


def _resolve(p) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and not Path(p).is_absolute():
            return Path(HydraConfig.get().runtime.cwd) / p
    except ImportError:  # pragma: no cover
        pass
    return Path(p)


def feature_config(cfg: dict):
    from trackformers.data.features import FeatureConfig

    f = dict((cfg.get("data") or {}).get("features") or {})
    f["targets"] = ()  # inference needs inputs only
    f.pop("class_bins", None)
    f.pop("signal", None)  # a truth label, not an input
    return FeatureConfig.from_dict(f)


def restrict(event: dict, hit_id: np.ndarray) -> dict:
    """The event with only the hits the model saw (by hit_id, in the model's order)."""
    ids = np.asarray(event["hit_id"]).astype(np.int64)
    order = np.argsort(ids)
    pos = order[np.searchsorted(ids[order], hit_id)]
    if not np.array_equal(ids[pos], hit_id):
        raise ValueError(
            f"event {event.get('event_id')}: model hits not found among the event's hit_id"
        )
    return {k: (np.asarray(v)[pos] if k.startswith("hit_") else v) for k, v in event.items()}


# ---- inference -------------------------------------------------------------------------------
def cluster_settings(cfg: dict, cluster: Mapping, outputs: Mapping) -> dict:
    """The clustering to use, with "source" saying where it came from:

    an explicit method ("explicit"); else (method auto) the clustering tuned on validation
    and stored in the checkpoint ("checkpoint"), else the run's validation clustering
    ("run validation config"), else a default chosen by the output names ("default").
    Under auto, non-empty ``params`` and a ``filter_threshold`` given by the user override
    the chosen ones (source gets "+ overrides").
    """
    cluster = dict(cluster or {})
    if cluster.get("method", "auto") != "auto":
        return {**cluster, "source": "explicit"}
    val = ((cfg.get("module") or {}).get("validation") or cfg.get("validation") or {}).get(
        "cluster"
    )
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
        chosen = {"method": "dbscan", "input": "embedding", "source": "default",
                  "params": {"eps": 0.2, "min_samples": 2}}  # fmt: skip
    elif "params" in outputs:
        chosen = {"method": "dbscan", "input": "params", "source": "default",
                  "params": {"eps": 0.05, "min_samples": 2}}  # fmt: skip
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


def infer_stream(model, events: Iterable[dict], fcfg, device, max_tokens: int, cluster: Mapping,
                 cfg: dict, state: dict,
                 amp: bool | str = "fp16") -> Iterator[tuple[dict, np.ndarray]]:  # fmt: skip
    """(event restricted to the model's hits, track labels) per event, batched by max_tokens.

    ``state`` receives "cluster" (the settings used) and "sample" (first batch and plan, CPU);
    ``amp``: the forward's precision on CUDA (``inference.amp_precision``: "fp16" autocast by
    default, True / "bf16", False / "fp32").
    """
    buf, n = [], 0
    for ev in events:
        buf.append(ev)
        n += len(ev["hit_x"])
        if n >= max_tokens:
            yield from _infer_batch(model, buf, fcfg, device, cluster, cfg, state, amp)
            buf, n = [], 0
    if buf:
        yield from _infer_batch(model, buf, fcfg, device, cluster, cfg, state, amp)


def infer(model, events: list[dict], fcfg, device, max_tokens: int, cluster: Mapping, cfg: dict):
    """List version of ``infer_stream``: (events, labels, cluster settings, sample)."""
    state: dict = {}
    pairs = list(infer_stream(model, events, fcfg, device, max_tokens, cluster, cfg, state))
    return [p[0] for p in pairs], [p[1] for p in pairs], state["cluster"], state["sample"]


@torch.no_grad()
def _infer_batch(model, events, fcfg, device, cluster, cfg, state, amp: bool | str = "fp16"):
    from trackformers.cluster import assign_tracks
    from trackformers.data.packing import pack_events
    from trackformers.inference import forward_batch

    batch = pack_events(events, fcfg).to(device)
    out, plan = forward_batch(model, batch, amp=amp)  # autocast on CUDA unless fp32
    state.setdefault("cluster", cluster_settings(cfg, cluster, out))
    cl = state["cluster"]
    labels = assign_tracks(out, batch.cu_seqlens, cl, plan, batch.coords).cpu().numpy()
    cu = batch.cu_seqlens.cpu().numpy()
    hit_id = batch.hit_id.cpu().numpy()
    by_id = {int(np.asarray(e["event_id"])): e for e in events}
    if "sample" not in state:
        state["sample"] = (batch.to("cpu"), _plan_cpu(plan))
    for b, eid in enumerate(batch.event_id.cpu().numpy()):
        a, e = cu[b], cu[b + 1]
        yield restrict(by_id[int(eid)], hit_id[a:e]), labels[a:e]


def _plan_cpu(plan):
    import dataclasses

    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    moved = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}
    moved["extra"] = {}
    return type(plan)(**moved)


# ---- outputs ---------------------------------------------------------------------------------
def write_outputs(out_dir: Path, stream, rec, rules, state: dict, plots: bool = True,
                  sources: Mapping | None = None) -> dict:  # fmt: skip
    """Consume (event, labels) pairs: metrics, tables, breakdowns and plots under out_dir.

    Every file is written under a temporary name and renamed (trackformers.io_atomic); an
    event the metrics refuse raises naming its file (from ``sources``: event_id -> file) and id.
    """
    from trackformers import viz
    from trackformers.metrics import aggregate, efficiency_breakdowns, evaluate_event, track_table

    per_event, parts, tracks, first = [], [], [], None
    for ev, lab in stream:
        first = first or (ev, lab)
        try:
            m, p = evaluate_event(ev, lab, rec, rules)
            t = track_table(ev, lab, rules)
        except (ValueError, KeyError) as err:
            eid = int(np.asarray(ev.get("event_id", -1)))
            where = (sources or {}).get(eid, "<unknown file>")
            what = "" if str(err).startswith(f"event {eid}:") else f"event {eid}: "
            raise ValueError(f"{where}: {what}{err}") from err
        t.insert(0, "event_id", m["event_id"])
        per_event.append(m)
        parts.append(p)
        tracks.append(t)
    particles = pd.concat(parts, ignore_index=True)
    track_tab = pd.concat(tracks, ignore_index=True)
    metrics = aggregate(per_event)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"particles": out_dir / "particles.csv", "tracks": out_dir / "tracks.csv"}
    write_csv_atomic(files["particles"], particles)
    write_csv_atomic(files["tracks"], track_tab)
    bd_dir = out_dir / "breakdowns"
    bd_dir.mkdir(exist_ok=True)
    breakdowns = efficiency_breakdowns(particles)
    for name, tab in breakdowns.items():
        write_csv_atomic(bd_dir / f"dm_efficiency_vs_{name}.csv", tab)
    figures = {
        "efficiency_vs_pt": lambda: viz.plot_efficiency(particles, "pt"),
        "efficiency_vs_eta": lambda: viz.plot_efficiency(particles, "eta"),
        "fake_rate_vs_eta": lambda: viz.plot_fake_rate(track_tab),
        "efficiency_by_region": lambda: viz.plot_breakdown_bars(particles, "region"),
        "efficiency_by_pileup": lambda: viz.plot_breakdown_bars(particles, "pileup"),
        "event_display": lambda: viz.event_display(*first),
    }
    batch, plan = state["sample"]
    if not plots:
        figures = {}
    elif batch.particle_id is not None:
        figures["attention"] = lambda: viz.plot_attention(batch.coords, plan, batch.particle_id)
    pl = {
        name: viz.save(make(), out_dir / "plots" / f"{name}.png") for name, make in figures.items()
    }
    return {
        "metrics": metrics,
        "per_event": per_event,
        "files": {k: str(v) for k, v in files.items()},
        "plots": pl,
        "breakdowns": {k: v.to_dict("list") for k, v in breakdowns.items()},
    }


def find_wandb_run(ckpt: Path) -> tuple[Path, str] | None:
    """(wandb dir, run id) of the training run that wrote ``ckpt``, if found nearby."""
    for parent in list(ckpt.resolve().parents)[:3]:
        runs = sorted((parent / "wandb").glob("offline-run-*"))
        if runs:
            m = re.match(r"offline-run-\d{8}_\d{6}-(\w+)$", runs[-1].name)
            if m:
                return parent, m.group(1)
    return None


def log_wandb(wcfg: Mapping, ckpt: Path, out_dir: Path, result: dict) -> str | None:
    """Log metrics, plots and particles to the training run's wandb run (resumed by id) or a
    new one; the standard WANDB_* variables win over ``wcfg`` (trackformers.wandb_env).
    Returns the run's directory, None when disabled."""
    from trackformers.wandb_env import env_init_kwargs, env_mode

    mode = env_mode() or wcfg.get("mode", "offline")
    if not wcfg.get("enabled", True) or mode == "disabled":
        return None
    import wandb

    found = find_wandb_run(ckpt)
    kw = {"mode": mode, "project": wcfg.get("project", "trackformers")}
    if found is not None:
        kw.update(dir=str(found[0]), id=found[1], resume="allow")
    else:
        kw.update(dir=str(out_dir), job_type="evaluate")
    env = env_init_kwargs()
    if found is not None:  # the training run's own directory and id stay
        env = {k: v for k, v in env.items() if k not in ("dir", "id")}
    run = wandb.init(**{**kw, **env})
    run.log({f"test/{k}": v for k, v in result["metrics"].items() if isinstance(v, (int, float))})
    for name, path in result["plots"].items():
        run.log({f"test/plots/{name}": wandb.Image(path)})
    run.log(
        {
            "test/particles": wandb.Table(
                dataframe=pd.read_csv(result["files"]["particles"]).head(5000)
            )
        }
    )
    where = getattr(run, "dir", None)
    run.finish()
    return where


def print_report(result: dict, out_dir: Path, wandb_dir: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"test metrics ({result['metrics']['n_events']} events)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in SCORE_KEYS:
        v = result["metrics"][k]
        t.add_row(k.replace("_", " "), "nan" if math.isnan(v) else f"{v:.4f}")
    c = Console()
    c.print(t)
    cl = result.get("cluster")
    if cl:
        c.print(f"clustering: {cl.get('method')} {cl.get('params')} filter_threshold="
                f"{cl.get('filter_threshold')} (from {cl.get('source')})")  # fmt: skip
    c.print(f"metrics:   {out_dir / 'metrics.json'}")
    c.print(f"particles: {result['files']['particles']}")
    c.print(f"plots:     {out_dir / 'plots'} ({len(result['plots'])} files)")
    c.print(f"wandb:     {wandb_dir or 'disabled'}")


def metric_rules(run_cfg: Mapping, cfg: Mapping | None = None):
    """(Reconstructable, MatchingRules) of a run's validation settings, overridden by the
    evaluate config's ``reconstructable`` / ``matching``."""
    from trackformers.metrics import MatchingRules, Reconstructable

    cfg = cfg or {}
    val = (run_cfg.get("module") or {}).get("validation") or run_cfg.get("validation") or {}
    rec = Reconstructable(
        **{**dict(val.get("reconstructable") or {}), **dict(cfg.get("reconstructable") or {})}
    )
    rules = MatchingRules(**{**dict(val.get("matching") or {}), **dict(cfg.get("matching") or {})})
    return rec, rules


def run(cfg: Mapping) -> dict:
    """Evaluate per the evaluate config (see conf/evaluate.yaml); returns the metrics.json dict."""
    from trackformers.config_checks import check_evaluate_config
    from trackformers.inference import AMP_DTYPES

    t0 = time.perf_counter()
    check_evaluate_config(cfg)
    ckpt = _resolve(cfg["ckpt"])
    run_cfg, state = load_checkpoint(ckpt)
    want = cfg.get("device", "auto")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want
    )
    model = build_model(run_cfg, state, cfg.get("attention_name") or cfg.get("attention"))
    if not runs_on(model, device):  # e.g. the fused Triton backend on a CPU-only machine
        model = build_model(run_cfg, state, "dense")
    model = model.to(device)
    data = data_spec(cfg.get("data_path", cfg.get("data")))
    sources: dict = {}
    events = iter_eval_events(run_cfg, data, cfg.get("split", "auto"), cfg.get("max_events"),
                              sources)  # fmt: skip
    max_tokens = int(cfg.get("max_tokens") or (run_cfg.get("data") or {}).get("max_tokens", 20_000))
    rec, rules = metric_rules(run_cfg, cfg)
    precision = str(cfg.get("precision", "fp16"))
    if precision not in AMP_DTYPES:
        raise ValueError(f"evaluate: precision must be one of {sorted(AMP_DTYPES)}, got "
                         f"{precision!r}")  # fmt: skip
    state: dict = {}
    stream = infer_stream(model, events, feature_config(run_cfg), device, max_tokens,
                          cfg.get("cluster") or {}, run_cfg, state, amp=precision)  # fmt: skip
    out_dir = Path(cfg.get("output_dir") or ".").resolve()
    result = write_outputs(out_dir, stream, rec, rules, state, bool(cfg.get("plots", True)),
                           sources)  # fmt: skip
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
    import hydra
    from omegaconf import OmegaConf

    # conf/data is a config group of training, so Hydra would read ``data=X`` as choosing one
    # of its options; here data= names the events to evaluate: pass it on as data_path=X.
    sys.argv = [("data_path=" + a[5:]) if a.startswith("data=") else a for a in sys.argv]
    # likewise conf/attention: ``attention=flex`` swaps the backend, passed on as attention_name
    sys.argv = [("+attention_name=" + a[10:]) if a.startswith("attention=") else a
                for a in sys.argv]  # fmt: skip

    @hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
    def _main(cfg) -> None:
        c = OmegaConf.to_container(cfg, resolve=True)
        if c.get("output_dir") is None:
            from hydra.core.hydra_config import HydraConfig

            c["output_dir"] = HydraConfig.get().runtime.output_dir
        run(c)

    _main()


if __name__ == "__main__":
    main()
