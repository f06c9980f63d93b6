"""Training throughput (events/s, hits/s) and peak memory of the real training loop
(Lightning + TrackFormerModule + CombinedLoss, bf16-mixed) on mu=200 pixel-size events.

    python benchmarks/train_throughput.py --json $OUT/throughput.json                 # 1 GPU
    python benchmarks/train_throughput.py --backends flex --devices 2 --strategy ddp \\
        --json $OUT/ddp2.json                                                        # scaling
    python benchmarks/train_throughput.py --hits 2000 --steps 3 --warmup 1 --backends dense \\
        --d-model 32 --layers 1                                                      # CPU smoke

Events: synthetic pixel hits (trackformers.attention.synthetic, ~60 k hits, one event per
step, a different set per DDP rank). Model: encoder d_model x layers with the backend,
contrastive head (D = 32), supervised contrastive loss over all hits of the event (tiled).
Reported per backend: events/s and hits/s over the timed steps (after warm-up steps that
compile), seconds per step, peak GPU memory of rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback

import lightning as L
import torch

from trackformers.attention import build as build_attention
from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import device_name
from trackformers.callbacks.throughput import ThroughputLog
from trackformers.losses import CombinedLoss, SupConLoss
from trackformers.models import ContrastiveHead, Encoder, TrackFormer
from trackformers.models.module import TrackFormerModule

BACKENDS = {
    "dense": {},
    "flex": {"mask": "cluster", "group_size": 256},
    "windowed": {"window": 384},
    "fused": {"mask": "cluster", "group_size": 256},
}


class Batches:
    """An epoch = the given PackedBatches in order (Lightning takes any iterable)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def run_backend(name: str, args) -> dict:
    rank = int(os.environ.get("LOCAL_RANK", 0))
    kw = dict(BACKENDS[name])
    if not torch.cuda.is_available() and name != "dense":
        kw["impl"] = "torch"
    batches = [
        synthetic_batch([args.hits], num_features=3, seed=1000 * rank + i)
        for i in range(args.events)
    ]
    torch.manual_seed(0)
    encoder = Encoder(
        3,
        d_model=args.d_model,
        n_heads=8,
        n_layers=args.layers,
        attention=build_attention(name, **kw),
    )
    model = TrackFormer(encoder, ContrastiveHead(args.d_model, embed_dim=32))
    loss = CombinedLoss({"contrastive": SupConLoss(0.1, negatives=args.negatives)})
    module = TrackFormerModule(
        model,
        loss,
        scheduler={"warmup_steps": 2, "total_steps": 1000},
        validation={"enabled": False},
        compile_encoder=args.compile,
    )
    meter = ThroughputLog(skip_steps=args.warmup)
    gpu = torch.cuda.is_available()
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=args.devices,
        strategy=args.strategy,
        precision="bf16-mixed" if gpu else "32-true",
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[meter],
        use_distributed_sampler=False,
    )
    trainer.fit(module, train_dataloaders=Batches(batches))
    return {"backend": name, **meter.result, "hits_per_event": args.hits}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="dense,windowed,flex,fused")
    p.add_argument("--hits", type=int, default=60000)
    p.add_argument("--events", type=int, default=4, help="distinct events cycled per rank")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--negatives", default="event", choices=["event", "window"])
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for name in args.backends.split(","):
        try:
            rows.append(run_backend(name, args))
        except Exception as err:  # report and go on with the next backend
            traceback.print_exc()
            rows.append({"backend": name, "error": f"{type(err).__name__}: {err}"[:300]})
        print("RESULT", json.dumps(rows[-1]), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if args.json and int(os.environ.get("LOCAL_RANK", 0)) == 0:  # partial results survive
            _write(args, rows)
    if int(os.environ.get("LOCAL_RANK", 0)) != 0:
        return rows
    print(f"device {device_name()} x{args.devices} torch {torch.__version__}")
    print("| backend | GPUs | events/s | hits/s | s/step | peak GiB (rank 0) |")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {args.devices} | failed: {r['error']} |")
        elif r.get("steps"):
            s_step = r["seconds"] / r["steps"]
            print(
                f"| {r['backend']} | {r['world_size']} | {r['events_per_s']:.2f} | "
                f"{r['hits_per_s']:.0f} | {s_step:.3f} | {r['peak_gib_rank0']:.2f} |"
            )
    return rows


def _write(args, rows) -> None:
    with open(args.json, "w") as f:
        json.dump(
            {"device": device_name(), "torch": torch.__version__, "args": vars(args), "rows": rows},
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
