"""Per-event inference latency and peak memory of a trained checkpoint on real events:

    python -m trackformers.latency CKPT DATA --out outputs/evaluate/<run>/latency.json
        [--events 10] [--repeat 2] [--device cuda] [--attention fused] [--mode predictor]

``--mode staged`` (default):
One event at a time goes the whole way a user's event goes: in-memory event (numpy) ->
features and packing -> device -> attention plan -> forward (bf16 autocast on CUDA) ->
clustering into tracks (the checkpoint's validation clustering, or ``--cluster-json``) ->
labels back on the host. Each stage is timed with a device synchronisation at its end; a
warm-up pass over the events first (compilation, autotuning), then ``repeat`` timed passes;
the median over all timed event passes is reported. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed passes, weights included. The JSON written
is what ``trackformers.results`` reads (``median_ms``, ``peak_gib``, ``device``).

``--mode predictor``: issue 8's per-event latency of the same checkpoint on the same events,
through ``trackformers.inference.Predictor`` (CUDA graph per hit-count bucket on a GPU, eager
on CPU): timed from the event's features and coordinates on the device to its track list
(labels and hits per track, read back to the host). Also reported: the fraction of events
whose partition equals the staged path's (the same exact DBSCAN; bf16 kernels of the two
paths may differ in the last bit, which can move a point across eps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

STAGES = ("prep", "plan", "model", "cluster")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_event(model, event: dict, fcfg, device: torch.device, cluster: Mapping) -> dict:
    """Stage times (ms) of one event's inference; returns them and the track labels."""
    from trackformers.cluster import assign_tracks
    from trackformers.data.packing import pack_events

    t = [time.perf_counter()]
    batch = pack_events([event], fcfg).to(device)
    _sync(device)
    t.append(time.perf_counter())
    plan = model.encoder.build_plan(batch)
    _sync(device)
    t.append(time.perf_counter())
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(batch, plan)
    out = {k: v.float() for k, v in out.items()}
    _sync(device)
    t.append(time.perf_counter())
    labels = assign_tracks(out, batch.cu_seqlens, cluster, plan).cpu().numpy()
    t.append(time.perf_counter())
    ms = {s: 1e3 * (b - a) for s, a, b in zip(STAGES, t[:-1], t[1:], strict=True)}
    ms["total"] = 1e3 * (t[-1] - t[0])
    return {"ms": ms, "hits": int(batch.num_hits), "labels": labels}


