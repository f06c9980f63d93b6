"""LightningModule: a TrackFormer model, a CombinedLoss, AdamW with warm-up + cosine, and a
validation that clusters hits into tracks and computes the tracking metrics (TrackML score,
double-majority efficiency, fake rate) that ModelCheckpoint and EarlyStopping monitor.

Faults are reported, not hidden: a non-finite loss stops the run naming the step and the
events; CUDA out-of-memory is re-raised with the batch's event sizes and the settings to
change. ``batches_in_epoch`` records how far the epoch got, for mid-epoch resume
(ResumableLoader, below).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn

from trackformers.cluster import cluster_hits
from trackformers.cluster.filtering import check_threshold, cluster_kept, kept_hits
from trackformers.metrics.efficiency import MatchingRules, Reconstructable
from trackformers.metrics.event import COUNT_KEYS, evaluate_event, rates
from trackformers.models import TrackFormer

OOM_ADVICE = (
    "lower data.max_tokens (hits per packed batch; an event larger than it still goes alone), "
    "select fewer hits (data.features.volumes=pixel), use a sparse attention backend "
    "(attention=windowed or attention=flex), or lower the pairwise-loss tile "
    "(loss.terms.<name>.tile_elems)"
)


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite (the message names the step, events and terms)."""


class EventTooLargeError(RuntimeError):
    """CUDA ran out of memory on a batch (the message names its events and what to lower)."""


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, cosine decay to ``min_ratio``.

    Args:
        step: the optimizer step (0-based).
        warmup: warm-up steps (0: none).
        total: the step at which the decay reaches ``min_ratio`` (and stays).
        min_ratio: the final multiplier.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def budget_step(step: int, warmup: int, total: int, time_fraction: float) -> float:
    """The step the cosine decay is at when a wall-clock budget may end training first.

    After warm-up the decay follows whichever budget is spent the most: ``step`` of
    ``total``, or ``time_fraction`` of ``trainer.max_time``; a run stopped by its time limit
    thus ends annealed, however fast the machine was.

    Args:
        step: the optimizer step (0-based).
        warmup: warm-up steps.
        total: the step at which the decay ends.
        time_fraction: elapsed share of the time budget (0 = none set).
    """
    if step < warmup:
        return float(step)
    return max(float(step), warmup + min(1.0, time_fraction) * (total - warmup))


def time_budget_fraction(trainer) -> float:
    """Elapsed share of ``trainer.max_time`` in the fit (Lightning's Timer; 0 without one).

    Args:
        trainer: the Lightning trainer.
    """
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is None:
        return 0.0
    elapsed, left = timer.time_elapsed("train"), timer.time_remaining("train")
    if left is None or elapsed + left <= 0:
        return 0.0
    return elapsed / (elapsed + left)


def compile_encoder(encoder: nn.Module) -> list[str]:
    """torch.compile the per-hit dense parts of an encoder in place (dynamic hit count).

    The input MLP and every block's qkv/out projections and feed-forward are compiled; the
    attention backend is left as it is (its per-event, data-dependent control flow breaks
    whole-graph capture; the flex backend compiles its own kernel). State-dict keys do not
    change.

    Args:
        encoder: an ``Encoder`` (input_mlp and blocks); a ValueError if it has neither.

    Returns:
        The names of the compiled submodules.
    """
    names = []
    targets = {"input_mlp": getattr(encoder, "input_mlp", None)}
    for i, block in enumerate(getattr(encoder, "blocks", [])):
        targets[f"blocks.{i}.ffn"] = getattr(block, "ffn", None)
        attn = getattr(block, "attn", None)
        targets[f"blocks.{i}.attn.qkv"] = getattr(attn, "qkv", None)
        targets[f"blocks.{i}.attn.out"] = getattr(attn, "out", None)
    for name, mod in targets.items():
        if isinstance(mod, nn.Module):
            mod.compile(dynamic=True)
            names.append(name)
    if not names:
        raise ValueError(f"compile: found no input_mlp/blocks in {type(encoder).__name__}")
    return names


