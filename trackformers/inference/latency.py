"""Per-event inference latency and peak memory of a trained checkpoint on real events
(the measurements of ``python -m trackformers.latency``).

``measure_latency`` (``--mode staged``, the default): one event at a time goes the whole way
a user's event goes: in-memory event (numpy) -> features and packing -> device -> attention
plan -> forward (``--precision``: fp16 autocast on CUDA by default) -> clustering into tracks
(the clustering tuned on validation and stored in the checkpoint, else its validation
clustering, or the one given; "cluster.source" in the JSON says which) -> labels back on the
host. Each stage is timed with a device synchronisation at its end; a warm-up pass over the
events first (compilation, autotuning), then ``repeat`` timed passes; the median over all
timed event passes is reported. Peak memory is ``torch.cuda.max_memory_allocated`` over the
timed passes, weights included. The JSON written is what ``trackformers.results`` reads
(``median_ms``, ``peak_gib``, ``device``).

``measure_predictor_latency`` (``--mode predictor``): the deployment latency of the same
checkpoint on the same events, through ``Predictor`` (CUDA graph per hit-count bucket on a
GPU, eager on CPU): timed from the event's features and coordinates on the device to its
track list (labels and hits per track, read back to the host). Also reported: the fraction
of events whose partition equals the staged path's (the same clustering method;
reduced-precision kernels of the two paths may differ in the last bit, which can move a
point across eps), the split into plan / model / clustering (the same steps as three CUDA
graphs replayed back to back; other = total - model - clustering), the fraction of replays
whose DBSCAN rounds were completed eagerly, peak allocated and reserved memory (after
``empty_cache``: weights, graph pools, caches; a graph's replays allocate nothing, so only
reserved memory shows its working set), the same by allocator pool, a timeline of
``predict`` (host vs GPU ms per step) and, with ``physics``, the DM efficiency and fake rate
of the Predictor's tracks next to the staged fp32 path's.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from trackformers.bench import device_name, sync
from trackformers.cluster import assign_tracks
from trackformers.cluster.pipeline import start_assign
from trackformers.data.packing import pack_events
from trackformers.inference.events import restrict
from trackformers.inference.forward import amp_precision, forward_batch
from trackformers.inference.loader import load_model, output_keys, resolve_device
from trackformers.inference.predictor import Predictor, track_counts
from trackformers.inference.settings import cluster_settings, metric_rules
from trackformers.metrics import aggregate, evaluate_event, ratio_err

STAGES = ("prep", "plan", "model", "cluster")


@torch.no_grad()
def time_event(
    model, event: dict, fcfg, device: torch.device, cluster: Mapping, amp: bool | str = "fp16"
) -> dict:
    """Stage times (ms) of one event's inference; returns them, the track labels and the
    model's hit ids (amp: the forward precision, ``amp_precision``).

    Args:
        model: the TrackFormer on ``device``.
        event: the event dict.
        fcfg: the feature config.
        device: the device.
        cluster: clustering settings.
        amp: the forward precision.

    Returns:
        stage -> ms, plus ``labels`` and ``hit_id``.
    """
    t = [time.perf_counter()]
    batch = pack_events([event], fcfg).to(device)
    sync(device)
    t.append(time.perf_counter())
    plan = model.encoder.build_plan(batch)
    sync(device)
    t.append(time.perf_counter())
    out, _ = forward_batch(model, batch, plan, amp)
    sync(device)
    t.append(time.perf_counter())
    labels = assign_tracks(out, batch.cu_seqlens, cluster, plan, batch.coords).cpu().numpy()
    t.append(time.perf_counter())
    ms = {s: 1e3 * (b - a) for s, a, b in zip(STAGES, t[:-1], t[1:], strict=True)}
    ms["total"] = 1e3 * (t[-1] - t[0])
    hit_id = None if batch.hit_id is None else batch.hit_id.cpu().numpy()
    return {"ms": ms, "hits": int(batch.num_hits), "labels": labels, "hit_id": hit_id}


def _checked(events: Sequence, repeat: int, device, caller: str) -> torch.device:
    """The device to time on ("auto": CUDA when available), after checking the arguments."""
    if not events:
        raise ValueError(f"{caller} needs at least one event")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    return resolve_device(device)


def capture_graph(fn):
    """(graph, outputs) of ``fn`` captured in a CUDA graph, after one warm-up call on a side
    stream (allocator and autotuning settle outside the capture).

    Args:
        fn: () -> outputs, capturable (no host sync).

    Returns:
        The ``torch.cuda.CUDAGraph`` and the outputs it writes on replay.
    """
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def measure_latency(
    ckpt: str | Path,
    events: Sequence[dict],
    device: str | torch.device = "auto",
    repeat: int = 2,
    attention: str | None = None,
    cluster: Mapping | None = None,
    amp: bool | str = "fp16",
) -> dict:
    """Latency summary of ``ckpt`` over ``events`` (see the module docstring); amp: the
    forward's precision (``amp_precision``). An attention backend that does not run on the
    device is refused (no fallback: the latency of another backend is not this one's).

    Args:
        ckpt: checkpoint or export.
        events: event dicts.
        device: ``cuda``, ``cpu`` or ``auto``.
        repeat: timed passes over the events.
        attention: swap the attention backend (None: the trained one).
        cluster: clustering settings (None: the checkpoint's).
        amp: the forward precision.

    Returns:
        The JSON of ``python -m trackformers.latency`` (median / p90 ms, stages, peak memory, ...).
    """
    device = _checked(events, repeat, device, "measure_latency")
    loaded = load_model(ckpt, device, attention, fallback=None)
    model, cfg, fcfg = loaded.model, loaded.config, loaded.features
    # clustering settings as evaluate chooses them (they depend on the output names)
    used = cluster_settings(cfg, cluster or {}, output_keys(model))
    for ev in events:  # warm-up: compilation, autotuning, allocator
        time_event(model, ev, fcfg, device, used, amp)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    runs = [time_event(model, ev, fcfg, device, used, amp) for _ in range(repeat) for ev in events]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    totals = [r["ms"]["total"] for r in runs]
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "ckpt": str(ckpt),
        "attention": type(model.encoder.attention).__name__,
        "cluster": used,
        "n_events": len(events),
        "repeat": repeat,
        "hits_mean": float(np.mean([r["hits"] for r in runs])),
        "precision": amp_precision(amp) if device.type == "cuda" else "fp32",
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


def _graph_pending(pred, n: int) -> bool:
    """Whether the last replay of the n-hit event's graph left DBSCAN rounds unfinished (its
    labels were then completed eagerly, outside the graph)."""
    g = pred._graphs.get((n // pred.bucket + 1) * pred.bucket) if pred.use_graphs else None
    return bool(g is not None and g.state is not None and bool(g.state.pending))


def predictor_split(pred, b, warmup: int = 2, repeat: int = 5) -> dict[str, float]:
    """Median ms of the Predictor's step for event ``b`` (its bucket graph captured) as three
    CUDA graphs replayed back to back: plan (+ features), model, clustering (+ track counts;
    a clustering neighbourhood plan is built inside it). CUDA only; captures new graphs, so
    call it after reading memory.

    Args:
        pred: a Predictor with CUDA graphs.
        b: the bucket (padded hit count) of the event.
        warmup: untimed replays.
        repeat: timed replays.

    Returns:
        ``plan``, ``model``, ``clustering`` -> median ms.
    """
    size = (b.num_hits // pred.bucket + 1) * pred.bucket
    g = pred._graphs[size]
    g.fill(b.x, b.coords)
    valid = torch.arange(size, device=pred.device) < g.cu[1]

    stages: dict = {}
    if pred.plan_in_graph:
        stages["plan"], plan = capture_graph(lambda: pred.model.encoder.build_plan(g.batch()))
        stages["plan"].replay()  # the static plan holds values before the next warm-up reads it
    else:
        plan, stages["plan"] = g.plan, None  # eager plan copied into the static plan

    def model_fn():
        plan.extra = {k: v for k, v in plan.extra.items() if not k.startswith("fused_")}
        return forward_batch(pred.model, g.batch(), plan, pred.amp, False, pred._forward)[0]

    stages["model"], out = capture_graph(model_fn)
    stages["model"].replay()

    def cluster_fn():
        _, lab = start_assign(out, g.cu, pred.cfg, plan, valid, pred.rounds, g.coords, size)
        return lab, track_counts(lab)

    stages["clustering"], _ = capture_graph(cluster_fn)
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(stages) + 1)]
    times: list[dict] = []
    for k in range(warmup + repeat):
        ev[0].record()
        for i, graph in enumerate(stages.values()):
            pred._copy_plan(g) if graph is None else graph.replay()
            ev[i + 1].record()
        torch.cuda.synchronize()
        if k >= warmup:
            times.append({n: ev[i].elapsed_time(ev[i + 1]) for i, n in enumerate(stages)})
    return {n: statistics.median(t[n] for t in times) for n in stages}


def memory_breakdown() -> list[dict]:
    """Reserved CUDA memory by allocator pool and stream (``torch.cuda.memory_snapshot``):
    per (pool id, stream) the segments' MiB reserved and allocated, largest first. Pool
    (0, 0) is the general pool; others are CUDA-graph private pools."""
    rows: dict[tuple, dict] = {}
    for seg in torch.cuda.memory_snapshot():
        key = (tuple(seg.get("segment_pool_id", (0, 0))), int(seg.get("stream", 0)))
        r = rows.setdefault(
            key,
            {
                "pool": list(key[0]),
                "stream": key[1],
                "segments": 0,
                "reserved_mib": 0.0,
                "allocated_mib": 0.0,
            },
        )
        r["segments"] += 1
        r["reserved_mib"] += seg["total_size"] / 2**20
        r["allocated_mib"] += seg["allocated_size"] / 2**20
    return sorted(rows.values(), key=lambda r: -r["reserved_mib"])


def path_physics(
    events: Sequence[dict],
    labels: Sequence[np.ndarray],
    hit_ids: Sequence[np.ndarray],
    run_cfg: Mapping,
) -> dict:
    """Physics of one inference path's track labels on ``events`` (each restricted to the
    model's hits ``hit_ids``), with the run's reconstructable / matching rules: the pooled
    metrics of ``metrics.aggregate`` plus event-level errors of DM efficiency and fake rate,
    and the per-event counts (for paired comparisons between paths on the same events).

    Args:
        events: full event dicts.
        labels: track labels per event, over the model's hits.
        hit_ids: hit ids the model saw per event.
        run_cfg: the run config (reconstructable and matching rules).
    """
    rec, rules = metric_rules(run_cfg)
    per = [
        evaluate_event(restrict(ev, hid), lab, rec, rules)[0]
        for ev, lab, hid in zip(events, labels, hit_ids, strict=True)
    ]
    out = aggregate(per)
    out["dm_efficiency_err"] = ratio_err(per, "n_dm", "n_reconstructable")
    out["fake_rate_err"] = ratio_err(per, "n_fake", "n_candidates")
    keys = ("n_dm", "n_reconstructable", "n_fake", "n_candidates", "n_perfect")
    out["per_event"] = [{k: m[k] for k in keys} for m in per]
    return out


class _OnDevice:
    """Packed events kept on the host, each copied to the device when iterated (so that the
    device holds one event at a time, as in a stream of events)."""

    def __init__(self, host: Sequence, device: torch.device):
        self.host, self.device = list(host), device

    def __iter__(self):
        for b in self.host:
            yield b.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.host)


def predictor_timeline(pred, inputs: Sequence, repeat: int = 3) -> dict[str, dict]:
    """Where the graph path's time goes, per step of ``Predictor.predict`` (its ``trace``
    marks): median host ms (wall clock between the marks) and GPU ms (CUDA events between
    them) over the events x repeat, plus "read back" (labels and counts to the host, as a
    user's track list would be). A GPU step much shorter than its host step means the GPU
    waited for the host there. CUDA graphs only; call after warm-up.

    Args:
        pred: a warmed-up Predictor with CUDA graphs.
        inputs: (x, coords) per event, on the device.
        repeat: passes over the events.

    Returns:
        step -> {"host_ms", "gpu_ms"}.
    """
    rows: dict[str, dict[str, list]] = {}
    for _ in range(repeat):
        for b in inputs:
            pred.trace = []
            torch.cuda.synchronize()
            tracks = pred.predict(b.x, b.coords)
            tracks.labels.cpu(), tracks.counts.cpu()
            pred._mark("read back")
            torch.cuda.synchronize()
            marks, pred.trace = pred.trace, None
            for (_, h0, e0), (name, h1, e1) in itertools.pairwise(marks):
                r = rows.setdefault(name, {"host_ms": [], "gpu_ms": []})
                r["host_ms"].append(1e3 * (h1 - h0))
                r["gpu_ms"].append(e0.elapsed_time(e1))
            r = rows.setdefault("total", {"host_ms": [], "gpu_ms": []})
            r["host_ms"].append(1e3 * (marks[-1][1] - marks[0][1]))
            r["gpu_ms"].append(marks[0][2].elapsed_time(marks[-1][2]))
    return {k: {m: statistics.median(v) for m, v in r.items()} for k, r in rows.items()}


def measure_predictor_latency(
    ckpt: str | Path,
    events: Sequence[dict],
    device: str | torch.device = "auto",
    repeat: int = 2,
    attention: str | None = None,
    cluster: Mapping | None = None,
    compile: bool = False,
    amp: bool | str = "fp16",
    split: bool = True,
    rounds: int = 4,
    physics: bool = False,
    prepare: bool = True,
    ffn_chunk: int = 8192,
) -> dict:
    """Latency of ``Predictor`` (see the module docstring), same JSON keys as staged.

    The events wait in pinned host memory; each is copied to the device before its timed
    run (the timing starts from hits on the device), so device memory holds one event.

    Args:
        ckpt: checkpoint or export.
        events: event dicts.
        device: ``cuda``, ``cpu`` or ``auto``.
        repeat: timed passes over the events.
        attention: swap the attention backend.
        cluster: clustering settings (None: the checkpoint's).
        compile: compiled encoder blocks.
        amp: the forward precision (``amp_precision``: "fp16" autocast by default,
            True / "bf16", False / "fp32").
        split: also time plan / model / clustering as separate graphs (CUDA graphs only),
            after memory is read.
        rounds: DBSCAN component rounds inside the graph.
        physics: also the physics of the Predictor's tracks (the timed ones) and of the
            staged path in float32 on the same events (``path_physics``), so the fast path's
            cost in efficiency is measured, not assumed.
        prepare: capture every bucket's graph up front, largest first
            (``Predictor.prepare``); False: in the order the events come.
        ffn_chunk: feed-forward rows at a time of ``Predictor`` (with ``compile``).

    Returns:
        The JSON of ``python -m trackformers.latency --mode predictor``.
    """
    device = _checked(events, repeat, device, "measure_predictor_latency")
    pred = Predictor.from_checkpoint(
        ckpt,
        cluster=cluster,
        device=device,
        attention=attention,
        compile=compile,
        amp=amp,
        rounds=rounds,
        ffn_chunk=ffn_chunk,
    )
    used = pred.cluster_settings
    host = [pack_events([ev], pred.features) for ev in events]
    if device.type == "cuda":
        host = [b.pin_memory() for b in host]
    inputs = _OnDevice(host, device)

    def run(b) -> tuple[float, np.ndarray, bool]:
        sync(device)
        t0 = time.perf_counter()
        tracks = pred.predict(b.x, b.coords)
        labels = tracks.labels.cpu().numpy()  # the track list on the host: ends the event
        tracks.counts.cpu()
        ms = 1e3 * (time.perf_counter() - t0)
        return ms, labels, _graph_pending(pred, b.num_hits)

    if prepare:
        pred.prepare([(b.x, b.coords) for b in inputs])
    for b in inputs:  # warm-up: graph capture per bucket, compilation
        run(b)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [run(b) for _ in range(repeat) for b in inputs]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    reserved = pools = None
    if device.type == "cuda":  # what inference holds on to: weights, graph pools, caches
        torch.cuda.empty_cache()
        reserved = torch.cuda.memory_reserved(device) / 2**30
        pools = memory_breakdown()
    fcfg = pred.features
    staged = [time_event(pred.model, ev, fcfg, device, used, amp) for ev in events]
    same = [_same_partition(runs[i][1], s["labels"]) for i, s in enumerate(staged)]
    phys = None
    if physics:
        run_cfg = pred.run_config
        hit_ids = [s["hit_id"] for s in staged]
        ref = [time_event(pred.model, ev, fcfg, device, used, "fp32") for ev in events]
        timed = [r[1] for r in runs[: len(events)]]  # the first timed pass over the events
        phys = {
            "predictor": path_physics(events, timed, hit_ids, run_cfg),
            "staged_fp32": path_physics(events, [r["labels"] for r in ref], hit_ids, run_cfg),
        }
    stages = timeline = None
    if pred.use_graphs:
        timeline = predictor_timeline(pred, inputs)
    if split and pred.use_graphs:
        per = [predictor_split(pred, b) for b in inputs]
        stages = {k: statistics.median(p[k] for p in per) for k in per[0]}
    totals = [ms for ms, _, _ in runs]
    med = statistics.median(totals)
    if stages is not None:
        stages["other"] = med - stages["model"] - stages["clustering"]
    return {
        "mode": "predictor",
        "device": device_name(device),
        "torch": torch.__version__,
        "ckpt": str(ckpt),
        "attention": type(pred.model.encoder.attention).__name__,
        "cluster": used,
        "cuda_graphs": pred.use_graphs,
        "compile": bool(compile),
        "n_events": len(events),
        "repeat": repeat,
        "hits_mean": float(np.mean([b.num_hits for b in inputs.host])),
        "median_ms": med,
        "p90_ms": float(np.percentile(totals, 90)),
        "peak_gib": peak,
        "reserved_gib": reserved,
        "reserved_by_pool": pools,
        "prepared": bool(prepare and pred.use_graphs),
        "same_partition_as_staged": float(np.mean(same)),
        "precision": pred.amp,
        "physics": phys,
        "rounds": rounds,
        "stages_median_ms": stages,
        "timeline_ms": timeline,
        "eager_completion_fraction": float(np.mean([p for _, _, p in runs])),
        "n_tracks_mean": float(np.mean([len(np.unique(lab[lab >= 0])) for _, lab, _ in runs])),
        "staged_ms_median": statistics.median(s["ms"]["total"] for s in staged),
    }