def _checked(events: Sequence, repeat: int, device, caller: str) -> torch.device:
    """The device to time on ("auto": CUDA when available), after checking the arguments."""
    if not events:
        raise ValueError(f"{caller} needs at least one event")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def measure_latency(
    ckpt: str | Path,
    events: Sequence[dict],
    device: str | torch.device = "auto",
    repeat: int = 2,
    attention: str | None = None,
    cluster: Mapping | None = None,
) -> dict:
    """Latency summary of ``ckpt`` over ``events`` (see the module docstring)."""
    from trackformers.evaluate import (
        build_model,
        cluster_settings,
        feature_config,
        load_checkpoint,
        runs_on,
    )

    device = _checked(events, repeat, device, "measure_latency")
    cfg, state = load_checkpoint(ckpt)
    model = build_model(cfg, state, attention)
    if not runs_on(model, device):
        raise ValueError(f"attention backend of {ckpt} does not run on {device}; pass attention=")
    model = model.to(device)
    fcfg = feature_config(cfg)
    # clustering settings as evaluate chooses them (they depend on the output keys)
    with torch.no_grad():
        from trackformers.data.packing import pack_events

        b = pack_events([events[0]], fcfg).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            outputs = model(b, model.encoder.build_plan(b))
    used = cluster_settings(cfg, cluster or {}, outputs)
    for ev in events:  # warm-up: compilation, autotuning, allocator
        time_event(model, ev, fcfg, device, used)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    runs = [time_event(model, ev, fcfg, device, used) for _ in range(repeat) for ev in events]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    totals = [r["ms"]["total"] for r in runs]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "ckpt": str(ckpt),
        "attention": type(model.encoder.attention).__name__,
        "cluster": used,
        "n_events": len(events),
        "repeat": repeat,
        "hits_mean": float(np.mean([r["hits"] for r in runs])),
        "median_ms": statistics.median(totals),
        "p90_ms": float(np.percentile(totals, 90)),
        "stages_median_ms": {s: statistics.median(r["ms"][s] for r in runs) for s in STAGES},
        "peak_gib": peak,
    }


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal track partitions up to relabelling (-1 = no track in both)."""
    if a.shape != b.shape or not np.array_equal(a < 0, b < 0):
        return False
    pairs = np.unique(np.stack([a[a >= 0], b[b >= 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def measure_predictor_latency(
    ckpt: str | Path,
    events: Sequence[dict],
    device: str | torch.device = "auto",
    repeat: int = 2,
    attention: str | None = None,
    cluster: Mapping | None = None,
    compile: bool = False,
) -> dict:
    """Latency of ``Predictor`` (see the module docstring), same JSON keys as staged."""
    from trackformers.data.packing import pack_events
    from trackformers.inference import Predictor

    device = _checked(events, repeat, device, "measure_predictor_latency")
    pred = Predictor.from_checkpoint(ckpt, cluster=cluster, device=device, attention=attention,
                                     compile=compile)  # fmt: skip
    used = pred.cluster_settings
    inputs = [pack_events([ev], pred.features).to(device) for ev in events]

    def run(b) -> tuple[float, np.ndarray]:
        _sync(device)
        t0 = time.perf_counter()
        tracks = pred.predict(b.x, b.coords)
        labels = tracks.labels.cpu().numpy()  # the track list on the host: ends the event
        tracks.counts.cpu()
        return 1e3 * (time.perf_counter() - t0), labels

    for b in inputs:  # warm-up: graph capture per bucket, compilation
        run(b)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [run(b) for _ in range(repeat) for b in inputs]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    reserved = torch.cuda.memory_reserved(device) / 2**30 if device.type == "cuda" else None
    fcfg = pred.features
    same = [
        _same_partition(runs[i][1], time_event(pred.model, ev, fcfg, device, used)["labels"])
        for i, ev in enumerate(events)
    ]  # fmt: skip
    totals = [ms for ms, _ in runs]
    return {
        "mode": "predictor",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "ckpt": str(ckpt),
        "attention": type(pred.model.encoder.attention).__name__,
        "cluster": used,
        "cuda_graphs": pred.use_graphs,
        "compile": bool(compile),
        "n_events": len(events),
        "repeat": repeat,
        "hits_mean": float(np.mean([b.num_hits for b in inputs])),
        "median_ms": statistics.median(totals),
        "p90_ms": float(np.percentile(totals, 90)),
        "peak_gib": peak,
        "reserved_gib": reserved,
        "same_partition_as_staged": float(np.mean(same)),
    }


def main(argv=None) -> dict:
    from trackformers.evaluate import iter_eval_events, load_checkpoint

    ap = argparse.ArgumentParser(prog="python -m trackformers.latency", description=__doc__)
    ap.add_argument("ckpt")
    ap.add_argument("data", help="files / directory / glob of events (all are used)")
    ap.add_argument("--out", required=True, help="latency.json to write")
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attention", default=None)
    ap.add_argument("--cluster-json", default=None, help='e.g. {"method": "dbscan", ...}')
    ap.add_argument("--mode", choices=("staged", "predictor"), default="staged")
    ap.add_argument("--compile", action="store_true", help="predictor: compiled blocks")
    args = ap.parse_args(argv)
    cfg, _ = load_checkpoint(args.ckpt)
    events = list(iter_eval_events(cfg, args.data, "all", args.events))
    cluster = json.loads(args.cluster_json) if args.cluster_json else None
    if args.mode == "predictor":
        res = measure_predictor_latency(args.ckpt, events, args.device, args.repeat,
                                        args.attention, cluster, args.compile)  # fmt: skip
    else:
        res = measure_latency(args.ckpt, events, args.device, args.repeat, args.attention,
                              cluster)  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