def batch_events(batch, target_names: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """Per-event dicts (schema names) for the metrics, rebuilt from a PackedBatch.

    Particle kinematics come from the per-hit targets: ``pt`` and, when among the target
    columns, ``eta`` and ``sin_phi``/``cos_phi`` (particles without them get eta = 0, phi = 0:
    only pt and eta enter the reconstructable selection).

    Args:
        batch: the PackedBatch, with truth (particle ids, ``targets["pt"]``).
        target_names: the data's target columns (names of ``targets["params"]``).
    """
    if batch.particle_id is None:
        raise ValueError("validation metrics need batch.particle_id (truth)")
    n = batch.num_hits
    pid = batch.particle_id.cpu().numpy()
    weight = (
        batch.weight.cpu().numpy().astype(np.float64)
        if batch.weight is not None
        else np.where(pid != 0, 1.0, 0.0)
    )
    volume = batch.volume_id.cpu().numpy() if batch.volume_id is not None else np.zeros(n, np.int32)
    tg = {k: v.cpu().numpy() for k, v in batch.targets.items()}
    params = tg.get("params")
    cols = {name: j for j, name in enumerate(target_names)}

    def column(name):
        if params is None or name not in cols:
            return None
        return params[:, cols[name]].astype(np.float64)

    pt = tg["pt"].astype(np.float64) if "pt" in tg else np.full(n, np.nan)
    eta = column("eta")
    sphi, cphi = column("sin_phi"), column("cos_phi")
    events = []
    cu = batch.cu_seqlens.cpu().numpy()
    event_ids = batch.event_id.cpu().numpy() if batch.event_id is not None else np.arange(len(cu))
    for b, (s, e) in enumerate(zip(cu[:-1], cu[1:], strict=True)):
        p = pid[s:e]
        part_id, first = np.unique(p[p != 0], return_index=True)
        rows = s + np.flatnonzero(p != 0)[first]  # first hit of each particle
        ppt = np.nan_to_num(pt[rows], nan=0.0)
        peta = np.nan_to_num(eta[rows], nan=0.0) if eta is not None else np.zeros(len(rows))
        phi = (
            np.arctan2(np.nan_to_num(sphi[rows]), np.nan_to_num(cphi[rows], nan=1.0))
            if sphi is not None and cphi is not None
            else np.zeros(len(rows))
        )
        events.append(
            {
                "event_id": np.int64(event_ids[b]),
                "hit_particle_id": p,
                "hit_weight": weight[s:e],
                "hit_volume_id": volume[s:e],
                "part_particle_id": part_id,
                "part_px": ppt * np.cos(phi),
                "part_py": ppt * np.sin(phi),
                "part_pz": ppt * np.sinh(peta),
            }
        )
    return events


class TrackFormerModule(L.LightningModule):
    """Training and validation of a TrackFormer model (see the module docstring).

    Args:
        model: nn.Module, ``model(batch) -> dict`` of per-hit outputs (trackformers.models).
        loss: ``loss(outputs, batch) -> (total, {term: value})``
            (trackformers.losses.CombinedLoss).
        optim: {lr, weight_decay, betas, eps}.
        scheduler: {warmup_steps, total_steps (null = trainer.max_steps), min_lr_ratio,
            time_budget (the decay also follows the elapsed share of trainer.max_time)}.
        validation: {enabled, cluster: {method, output_key, params}, reconstructable: {...},
            matching: {...}, keep_particles} — the tracking metrics of each validation epoch.
        compile_encoder: torch.compile the encoder in place (dynamic shapes).
        target_names: the data's target columns (to rebuild particle kinematics for metrics).
        config: the full resolved run config, stored in every checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optim: Mapping | None = None,
        scheduler: Mapping | None = None,
        validation: Mapping | None = None,
        compile_encoder: bool = False,
        target_names: Sequence[str] = (),
        config: Mapping | None = None,
    ):
        super().__init__()
        self.model, self.loss = model, loss
        self.optim_cfg = {"lr": 3e-4, "weight_decay": 0.01, "betas": (0.9, 0.98), "eps": 1e-8}
        self.optim_cfg.update(dict(optim or {}))
        self.sched_cfg = {
            "warmup_steps": 100,
            "total_steps": None,
            "min_lr_ratio": 0.05,
            "time_budget": True,
        }
        self.sched_cfg.update(dict(scheduler or {}))
        val = dict(validation or {})
        self.val_enabled = bool(val.get("enabled", True))
        cl = dict(val.get("cluster") or {})
        self.cluster_method = cl.get("method", "dbscan")
        self.cluster_key = cl.get("output_key", "embedding")
        # params: null = the method's defaults (argmax takes no radius)
        self.cluster_params = dict(cl.get("params", {"eps": 0.2, "min_samples": 2}) or {})
        # hit filter: hits with sigmoid(filter_logit) below it get no track (null = no filter)
        self.cluster_filter = check_threshold(
            cl.get("filter_threshold"), "validation.cluster.filter_threshold"
        )
        if (
            self.cluster_filter is not None
            and isinstance(model, TrackFormer)
            and model.hit_filter is None
        ):
            raise ValueError(
                f"validation.cluster.filter_threshold={self.cluster_filter} needs a model with "
                "a hit filter (model=contrastive_filter, or model.hit_filter); set it to null"
            )
        self.tuned_clustering: dict | None = None  # set by TuneClustering at the end of fit
        self.reconstructable = Reconstructable(**dict(val.get("reconstructable") or {}))
        self.matching = MatchingRules(**dict(val.get("matching") or {}))
        self.keep_particles = bool(val.get("keep_particles", True))
        self.compile_encoder = bool(compile_encoder)
        self.target_names = tuple(target_names or ())
        self.save_hyperparameters(ignore=["model", "loss"])
        self.batches_in_epoch = 0
        self.last_val_metrics: dict[str, float] = {}
        self.last_val_step = -1
        self.last_val_particles: pd.DataFrame | None = None
        self._val_sums: dict[str, float] = {}
        self._val_particles: list[pd.DataFrame] = []
        self._current = None

    # ---- setup ---------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.compile_encoder and not getattr(self, "_compiled", False):
            compile_encoder(self.model.encoder)
            self._compiled = True

    def forward(self, batch) -> dict[str, Tensor]:
        return self.model(batch)

    # ---- training ------------------------------------------------------------------------
    def _describe(self, batch) -> str:
        lengths = batch.cu_seqlens.diff().tolist()
        ids = batch.event_id.tolist()[:8] if batch.event_id is not None else "?"
        return (
            f"{batch.num_events} event(s), {batch.num_hits} hits, largest event "
            f"{max(lengths) if lengths else 0} hits, event ids {ids}"
        )

    def _oom(self, err: BaseException, batch, where: str) -> EventTooLargeError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return EventTooLargeError(
            f"CUDA out of memory in {where} at global step {self.global_step} on a batch of "
            f"{self._describe(batch)}. To fit it: {OOM_ADVICE}. ({err})"
        )

    def _step(self, batch, stage: str) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        out = self.model(batch)
        total, parts = self.loss(out, batch)
        return total, parts, out

    def training_step(self, batch, batch_idx: int) -> Tensor:
        self.batches_in_epoch = batch_idx + 1
        self._current = batch
        try:
            total, parts, _ = self._step(batch, "train")
        except torch.cuda.OutOfMemoryError as err:
            raise self._oom(err, batch, "the forward pass") from err
        if not bool(torch.isfinite(total)):
            terms = {k: float(v) for k, v in parts.items()}
            value = float(total.detach())
            raise NonFiniteLossError(
                f"non-finite training loss {value} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}) on {self._describe(batch)}; "
                f"loss terms {terms}. Lower optim.lr, keep trainer.gradient_clip_val, or check "
                "the features of these events."
            )
        n = batch.num_events
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"train/loss_{name}", value, batch_size=n)
        self.log("train/hits", float(batch.num_hits), batch_size=n, reduce_fx="sum")
        return total

    def backward(self, loss: Tensor, *args, **kwargs) -> None:
        try:
            super().backward(loss, *args, **kwargs)
        except torch.cuda.OutOfMemoryError as err:
            raise self._oom(err, self._current, "the backward pass") from err

    def on_train_epoch_start(self) -> None:
        self.batches_in_epoch = 0

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        cfg = self.optim_cfg
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(cfg["weight_decay"])},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(cfg["lr"]),
            betas=tuple(cfg["betas"]),
            eps=float(cfg["eps"]),
        )
        total = self.sched_cfg["total_steps"]
        if total is None:
            total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        if total is None:
            est = self.trainer.estimated_stepping_batches
            if not math.isfinite(est):
                raise ValueError(
                    "the cosine schedule needs its length: set trainer.max_steps or "
                    "scheduler.total_steps (streamed datasets have no known epoch length)"
                )
            total = int(est)
        warmup, min_ratio = (
            int(self.sched_cfg["warmup_steps"]),
            float(self.sched_cfg["min_lr_ratio"]),
        )
        total, by_time = int(total), bool(self.sched_cfg["time_budget"])

        def factor(step: int) -> float:
            frac = time_budget_fraction(self.trainer) if by_time else 0.0
            return warmup_cosine(budget_step(step, warmup, total, frac), warmup, total, min_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- validation ----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {k: 0.0 for k in (*COUNT_KEYS, "n_events", "score_sum", "n_scored")}
        self._val_particles = []

    def validation_step(self, batch, batch_idx: int) -> None:
        total, parts, out = self._step(batch, "val")
        n = batch.num_events
        self.log("val/loss", total, batch_size=n, sync_dist=True)
        for name, value in parts.items():
            self.log(f"val/loss_{name}", value, batch_size=n, sync_dist=True)
        if not self.val_enabled:
            return
        if self.cluster_key not in out:
            raise KeyError(
                f"validation clusters model output {self.cluster_key!r}, the model gives "
                f"{sorted(out)}; set validation.cluster.output_key"
            )
        labels = self.cluster(out, batch.cu_seqlens).cpu().numpy()  # (N,) int64, -1 = no track
        cu = batch.cu_seqlens.tolist()
        for b, event in enumerate(batch_events(batch, self.target_names)):
            metrics, particles = evaluate_event(
                event, labels[cu[b] : cu[b + 1]], self.reconstructable, self.matching
            )
            for k in COUNT_KEYS:
                self._val_sums[k] += metrics[k]
            self._val_sums["n_events"] += 1
            if not math.isnan(metrics["trackml_score"]):
                self._val_sums["score_sum"] += metrics["trackml_score"]
                self._val_sums["n_scored"] += 1
            if self.keep_particles:
                self._val_particles.append(particles)

    def cluster(
        self,
        out: Mapping[str, Tensor],
        cu_seqlens: Tensor,
        params: Mapping | None = None,
        filter_threshold: float | None | str = "config",
    ) -> Tensor:
        """(N,) int64 track labels of the model outputs by the validation clustering.

        Args:
            out: the model's output dict (its ``cluster_key`` entry is clustered, its
                filter logit read when a filter threshold applies).
            cu_seqlens: (B + 1,) event boundaries.
            params: the method's keyword arguments (None: the configured ones).
            filter_threshold: a value in (0, 1), None = no filter, "config" = the
                configured one.
        """
        params = dict(self.cluster_params if params is None else params)
        thr = self.cluster_filter if filter_threshold == "config" else filter_threshold
        x = out[self.cluster_key].detach()  # (N, d)
        if thr is None:
            return cluster_hits(self.cluster_method, x, cu_seqlens, **params)
        keep = kept_hits(out, thr)  # (N,) hits the filter keeps
        return cluster_kept(
            lambda xk, cuk: cluster_hits(self.cluster_method, xk, cuk, **params),
            x,
            cu_seqlens,
            keep,
        )

    def on_validation_epoch_end(self) -> None:
        if not self.val_enabled or not self._val_sums:
            return
        keys = list(self._val_sums)
        local = torch.tensor([self._val_sums[k] for k in keys], dtype=torch.float64)
        summed = self.trainer.strategy.reduce(local.to(self.device), reduce_op="sum").cpu()
        sums = dict(zip(keys, summed.tolist(), strict=True))
        metrics = rates(sums)
        metrics["trackml_score"] = (
            sums["score_sum"] / sums["n_scored"] if sums["n_scored"] else float("nan")
        )
        metrics["n_events"] = sums["n_events"]
        for k, v in metrics.items():
            self.log(f"val/{k}", float(v), sync_dist=False)
        if not self.trainer.sanity_checking:
            self.last_val_step = int(self.global_step)
            self.last_val_metrics = {k: float(v) for k, v in metrics.items()}
            if self._val_particles:
                self.last_val_particles = pd.concat(self._val_particles, ignore_index=True)

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["trackformers"] = {
            "config": self.hparams.get("config"),
            "epoch": self.current_epoch,
            "batches_in_epoch": self.batches_in_epoch,
        }
        if self.tuned_clustering is not None:  # plain python types (weights_only loading)
            checkpoint["clustering"] = dict(self.tuned_clustering)


class ResumableLoader:
    """Training iterable over a DataLoader: reproducible order per epoch, mid-epoch resume,
    and equal batch counts on every DDP rank.

    * Each pass calls ``dataset.set_epoch(trainer.current_epoch)`` (when the dataset has it), so
      the shuffled order depends only on (seed, epoch) — also after a restart.
    * ``state_dict`` (saved by Lightning in every checkpoint) records the epoch and the batches
      the module has consumed; after ``load_state_dict`` the next pass skips exactly those.
    * Under DDP every rank agrees before each batch that all ranks still have one (a one-int
      all-reduce), so a rank with fewer batches never leaves the others waiting in backward.
    """

    def __init__(self, loader, module: TrackFormerModule):
        self.loader, self.module = loader, module
        self._resume: dict | None = None

    def __len__(self) -> int:  # only if the wrapped loader knows (map-style datasets)
        return len(self.loader)

    def state_dict(self) -> dict:
        return {"epoch": self.module.current_epoch, "consumed": self.module.batches_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)

    def _epoch(self) -> int:
        return self.module.current_epoch if self.module._trainer is not None else 0

    def __iter__(self):
        epoch, skip = self._epoch(), 0
        if self._resume is not None:
            epoch, skip = int(self._resume["epoch"]), int(self._resume["consumed"])
            self._resume = None
        dataset = getattr(self.loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        it = iter(self.loader)
        for _ in range(skip):
            if next(it, None) is None:
                return
        dist = torch.distributed
        synced = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        served = 0
        while True:
            batch = next(it, None)
            more = batch is not None
            if synced:
                dev = (
                    torch.device("cuda", torch.cuda.current_device())
                    if dist.get_backend() == "nccl"
                    else torch.device("cpu")
                )
                flag = torch.tensor([int(more)], device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                more = bool(flag.item())
            if not more:
                if served == 0 and skip == 0:  # same on every rank: they run in lockstep
                    raise RuntimeError(
                        f"no training batches in epoch {epoch}"
                        + (" on at least one DDP rank" if synced else "")
                        + ": the training split is empty, or it has fewer chunks than ranks x "
                        "dataloader workers; add events or lower data.chunk_bytes"
                    )
                return
            served += 1
            yield batch
