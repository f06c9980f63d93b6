"""Per-event inference: hits → features + attention plan → model → clustering → track ids.

``Predictor(model, cluster)`` (or ``Predictor.from_checkpoint(path)``) runs one event with
``predict(x, coords)`` and returns its ``Tracks`` (per-hit track id, hits per track, number of
tracks), all on the model's device:

- on CUDA (``cuda_graphs=True``) the whole step is captured once per hit-count bucket into a
  CUDA graph and replayed. Events are padded to the bucket (a multiple of ``bucket`` hits,
  > n) with a second, dummy event, so attention, plan and clustering of the real event are
  exactly those of the unpadded one; padding rows are never clustered. The attention plan is
  built inside the graph when its builder has a capturable path (``plan_capturable``),
  otherwise eagerly before each replay and copied into the graph's static plan tensors. The
  rest of the step is checked sync-free (``torch.cuda.set_sync_debug_mode("error")``)
  before its capture. After the replay ONE host sync reads three
  flags of the clustering (component rounds unfinished, non-finite input, grid key
  overflow); if any is set the clustering is completed eagerly, so labels are always exact.
- on CPU (or ``cuda_graphs=False``) the same steps run eagerly (``predict_batch`` takes a
  packed batch of several events).

The forward is ``forward.forward_batch`` (fp16 autocast on CUDA by default); the clustering
is split around the replay by ``cluster.pipeline.start_assign`` / ``finish_assign``; a method
is captured when its row of ``cluster.METHODS`` has a ``start``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from trackformers.attention import plans
from trackformers.attention.base import AttentionPlan
from trackformers.cluster import METHODS, ClusterConfig, assign_tracks, clustering_input
from trackformers.cluster.filtering import FILTER_KEY
from trackformers.cluster.pipeline import finish_assign, start_assign
from trackformers.data.batch import PackedBatch
from trackformers.data.packing import pack_events
from trackformers.inference.compiled import CompiledForward
from trackformers.inference.forward import amp_precision, forward_batch
from trackformers.inference.loader import load_model, output_keys
from trackformers.inference.settings import cluster_settings


@dataclass
class Tracks:
    """Track list of one event as fixed-size tensors (no host sync to build it).

    labels (n,) int64 track id per hit, -1 = no track; ids are 0..n_tracks-1, numbered by
    each track's smallest hit index (DBSCAN) or the class (argmax).
    counts (max(n, classes),) int64 hits of track id t at counts[t] (0 for unused ids).
    n_tracks () int64 number of ids with hits (device scalar).
    """

    labels: Tensor
    counts: Tensor
    n_tracks: Tensor


def track_counts(labels: Tensor, num_ids: int = 0) -> tuple[Tensor, Tensor]:
    """counts (max(N, num_ids),) hits per track id and n_tracks () = ids with hits, for
    labels (N,) with -1 = none (``num_ids``: an upper bound on the ids, e.g. argmax classes).

    Args:
        labels: (N,) int64 track label per hit.
        num_ids: upper bound on the ids (0: N).
    """
    assigned = labels >= 0  # (N,)
    counts = torch.zeros(max(labels.numel(), num_ids), dtype=torch.long, device=labels.device)
    counts.scatter_add_(0, labels.clamp_min(0), assigned.long())
    return counts, (counts > 0).sum()


# cluster methods the CUDA-graph step can capture (a sync-free start)
GRAPH_METHODS = tuple(name for name, m in METHODS.items() if m.start is not None)


class _EventGraph:
    """Static buffers and the captured step of one bucket size."""

    def __init__(self, pred: Predictor, size: int, n_features: int):
        dev = pred.device
        self.size = size
        self.x = torch.zeros(size, n_features, device=dev)  # (B, F)
        self.coords = torch.zeros(size, 3, device=dev)  # (B, 3)
        self.cu = torch.tensor([0, size - 1, size], dtype=torch.int32, device=dev)  # (3,)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.plan: AttentionPlan | None = None  # static plan when built outside the graph

    def batch(self) -> PackedBatch:
        return PackedBatch(x=self.x, cu_seqlens=self.cu, max_seqlen=self.size, coords=self.coords)

    def fill(self, x: Tensor, coords: Tensor) -> None:
        n = x.shape[0]
        self.x[:n].copy_(x)
        self.x[n:].zero_()
        self.coords[:n].copy_(coords)
        self.coords[n:].zero_()
        self.cu[1].fill_(n)


class Predictor:
    """Per-event inference of a TrackFormer model (see module docstring).

    Args:
        model: a TrackFormer (encoder with ``build_plan``, head returning a dict).
        cluster: ClusterConfig or its dict (method dbscan | dbscan_plan | argmax on the
            graph path; any method of ``trackformers.cluster`` eagerly).
        cuda_graphs: capture per bucket on CUDA; False = eager everywhere.
        bucket: graph sizes are multiples of this many hits.
        rounds: DBSCAN component rounds inside the graph before the convergence check.
        amp: forward precision on CUDA: "fp16" (float16 autocast, the default), True /
            "bf16" (bf16 autocast), False / "fp32" (``forward.amp_precision``). fp16, not bf16: on
            the trained µ = 200 contrastive model bf16 rounding moves embeddings across the
            DBSCAN radius and loses 70 % of the found particles, fp16 about 4 % (BENCHMARKS.md).
        compile: graph path only: the encoder blocks' dense parts torch.compile'd
            (``inference.compiled``; needs LayerNorm + GELU blocks).
        ffn_chunk: with ``compile``, the feed-forward over this many rows at a time (0: all
            at once). Same math, less graph memory per bucket: on µ = 200 events (3 buckets,
            H200) 0.36 GiB reserved at 8192 rows, 0.38 at 16384 (0.27 ms faster), 0.43 at 0.
    """

    def __init__(
        self,
        model,
        cluster: ClusterConfig | Mapping,
        cuda_graphs: bool = True,
        bucket: int = 4096,
        rounds: int = 4,
        amp: bool | str = "fp16",
        compile: bool = False,
        ffn_chunk: int = 8192,
    ):
        self.model = model.eval()
        self.cfg = (
            cluster if isinstance(cluster, ClusterConfig) else ClusterConfig.from_dict(cluster)
        )
        self.device = next(model.parameters()).device
        self.use_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        if self.use_graphs and self.cfg.method not in GRAPH_METHODS:
            raise ValueError(
                f"CUDA-graph inference supports cluster methods {GRAPH_METHODS}, got "
                f"{self.cfg.method!r}; pass cuda_graphs=False"
            )
        if bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {bucket}")
        self.bucket, self.rounds = int(bucket), int(rounds)
        self.amp = amp_precision(amp)
        self.plan_in_graph: bool | None = None  # decided on the first capture
        # graph path: keep every model output as a static graph output (e.g. "hidden",
        # (N, d_model) float32 per bucket) instead of the clustering input alone
        self.keep_outputs = False
        self._graphs: dict[int, _EventGraph] = {}
        self._pool = None
        self._side: torch.cuda.Stream | None = None  # warm-up stream, one for all buckets
        self.trace: list | None = None  # a list: predict appends its timeline marks
        self._forward = None
        if compile and self.use_graphs:
            self._forward = CompiledForward(self.model, ffn_chunk=ffn_chunk)

    @classmethod
    def from_checkpoint(
        cls,
        path,
        cluster: Mapping | None = None,
        device=None,
        attention: str | None = None,
        **kwargs,
    ) -> Predictor:
        """Model and clustering of a training checkpoint (the clustering tuned on validation
        and stored in it, else the run's validation clustering, unless ``cluster`` is given;
        ``pred.cluster_settings["source"]`` says which), on ``device`` (default: CUDA when
        available; an attention backend that does not run there falls back to dense).

        Args:
            path: checkpoint or export.
            cluster: clustering settings (None: the checkpoint's).
            device: the device (None: CUDA when available).
            attention: swap the attention backend.
            **kwargs: further :class:`Predictor` arguments.

        Returns:
            The predictor.
        """
        loaded = load_model(path, device, attention)
        cfg = cluster_settings(loaded.config, cluster or {}, output_keys(loaded.model))
        pred = cls(loaded.model, cfg, **kwargs)
        pred.features = loaded.features
        pred.run_config = loaded.config
        pred.cluster_settings = cfg  # the dict chosen as evaluate chooses it, with "source"
        return pred

    # ---- eager ---------------------------------------------------------------------------
    def predict_batch(self, batch: PackedBatch) -> Tensor:
        """(N,) int64 track labels of a packed batch (unique across events), eager.

        Args:
            batch: packed events, on the device.
        """
        out, plan = forward_batch(self.model, batch, amp=self.amp)
        return assign_tracks(out, batch.cu_seqlens, self.cfg, plan, batch.coords)

    def predict_event(self, event: Mapping) -> Tracks:
        """Tracks of an in-memory event dict (schema names); features of the checkpoint.

        Args:
            event: the event dict.

        Returns:
            Its track list.
        """
        fcfg = getattr(self, "features", None)
        if fcfg is None:
            raise ValueError("predict_event needs a Predictor built by from_checkpoint")
        batch = pack_events([event], fcfg).to(self.device)
        return self.predict(batch.x, batch.coords)

    # ---- one event -----------------------------------------------------------------------
    def prepare(self, examples) -> list[int]:
        """Capture the graphs of the buckets of example events ``[(x, coords), ...]`` (as for
        ``predict``) before timing anything, LARGEST BUCKET FIRST: all buckets share one graph
        memory pool, and a smaller bucket's capture reuses the blocks a larger one freed,
        where the other order grows the pool bucket by bucket. Returns the bucket sizes
        captured (sorted); a no-op without CUDA graphs.

        Args:
            examples: (x, coords) of example events.
        """
        if not self.use_graphs:
            return []
        by_size = {self._size(x.shape[0]): (x, coords) for x, coords in examples}
        for size in sorted(by_size, reverse=True):
            if size not in self._graphs:
                x, coords = by_size[size]
                g = self._graphs[size] = _EventGraph(self, size, x.shape[1])
                g.fill(x, coords)
                self._capture(g)
        return sorted(by_size)

    def _size(self, n: int) -> int:
        return (n // self.bucket + 1) * self.bucket  # > n: the padding event is never empty

    def predict(self, x: Tensor, coords: Tensor) -> Tracks:
        """Tracks of ONE event: x (n, F) model features, coords (n, 3) mm, on the device.

        Args:
            x: (n, F) features.
            coords: (n, 3) hit positions in mm.

        Returns:
            The track list (labels, hits per track, track count).
        """
        n = x.shape[0]
        if x.ndim != 2 or coords.shape != (n, 3):
            raise ValueError(
                f"need x (n, F) and coords (n, 3), got {tuple(x.shape)}, {tuple(coords.shape)}"
            )
        if not self.use_graphs:
            cu = torch.tensor([0, n], dtype=torch.int32, device=x.device)
            batch = PackedBatch(x=x, cu_seqlens=cu, max_seqlen=n, coords=coords)
            out, plan = forward_batch(self.model, batch, amp=self.amp)
            labels = assign_tracks(out, batch.cu_seqlens, self.cfg, plan, coords)
            return Tracks(labels, *track_counts(labels, self._num_ids(out)))
        size = self._size(n)
        g = self._graphs.get(size)
        if g is None:
            g = self._graphs[size] = _EventGraph(self, size, x.shape[1])
            g.fill(x, coords)
            self._capture(g)
        self._mark("start")
        g.fill(x, coords)
        if not self.plan_in_graph:
            self._copy_plan(g)
        self._mark("filled")
        g.graph.replay()
        self._mark("replayed")
        labels = finish_assign(g.state, g.labels)  # one sync: the clustering's flags
        self._mark("flags read")
        if labels is g.labels:  # the graph's own labels: its track counts hold
            width = max(n, self._num_ids(g.out))
            tracks = Tracks(labels[:n].clone(), g.counts[:width].clone(), g.n_tracks.clone())
        else:  # completed eagerly after the replay
            labels = labels[:n].clone()
            tracks = Tracks(labels, *track_counts(labels, self._num_ids(g.out)))
        self._mark("counted")
        return tracks

    def _mark(self, name: str) -> None:
        """Timeline mark of the graph path when ``self.trace`` is a list (``latency``'s
        ``predictor_timeline``): (name, host seconds, CUDA event recorded on the stream)."""
        if self.trace is not None:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.trace.append((name, time.perf_counter(), ev))

    def _num_ids(self, out) -> int:
        if not METHODS[self.cfg.method].class_ids:
            return 0
        return clustering_input(out, self.cfg)[1].shape[1]  # classes of one event

    def _step(self, g: _EventGraph, plan: AttentionPlan | None = None):
        batch = g.batch()
        if plan is None:
            plan = self.model.encoder.build_plan(batch) if self.plan_in_graph else g.plan
        out, plan = forward_batch(self.model, batch, plan, self.amp, False, self._forward)
        if not self.keep_outputs:  # static graph outputs: only the clustering input stays
            name, _ = clustering_input(out, self.cfg)
            keep = (name, FILTER_KEY) if self.cfg.filter_threshold is not None else (name,)
            out = {k: out[k] for k in keep if k in out}
        valid = torch.arange(g.size, device=self.device) < g.cu[1]  # (B,) the real event
        state, labels = start_assign(
            out, g.cu, self.cfg, plan, valid, self.rounds, g.coords, g.size
        )
        # track counts in the graph too (padding rows are never clustered: label -1)
        g.counts, g.n_tracks = track_counts(labels, self._num_ids(out))
        return state, labels, out

    def _copy_plan(self, g: _EventGraph) -> None:
        """Eager plan of the padded batch copied into the graph's static plan tensors."""
        plan = self.model.encoder.build_plan(g.batch())
        for name in ("perm", "inv_perm", "group_id"):
            src = getattr(plan, name)
            if src is not None:
                getattr(g.plan, name).copy_(src)

    def _static_plan(self, g: _EventGraph) -> None:
        plan = self.model.encoder.build_plan(g.batch())
        g.plan = AttentionPlan(
            kind=plan.kind,
            cu_seqlens=g.cu,
            max_seqlen=g.size,
            perm=None if plan.perm is None else plan.perm.clone(),
            inv_perm=None if plan.inv_perm is None else plan.inv_perm.clone(),
            group_id=None if plan.group_id is None else plan.group_id.clone(),
            adjacency=plan.adjacency,
            window=plan.window,
            extra={"n_rows": g.size},
        )

    def _capture(self, g: _EventGraph) -> None:
        if self.plan_in_graph is None:
            self.plan_in_graph = plan_capturable(self.model)
        # eager warm-ups on a side stream: compiles, Triton autotuning, allocator pools. One
        # stream for every bucket: cuBLAS keeps a workspace per stream it has run on.
        if self._side is None:
            self._side = torch.cuda.Stream()
        s = self._side
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            with _no_plan_graphs():
                self._static_plan(g)  # also the plan builder's warm-up before its capture
            for _ in range(2):
                self._step_fresh(g, g.plan)
            if not _sync_free(lambda: self._step_fresh(g, g.plan)):
                raise RuntimeError(
                    "the inference step synchronises with the host, so it cannot be captured "
                    "in a CUDA graph; run it with torch.cuda.set_sync_debug_mode('warn') to "
                    "see where, or use Predictor(..., cuda_graphs=False)"
                )
            if self.plan_in_graph:
                g.plan = None
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        try:
            g.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g.graph, pool=self._pool, stream=s):
                g.state, g.labels, g.out = self._step_fresh(g)
        except RuntimeError as err:
            if not self.plan_in_graph:
                raise
            msg = f"capturing the plan build failed ({err}); it runs eagerly before each replay"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize()
            self.plan_in_graph = False
            self._static_plan(g)
            g.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g.graph, pool=self._pool, stream=s):
                g.state, g.labels, g.out = self._step_fresh(g)

    def _step_fresh(self, g: _EventGraph, plan: AttentionPlan | None = None):
        if g.plan is not None:  # metadata cached by a backend must be rebuilt in the graph
            g.plan.extra = {k: v for k, v in g.plan.extra.items() if not k.startswith("fused_")}
        return self._step(g, plan)


@contextlib.contextmanager
def _no_plan_graphs():
    """Plan builds run eagerly (``plans.GRAPHS`` off): the warm-up plan of a bucket would
    otherwise be cached as its own CUDA graph (~10-20 MB of reserved memory per bucket)
    although the step's graph builds the plan itself."""
    saved = plans.GRAPHS
    plans.GRAPHS = False
    try:
        yield
    finally:
        plans.GRAPHS = saved


def plan_capturable(model) -> bool:
    """Whether the model's plan builder has a sync-free path that it takes while a CUDA graph
    is being captured (trackformers.attention.plans builders with a ``sync`` argument).

    Args:
        model: a TrackFormer.
    """
    backend = model.encoder.attention
    kind = getattr(backend, "mask", "cluster")
    builder = {"cluster": "cluster_plan", "window": "window_plan"}.get(kind, "full_plan")
    fn = getattr(plans, builder, None)
    return fn is not None and "sync" in inspect.signature(fn).parameters


def _sync_free(fn) -> bool:
    """True when fn runs without any host-device synchronisation (sync debug mode)."""
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return True
    except RuntimeError as err:
        if "synchroniz" not in str(err):
            raise
        return False
    finally:
        torch.cuda.set_sync_debug_mode(prev)
